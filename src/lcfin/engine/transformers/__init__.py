"""The Transformers backend: model thread, continuous-batching scheduler, KV cache, sampling.

Imported only lazily, by `engine.backend.load_backend`: these modules import torch at top level.
"""
