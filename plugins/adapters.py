"""Registers the built-in query adapters (``linear``, ``two-layer``; see :mod:`embtune_plugins.adapter_modules`),
each with the options it takes declared as a dataclass (:mod:`embtune_core.plugin_options`).

The modules are imported only when an adapter is built, so listing plugins or running commands
that never touch adapters does not pay for importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from embtune_core import hookimpl
from embtune_core.cli_fields import positive_int, setting
from embtune_core.errors import ConfigError

#: the activations of the two-layer adapter (embtune_plugins.adapter_modules.ACTIVATIONS holds the functions)
ACTIVATION_NAMES = ("relu", "gelu", "silu", "tanh", "sigmoid", "leaky_relu")


@dataclass
class LinearOptions:
    """``linear``: ``W q + b``."""

    bias: bool = setting(True, "learn the bias b (default: true)", cli=False)


@dataclass
class TwoLayerOptions:
    """``two-layer``: ``q + W2 act(W1 q + b1) + b2``; ``hidden`` and ``activation`` are also
    ``embtune train-adapter``'s ``--hidden`` / ``--activation``."""

    hidden: int | None = setting(None, "two-layer: hidden size (default: the embedding dimension)",
                                 parse=positive_int)
    activation: str = setting("relu", "two-layer: relu, gelu, silu, tanh, sigmoid, leaky_relu")
    dropout: float = setting(0.0, cli=False)
    residual: bool = setting(True, cli=False)  # False only for an imported LlamaIndex TwoLayerNN

    def validate(self) -> None:
        if self.activation not in ACTIVATION_NAMES:
            raise ConfigError(f"two-layer adapter: unknown activation '{self.activation}'; "
                              f"choose one of {', '.join(ACTIVATION_NAMES)}", field="activation")
        if self.hidden is not None and self.hidden < 1:
            raise ConfigError("must be a positive integer", field="hidden")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("must be a number in [0, 1)", field="dropout")


def linear(dim: int, **options):
    from embtune_plugins.adapter_modules import LinearAdapter

    return LinearAdapter(dim, **options)


def two_layer(dim: int, **options):
    from embtune_plugins.adapter_modules import TwoLayerAdapter

    return TwoLayerAdapter(dim, **options)


@hookimpl
def register_adapters(register):
    register("linear", linear, options=LinearOptions, description="W q + b, identity at init")
    register("two-layer", two_layer, options=TwoLayerOptions,
             description="residual MLP q + W2 act(W1 q), residual branch zero at init")
