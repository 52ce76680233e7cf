"""Encoders: the embedding backends and their spec syntax, typed encoder identity and options, model loading
and name resolution, LoRA weights inside a model, content fingerprints, the embedding cache, ONNX export
and the choice of ONNX file (mixed int8 included), token limits, counting from a prefix and long
documents, prompts, API limits.
"""
