"""Partial fine-tuning: freeze a model's embeddings and first transformer layers (pooling and dense
heads stay trainable)."""

from __future__ import annotations

import re

from embtune_core.errors import ConfigError


def transformer_layers(model):
    """The list of transformer blocks of ``model``'s first module (``encoder.layer`` for BERT)."""
    import torch

    first = model[0]
    best = None
    for name, module in first.named_modules():
        is_block_list = isinstance(module, torch.nn.ModuleList) and re.search(
            r"(^|\.)(layer|layers|h|block)$", name
        )
        if is_block_list and (best is None or len(module) > len(best)):
            best = module
    return best


def freeze_all_but_last(model, n: int | None, *, frozen: int | None = None) -> dict[str, int]:
    """Freeze the first module except its last ``n`` transformer blocks (or all but the first ``frozen``);
    later modules (pooling, dense heads) stay trainable. Returns trainable and total parameter counts."""
    layers = transformer_layers(model)
    if layers is None:
        raise ConfigError(
            "cannot find the transformer layers of this model for partial fine-tuning",
            field="train.train_last_layers",
        )
    if frozen is not None:
        if frozen > len(layers):
            raise ConfigError(f"model has only {len(layers)} transformer layers", field="train.freeze_layers")
        n = len(layers) - frozen
    if n > len(layers):
        raise ConfigError(f"model has only {len(layers)} transformer layers", field="train.train_last_layers")
    for parameter in model[0].parameters():
        parameter.requires_grad_(False)
    for layer in list(layers)[len(layers) - n :] if n else []:
        for parameter in layer.parameters():
            parameter.requires_grad_(True)
    for module in list(model)[1:]:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "trainable_parameters": trainable,
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "transformer_layers": len(layers),
        "trained_layers": n,
    }

