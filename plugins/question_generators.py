"""Built-in question_generators (placeholder: filled in by its issue)."""

from embtune_core import hookimpl


@hookimpl
def register_question_generators(register):
    pass
