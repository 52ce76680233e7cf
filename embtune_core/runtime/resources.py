"""Resource failures -- a full disk, exhausted memory -- as one line with the promised exit code and advice.

A full disk shows itself in many dialects: ``OSError`` with ``ENOSPC`` from Python, ``RuntimeError:
[enforce fail at inline_container.cc:...] . unexpected pos ...`` from torch's zip writer (a checkpoint),
``OSError: 16 requested and 7 written`` from numpy (no errno), ``No space left on device (os error 28)``
from safetensors. Out of memory as ``MemoryError``, ``torch.OutOfMemoryError`` or ``RuntimeError:
[enforce fail at alloc_cpu.cpp:...] DefaultCPUAllocator: can't allocate memory``. :func:`problem_of`
recognises each (through the exception's causes, and, for a write that failed without saying why,
by a filesystem left with no free space); :func:`guard` turns one raised inside its block into a
:class:`ResourceError` naming what was being written (or done) and what to change, exit 3 as the
README promises (``embtune_core.errors``).

Example::

    with guard(writing=checkpoint_dir, what="a training checkpoint", doing="training",
               memory_advice="lower --batch-size"):
        trainer.train()
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

from embtune_core.errors import EXIT_BAD_INPUT, EmbtuneError

DISK_FULL = "no space left on device"
OUT_OF_MEMORY = "out of memory"
_DISK_ERRNOS = {errno.ENOSPC: DISK_FULL, errno.EDQUOT: "disk quota exceeded"}
_DISK_TEXT = re.compile(r"No space left on device|os error 28|inline_container\.cc|PytorchStreamWriter failed|"
                        r"\d+ requested and \d+ written|file write failed|Disk quota exceeded", re.IGNORECASE)
_MEMORY_TEXT = re.compile(r"can't allocate memory|not enough memory|out of memory|alloc_cpu\.cpp|"
                          r"Cannot allocate memory|std::bad_alloc", re.IGNORECASE)
LOW_SPACE_BYTES = 1 << 20  # a filesystem with less than this free after a failed write is full


class ResourceError(EmbtuneError):
    """The disk or the memory ran out: fixable by freeing space, choosing another folder or lighter settings."""

    exit_code = EXIT_BAD_INPUT


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def free_bytes(path: str | Path) -> int | None:
    """Bytes free to an unprivileged writer on the filesystem holding ``path`` (its nearest existing folder)."""
    path = Path(path).absolute()
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is None:
        return None
    try:
        stats = os.statvfs(existing)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def problem_of(exc: BaseException, writing: str | Path | None = None) -> str | None:
    """:data:`DISK_FULL` (or quota), :data:`OUT_OF_MEMORY`, or None for any other failure."""
    for link in _chain(exc):
        if isinstance(link, OSError) and link.errno in _DISK_ERRNOS:
            return _DISK_ERRNOS[link.errno]
        if isinstance(link, MemoryError) or type(link).__name__ == "OutOfMemoryError":
            return OUT_OF_MEMORY
        text = str(link)
        if _DISK_TEXT.search(text):
            return DISK_FULL
        if isinstance(link, RuntimeError) and _MEMORY_TEXT.search(text):
            return OUT_OF_MEMORY
    if writing is not None and (isinstance(exc, (OSError, RuntimeError)) or type(exc).__name__ == "SafetensorError"):
        free = free_bytes(writing)
        if free is not None and free < LOW_SPACE_BYTES:
            return DISK_FULL  # a write failed without saying why, on a filesystem with no room left
    return None


def disk_advice(path: str | Path) -> str:
    free = free_bytes(path)
    left = f" ({free // 1024} KiB left)" if free is not None else ""
    return f"free space on that disk{left} or write to another folder; finished work is kept"


@contextlib.contextmanager
def guard(*, writing: str | Path | None = None, what: str = "the output", doing: str = "working",
          memory_advice: str | None = None) -> Iterator[None]:
    """Turn a full disk or exhausted memory raised in the block into one :class:`ResourceError` line:
    ``PATH: cannot write WHAT: no space left on device (advice)`` or ``out of memory while DOING:
    memory_advice``. Other failures pass unchanged."""
    try:
        yield
    except EmbtuneError:
        raise
    except Exception as exc:  # safetensors raises its own SafetensorError; the others are re-raised
        problem = problem_of(exc, writing)
        if problem == OUT_OF_MEMORY:
            raise ResourceError(f"out of memory while {doing}: "
                                f"{memory_advice or 'use smaller batches (--batch-size) or a machine with more memory'}",
                                path=writing) from None
        if problem is not None:
            raise ResourceError(f"cannot write {what}: {problem} ({disk_advice(writing or '.')})",
                                path=writing) from None
        raise
