"""CLI subcommands, one module each, listed once here in the order ``embtune --help`` shows them.

Each module defines ``NAME``, ``HELP`` (one line), ``DESCRIPTION`` (the ``--help`` text),
``add_arguments(parser)`` and ``run(args) -> int``.
"""

COMMAND_MODULES = (
    "embtune_core.commands.quickstart",
    "embtune_core.commands.run",
    "embtune_core.commands.plugins",
    "embtune_core.commands.models",
    "embtune_core.commands.validate",
    "embtune_core.commands.build_dataset",
    "embtune_core.commands.mine",
    "embtune_core.commands.evaluate",
    "embtune_core.commands.train",
    "embtune_core.commands.train_adapter",
    "embtune_core.commands.export",
)
