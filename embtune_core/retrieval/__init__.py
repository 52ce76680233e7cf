"""Retrieval: exact search, BM25 and fusion, the sparse-dense hybrid, retrieval systems named by specs,
document-side index tuning.
"""
