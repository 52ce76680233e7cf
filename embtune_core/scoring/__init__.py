"""Scoring retrieval: IR metrics per query, bootstrap confidence intervals and significance, the evaluation
of systems on a QA dataset.
"""
