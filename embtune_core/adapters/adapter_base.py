"""The base class for query adapters, built-in or from a plugin.

A query adapter is a small ``torch.nn.Module`` mapping query embeddings ``(n, dim)`` to
``(n, dim)``. It is applied to queries only, so documents and any existing vector index stay
untouched. The contract, checked by :func:`check_identity_at_init` before every training run:

* ``factory(dim, **options)`` builds it; ``options`` are JSON values (they are saved in the
  adapter's config and passed back to the factory on load);
* at initialisation it is exactly the identity map, so training starts at the base model and
  early stopping can always fall back to it.

Subclass :class:`QueryAdapter` and register the class in a plugin::

    import torch
    from embtune_core import hookimpl
    from embtune_core.adapters.adapter_base import QueryAdapter

    class DiagonalAdapter(QueryAdapter):
        adapter_type = "diagonal"

        def __init__(self, dim: int):
            super().__init__(dim)
            self.scale = torch.nn.Parameter(torch.ones(dim))

        def forward(self, x):
            return x * self.scale

    @hookimpl
    def register_adapters(register):
        register("diagonal", DiagonalAdapter, description="per-dimension scaling")

Then ``embtune train-adapter --adapter diagonal ...`` trains it, and saving/loading works as for
the built-in ``linear`` and ``two-layer`` adapters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from embtune_core.errors import PluginError


class QueryAdapter(nn.Module):
    """Base class: keeps ``dim`` and the factory ``options`` so the adapter can be saved and rebuilt.

    ``identity_penalty(x)`` is the regulariser toward the identity map used in training: by
    default the mean squared distance between ``self(x)`` and ``x``, which suits any adapter;
    subclasses may override it with a cheaper or parameter-space penalty.
    """

    adapter_type: str = "custom"

    def __init__(self, dim: int, **options: Any):
        super().__init__()
        if int(dim) <= 0:
            raise PluginError(f"adapter dimension must be positive, got {dim}")
        self.dim = int(dim)
        self.options = dict(options)

    def config(self) -> dict[str, Any]:
        """The factory options that rebuild this adapter (JSON values)."""
        return dict(self.options)

    def identity_penalty(self, x: torch.Tensor) -> torch.Tensor:
        return (self(x) - x).pow(2).sum(dim=-1).mean()


def identity_penalty(adapter: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The adapter's own penalty when it defines one, else the mean squared distance to ``x``."""
    own = getattr(adapter, "identity_penalty", None)
    if callable(own):
        return own(x)
    return (adapter(x) - x).pow(2).sum(dim=-1).mean()


@torch.no_grad()
def check_identity_at_init(adapter: nn.Module, dim: int, *, name: str = "adapter", atol: float = 1e-6) -> None:
    """Raise :class:`PluginError` unless ``adapter`` maps random inputs to themselves with shape kept."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, dim, generator=generator)
    x = x / x.norm(dim=1, keepdim=True)
    was_training = adapter.training
    adapter.eval()
    try:
        y = adapter(x)
    finally:
        adapter.train(was_training)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != (8, dim):
        shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise PluginError(f"{name}: must map (n, {dim}) to (n, {dim}), got {shape}")
    error = float((y - x).abs().max())
    if error > atol:
        raise PluginError(f"{name}: must be the identity map at initialisation (max deviation {error:.3g})")
