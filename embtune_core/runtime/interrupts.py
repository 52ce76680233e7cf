"""Ctrl-C and SIGTERM: stop at the next safe point, whatever was running when the signal came.

Python runs a signal handler between two bytecodes of the main thread, wherever that is; an exception
raised there while the interpreter is inside ``__del__`` or a weakref callback is printed as
"Exception ignored" and lost, and the run would go on as if never interrupted. So :func:`install`'s
handlers *record* the request before raising, and long loops call :func:`check` at safe points (each
trainer step, each item of a progress bar), which raises again until the run has stopped.

:class:`Terminated` (SIGTERM, what ``docker stop`` and Kubernetes send) is a ``KeyboardInterrupt``,
so every ``except KeyboardInterrupt`` treats both alike; the CLI exits 143 for it and 130 for Ctrl-C.
"""

from __future__ import annotations

import contextlib
import signal
import sys

_requested: str | None = None


class Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def requested() -> str | None:
    """``"SIGINT"`` or ``"SIGTERM"`` once a stop was asked for, else None."""
    return _requested


def check() -> None:
    """Raise the pending interruption, if any (call at safe points in long loops)."""
    if _requested == "SIGTERM":
        raise Terminated()
    if _requested == "SIGINT":
        raise KeyboardInterrupt()


def _handler(signum, frame) -> None:
    global _requested
    _requested = "SIGTERM" if signum == signal.SIGTERM else "SIGINT"
    check()


def ignore_further() -> None:
    """Ignore Ctrl-C and SIGTERM from now on (the run is already stopping; exit codes stay ours)."""
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _unraisable(info) -> None:
    # A stop raised inside a __del__ is lost there but raised again at the next check(): no traceback.
    if isinstance(info.exc_value, KeyboardInterrupt) and _requested:
        return
    _default_unraisable(info)


_default_unraisable = sys.unraisablehook


def install() -> None:
    """Handle SIGTERM, and SIGINT unless it is ignored (a background job's), in the main thread."""
    sys.unraisablehook = _unraisable
    with contextlib.suppress(ValueError):  # only the main thread may set handlers
        signal.signal(signal.SIGTERM, _handler)
        if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
            signal.signal(signal.SIGINT, _handler)
