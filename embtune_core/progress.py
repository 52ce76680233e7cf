"""Progress bars for long work (tqdm on stderr); ``EMBTUNE_NO_PROGRESS=1`` turns them off."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def enabled() -> bool:
    return os.environ.get("EMBTUNE_NO_PROGRESS", "") in ("", "0")


def progress(iterable: Iterable[T] | None = None, *, desc: str = "", total: int | None = None,
             unit: str = "it") -> tqdm:
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not enabled(), dynamic_ncols=True)
