"""What the ``embtune_docsgpt.pth`` line runs at interpreter start: decide, cheaply, whether to hook DocsGPT.

Kept apart from :mod:`embtune_integrations.docsgpt` so that a process without the setting imports
only this small module (no json, no threads, no torch). ``EMBTUNE_DOCSGPT`` is read from the
environment, else from ``.env`` in the folder the process starts in (DocsGPT's documented
non-Docker commands start in the project root, where its ``.env`` lives; DocsGPT reads that file
with pydantic-settings, which never copies it into the environment). Values follow pydantic's
booleans, as DocsGPT's own settings do: ``1/true/t/yes/y/on`` enable, ``0/false/f/no/n/off`` or
nothing disable (any case); anything else prints one line on stderr and leaves the hook off.
Nothing here may stop an interpreter from starting: any failure is one line on stderr.
"""

from __future__ import annotations

import os
import sys

ENABLE_ENV = "EMBTUNE_DOCSGPT"
TRUE = ("1", "true", "t", "yes", "y", "on")
FALSE = ("", "0", "false", "f", "no", "n", "off")


def parse_flag(value: str | None) -> bool | None:
    """True, False, or None for a value that is neither (``None`` and "" are False)."""
    text = (value or "").strip().strip("'\"").strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    return None


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


def run() -> None:
    try:
        value, source = os.environ.get(ENABLE_ENV), "environment"
        if value is None:
            value, source = dotenv_value(os.path.join(os.getcwd(), ".env"), ENABLE_ENV), ".env"
            if value is None:
                return
        state = parse_flag(value)
        if state is None:
            print(f"embtune: {ENABLE_ENV}={value!r} (from the {source}) is neither true (1, true, yes, on) nor false "
                  "(0, false, no, off); the DocsGPT hook stays off", file=sys.stderr)
            return
        if state:
            from embtune_integrations import docsgpt

            docsgpt.register()
    except Exception as exc:  # noqa: BLE001 - never break interpreter start-up; say why in one line
        print(f"embtune: DocsGPT start-up hook failed: {type(exc).__name__}: {' '.join(str(exc).split())}",
              file=sys.stderr)
