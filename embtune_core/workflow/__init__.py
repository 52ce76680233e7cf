"""Whole workflows: ``embtune run`` (the pipeline), the offline quickstart, the recommendation of which
retriever to deploy.
"""
