"""``embtune plugins``: every registered implementation, its family and its distribution."""

from __future__ import annotations

import json

from embtune_core.plugins import FAMILIES, get_registry

NAME = "plugins"
HELP = "list every registered plugin implementation"
DESCRIPTION = """List every implementation registered through the `embtune` plugin hooks (built-in and
third-party, from the `embtune` entry-point group), grouped by family, with the distribution that
provided it. Two distributions registering the same name in one family is reported as an error."""


def add_arguments(parser) -> None:
    parser.add_argument("--family", choices=sorted(FAMILIES), help="show only this family")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args) -> int:
    registry = get_registry()
    rows = [
        {"family": i.family, "name": i.name, "distribution": i.distribution, "plugin": i.plugin,
         "description": i.description}
        for i in registry.all() if args.family in (None, i.family)
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for family in FAMILIES:
        family_rows = [r for r in rows if r["family"] == family]
        if not family_rows:
            continue
        print(f"{family}:")
        width = max(len(r["name"]) for r in family_rows)
        for r in sorted(family_rows, key=lambda r: r["name"]):
            print(f"  {r['name']:<{width}}  [{r['distribution']}]  {r['description']}")
    return 0
