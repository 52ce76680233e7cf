"""Progress bars for long work (tqdm on stderr); ``EMBTUNE_NO_PROGRESS=1`` turns them off."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("EMBTUNE_NO_PROGRESS", "") in ("", "0")


class _Bar(tqdm):
    """tqdm that, at each item, raises a pending Ctrl-C/SIGTERM (see :mod:`embtune_core.interrupts`)."""

    def __iter__(self):
        from embtune_core.interrupts import check

        for item in super().__iter__():
            check()
            yield item

    def update(self, n=1):
        from embtune_core.interrupts import check

        check()
        return super().update(n)


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it") -> tqdm:
    return _Bar(iterable, desc=desc, total=total, unit=unit, disable=not enabled(), dynamic_ncols=True)
