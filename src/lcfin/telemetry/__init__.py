"""Telemetry: request records, costs, the usage ledger, Prometheus metrics and analytics.

Light to import (no database or Prometheus code): the ledger, metrics, analytics and plot live
in their own modules (`lcfin.telemetry.ledger`, `.metrics`, `.analytics`, `.plot`). lcfin never
sends telemetry anywhere; see docs/analytics.md.
"""

from lcfin.telemetry.costs import Prices
from lcfin.telemetry.records import RequestRecord, StatsCollector, attribute_to

__all__ = ["Prices", "RequestRecord", "StatsCollector", "attribute_to"]
