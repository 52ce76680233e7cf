"""What the ``embtune_docsgpt.pth`` line runs at interpreter start: decide, cheaply, whether to hook DocsGPT.

Kept apart from :mod:`embtune_integrations.docsgpt` so that a process without the setting imports
only this small module and :mod:`embtune_integrations._dotenv` (no json, no threads, no torch). ``EMBTUNE_DOCSGPT`` is read from the
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

from embtune_integrations._dotenv import dotenv_value

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
