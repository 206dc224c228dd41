"""The OpenAI-compatible Starlette server over FinancialLLM."""

from lcfin.server.app import create_app

__all__ = ["create_app"]
