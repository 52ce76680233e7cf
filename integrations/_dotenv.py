"""One value of a dotenv file (``.env``), read without importing anything heavy.

Used at interpreter start by :mod:`embtune_integrations._startup` and by
:mod:`embtune_integrations.docsgpt`; kept apart from both so neither imports the other to read it.
"""

from __future__ import annotations

import os


def dotenv_value(path: str, key: str) -> str | None:
    """``key``'s value in a dotenv file (``KEY=VALUE``, ``export KEY=VALUE``, quotes, ``#`` comments),
    or None when the file or the key is absent. python-dotenv's reader when it is installed (DocsGPT
    has it), else this small one."""
    if not os.path.isfile(path):
        return None
    try:
        from dotenv import dotenv_values
    except ImportError:
        dotenv_values = None
    if dotenv_values is not None:
        value = dotenv_values(path).get(key)
        return value if value is None else str(value)
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    found = None
    for line in lines:
        line = line.strip()
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, value = line.partition("=")
        if not sep or name.strip() != key:
            continue
        value = value.strip()
        if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) > 1:
            value = value[1:-1]
        else:
            value = value.split(" #", 1)[0].strip()
        found = value  # the last assignment wins, as in python-dotenv
    return found
