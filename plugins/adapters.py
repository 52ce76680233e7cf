"""Registers the built-in query adapters (``linear``, ``two-layer``; see :mod:`embtune_plugins.adapter_modules`).

The modules are imported only when an adapter is built, so listing plugins or running commands
that never touch adapters does not pay for importing torch.
"""

from embtune_core import hookimpl


def linear(dim: int, **options):
    from embtune_plugins.adapter_modules import LinearAdapter

    return LinearAdapter(dim, **options)


def two_layer(dim: int, **options):
    from embtune_plugins.adapter_modules import TwoLayerAdapter

    return TwoLayerAdapter(dim, **options)


@hookimpl
def register_adapters(register):
    register("linear", linear, description="W q + b, identity at init")
    register("two-layer", two_layer, description="residual MLP q + W2 act(W1 q), residual branch zero at init")
