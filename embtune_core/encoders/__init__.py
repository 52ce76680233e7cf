"""Encoders: the embedding backends and their spec syntax, typed encoder identity and options, model loading
and name resolution, LoRA weights inside a model, content fingerprints, the embedding cache, ONNX export,
token limits and long documents, prompts, API limits.
"""
