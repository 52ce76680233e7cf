"""Built-in loaders (placeholder: filled in by its issue)."""

from embtune_core import hookimpl


@hookimpl
def register_loaders(register):
    pass
