"""Data: documents and chunks, loading files, QA datasets (LlamaIndex format), train/validation splits,
question generation and filtering, dataset building and mining.
"""
