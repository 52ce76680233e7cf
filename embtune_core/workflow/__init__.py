"""Whole workflows: ``embtune run`` (the pipeline) and the words its report says about the run, the offline
quickstart, the probe (will tuning help?), the recommendation of which retriever to deploy.
"""
