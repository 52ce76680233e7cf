"""Built-in negative_miners (placeholder: filled in by its issue)."""

from embtune_core import hookimpl


@hookimpl
def register_negative_miners(register):
    pass
