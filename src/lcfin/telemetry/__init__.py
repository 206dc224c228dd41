"""Telemetry: one record per generation, aggregated into stats (metrics and ledger build on it)."""

from lcfin.telemetry.records import RequestRecord, StatsCollector

__all__ = ["RequestRecord", "StatsCollector"]
