"""Progress bars for long work (tqdm on stderr); ``EMBTUNE_NO_PROGRESS=1`` turns them off."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("EMBTUNE_NO_PROGRESS", "") in ("", "0")


@contextlib.contextmanager
def library_bars_silenced():
    """With ``EMBTUNE_NO_PROGRESS`` set, also turn off the bars libraries draw with their own tqdm
    (transformers' "Loading weights", sentence-transformers' "Computing widget examples", hub
    downloads) for the duration of the block. tqdm and huggingface_hub read ``TQDM_DISABLE`` and
    ``HF_HUB_DISABLE_PROGRESS_BARS`` when first imported, so the CLI enters this before anything
    imports them; the variables are restored afterwards, so a caller's environment (and the child
    processes it starts later) is left as it was. Python API users set those variables themselves."""
    added = []
    if not enabled():
        for name in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS"):
            if name not in os.environ:
                os.environ[name] = "1"
                added.append(name)
    try:
        yield
    finally:
        for name in added:
            os.environ.pop(name, None)


@functools.cache
def _bar_class() -> type:
    """tqdm, imported on first use (inside :func:`library_bars_silenced` when the CLI runs), that at each item raises a
    pending Ctrl-C/SIGTERM (see :mod:`embtune_core.runtime.interrupts`)."""
    from tqdm.auto import tqdm

    from embtune_core.runtime.interrupts import check

    class _Bar(tqdm):
        def __iter__(self):
            for item in super().__iter__():
                check()
                yield item

        def update(self, n=1):
            check()
            return super().update(n)

    return _Bar


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it") -> tqdm:
    return _bar_class()(iterable, desc=desc, total=total, unit=unit, disable=not enabled(), dynamic_ncols=True)
