"""Query adapters: the base class, saving and loading (safetensors + JSON), their settings, training on
cached embeddings, pseudo-queries for transductive training.
"""
