"""The vLLM backend: engine args, the engine itself, and the mapping of its outputs and errors.

Imported only lazily, by `engine.backend.load_backend` (and the planner for engine args).
"""
