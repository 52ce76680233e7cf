"""Built-in encoders (placeholder: filled in by its issue)."""

from embtune_core import hookimpl


@hookimpl
def register_encoders(register):
    pass
