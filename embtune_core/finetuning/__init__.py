"""Fine-tuning a sentence-transformers model: the training run, its settings and arguments, the memory plan,
loss strategies, the in-training evaluator, checkpoints, layer freezing, the batch sampler, index-aware
training, experiment tracking, the saved model and its card.
"""
