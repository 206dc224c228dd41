"""The engine: model specs, hardware profiles, the memory planner, backends and FinancialLLM."""
