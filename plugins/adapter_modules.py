"""Built-in query adapters: ``linear`` and ``two-layer`` (residual MLP), both the identity at init.

* ``linear``: ``factory(dim, bias=True)`` -> ``q' = W q + b`` with ``W = I`` and ``b = 0`` at init.
  ``dim * dim (+ dim)`` parameters; the classic query adapter (LlamaIndex's ``LinearLayer``).
* ``two-layer``: ``factory(dim, hidden=None, activation="relu", dropout=0.0)`` ->
  ``q' = q + W2 act(W1 q + b1) + b2``. ``hidden`` defaults to ``dim``; ``activation`` is one of
  relu, gelu, silu, tanh, sigmoid, leaky_relu. ``W2`` and ``b2`` start at zero, so the residual
  branch contributes nothing and training starts exactly at the base model. (LlamaIndex's
  ``TwoLayerNN`` without ``add_residual`` is not residual; it is imported with ``residual=False``,
  the one configuration that is not the identity at init and that training refuses.)

Trained with :mod:`embtune_core.adapters.adapter_training`, saved with :mod:`embtune_core.adapters.adapter_io`.

Example::

    from embtune_core.plugins import get_registry
    adapter = get_registry().create("adapters", "two-layer", dim=384, hidden=512, activation="gelu")
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from embtune_core.adapters.adapter_base import QueryAdapter
from embtune_core.errors import ConfigError

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "silu": F.silu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": F.leaky_relu,
}


class LinearAdapter(QueryAdapter):
    """``W q + b``, initialised to the identity (``W = I``, ``b = 0``)."""

    adapter_type = "linear"

    def __init__(self, dim: int, bias: bool = True):
        super().__init__(dim, bias=bool(bias))
        self.linear = nn.Linear(self.dim, self.dim, bias=bool(bias))
        self._eye: torch.Tensor | None = None
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(self.dim))
            if self.linear.bias is not None:
                self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def identity_penalty(self, x: torch.Tensor) -> torch.Tensor:
        # Parameter space: ||W - I||_F^2 + ||b||^2, independent of the batch.
        weight = self.linear.weight
        eye = self._eye
        if eye is None or eye.device != weight.device or eye.dtype != weight.dtype:
            # Kept between steps (a plain attribute, not in the state dict): one identity per run.
            eye = self._eye = torch.eye(self.dim, device=weight.device, dtype=weight.dtype)
        penalty = (weight - eye).pow(2).sum()
        if self.linear.bias is not None:
            penalty = penalty + self.linear.bias.pow(2).sum()
        return penalty


class TwoLayerAdapter(QueryAdapter):
    """``q + W2 act(W1 q + b1) + b2`` with ``W2 = 0``, ``b2 = 0`` at init (the identity)."""

    adapter_type = "two-layer"

    def __init__(self, dim: int, hidden: int | None = None, activation: str = "relu", dropout: float = 0.0,
                 residual: bool = True):
        hidden = int(hidden) if hidden else int(dim)
        if activation not in ACTIVATIONS:
            raise ConfigError(f"two-layer adapter: unknown activation '{activation}'; "
                              f"choose one of {', '.join(ACTIVATIONS)}", field="activation")
        super().__init__(dim, hidden=hidden, activation=activation, dropout=float(dropout), residual=bool(residual))
        self.down = nn.Linear(self.dim, hidden)
        self.up = nn.Linear(hidden, self.dim)
        self.dropout = nn.Dropout(float(dropout))
        self.activation = ACTIVATIONS[activation]
        self.residual = bool(residual)
        if self.residual:
            with torch.no_grad():
                self.up.weight.zero_()
                self.up.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch = self.up(self.dropout(self.activation(self.down(x))))
        return x + branch if self.residual else branch
