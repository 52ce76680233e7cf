"""Built-in evaluators (placeholder: filled in by its issue)."""

from embtune_core import hookimpl


@hookimpl
def register_evaluators(register):
    pass
