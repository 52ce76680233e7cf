"""Built-in adapters (placeholder: filled in by its issue)."""

from embtune_core import hookimpl


@hookimpl
def register_adapters(register):
    pass
