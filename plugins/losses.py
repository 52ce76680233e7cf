"""Built-in losses (placeholder: filled in by its issue)."""

from embtune_core import hookimpl


@hookimpl
def register_loss_strategies(register):
    pass
