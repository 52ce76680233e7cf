"""Built-in chunkers (placeholder: filled in by its issue)."""

from embtune_core import hookimpl


@hookimpl
def register_chunkers(register):
    pass
