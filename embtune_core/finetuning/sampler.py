"""A batch sampler for in-batch-negative losses that uses every training row once per epoch.

Losses such as MNRL treat the other rows of a batch as negatives, so a batch must never hold one
text twice (it would be its own negative). sentence-transformers' ``NoDuplicatesBatchSampler``
fills batches greedily and advertises ``ceil(rows / batch_size)`` batches; when few distinct texts
exist (20 questions over 2 chunks) its batches come out small and the trainer, which stops after
the advertised number, silently trains on a fraction of the rows (sentence-transformers #3348).

:func:`every_row_batch_sampler` plans each epoch so that

* every row is in exactly one batch, and no batch holds one text twice where that can be avoided;
* the number of batches is the same every epoch and known in advance:
  ``max(ceil(rows / batch_size), m)``, where ``m`` is the largest number of rows sharing one text
  (each of those must go to a different batch). :func:`batch_plan` reports it, so the caller can
  say how many distinct texts limit the batch.

Rows are placed hardest first (rows whose texts repeat most), each into the least-filled batch
that holds none of its texts; order is shuffled per epoch from ``seed + epoch``, so runs are
reproducible. A row that fits no batch without a repeat (possible only with overlapping negatives)
goes to the least-filled batch with room, and the sampler's ``repeats`` counts it.

Example::

    args = SentenceTransformerTrainingArguments(..., batch_sampler=every_row_batch_sampler)
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

EXCLUDED_COLUMNS = ("label", "score", "dataset_name")


@dataclass(frozen=True)
class BatchPlan:
    """How a set of rows splits into batches (see the module docstring)."""

    rows: int
    batch_size: int  # asked for
    batches: int  # per epoch
    max_rows_per_text: int  # rows sharing the most common text

    @property
    def mean_batch(self) -> float:
        return self.rows / self.batches if self.batches else 0.0

    @property
    def limited_by_texts(self) -> bool:
        return self.batches > math.ceil(self.rows / self.batch_size)


def row_texts(dataset: Any, groups: dict[str, str] | None = None) -> list[tuple[str, ...]]:
    """The texts of each row of a ``datasets.Dataset`` (label and score columns left out); a text in
    ``groups`` stands for its group (the windows of one chunk count as one text: never two in a batch)."""
    columns = [c for c in dataset.column_names if c not in EXCLUDED_COLUMNS]
    values = [dataset[c] for c in columns]
    groups = groups or {}
    return [tuple(groups.get(str(v[i]), str(v[i])) for v in values) for i in range(len(dataset))]


def batch_plan(texts: Sequence[tuple[str, ...]], batch_size: int) -> BatchPlan:
    counts = Counter(t for row in texts for t in set(row))
    most = max(counts.values(), default=0)
    batches = max(math.ceil(len(texts) / batch_size), most) if texts else 0
    return BatchPlan(len(texts), batch_size, batches, most)


def plan_epoch(texts: Sequence[tuple[str, ...]], batch_size: int, seed: int) -> tuple[list[list[int]], int]:
    """One epoch's batches (row indices) and how many rows had to share a text with their batch."""
    plan = batch_plan(texts, batch_size)
    rng = np.random.default_rng(seed)
    counts = Counter(t for row in texts for t in set(row))
    order = rng.permutation(len(texts))
    # Hardest first (most repeated text); the shuffle breaks ties, differently each epoch.
    order = sorted(order.tolist(), key=lambda i: -max((counts[t] for t in texts[i]), default=0))
    batches: list[list[int]] = [[] for _ in range(plan.batches)]
    holds: list[set[str]] = [set() for _ in range(plan.batches)]
    tiebreak = rng.permutation(plan.batches).tolist()
    heap = [(0, tiebreak[b], b) for b in range(plan.batches)]
    heapq.heapify(heap)
    repeats = 0
    for row in order:
        row_set = set(texts[row])
        skipped, chosen = [], None
        while heap:
            entry = heapq.heappop(heap)
            if entry[0] < batch_size and not (row_set & holds[entry[2]]):
                chosen = entry
                break
            skipped.append(entry)
        if chosen is None:  # no batch without a repeat: the least-filled one with room
            repeats += 1
            skipped.sort()
            chosen = next(e for e in skipped if e[0] < batch_size)
            skipped.remove(chosen)
        b = chosen[2]
        batches[b].append(row)
        holds[b] |= row_set
        heapq.heappush(heap, (chosen[0] + 1, chosen[1], b))
        for entry in skipped:
            heapq.heappush(heap, entry)
    rng.shuffle(batches)
    return batches, repeats


_sampler_class = None


def every_row_batch_sampler(dataset, batch_size: int, drop_last: bool = False, valid_label_columns=None,
                            generator=None, seed: int = 0, groups: dict[str, str] | None = None):
    """The sampler for ``dataset``, a sentence-transformers ``DefaultBatchSampler`` (pass this function
    as ``batch_sampler``, or a ``functools.partial`` of it with ``groups``, see :func:`row_texts`;
    ``drop_last`` is ignored: every row is used)."""
    global _sampler_class
    if _sampler_class is None:
        from sentence_transformers.base.sampler import DefaultBatchSampler

        class EveryRowBatchSampler(DefaultBatchSampler):
            def __init__(self, dataset, batch_size, valid_label_columns, generator, seed, groups):
                super().__init__(dataset, batch_size=batch_size, drop_last=False,
                                 valid_label_columns=valid_label_columns, generator=generator, seed=seed)
                self.texts = row_texts(dataset, groups)
                self.plan = batch_plan(self.texts, batch_size)
                self.repeats = 0

            def __iter__(self) -> Iterator[list[int]]:
                batches, self.repeats = plan_epoch(self.texts, self.batch_size, int(self.seed or 0) + self.epoch)
                yield from batches

            def __len__(self) -> int:
                return self.plan.batches

        _sampler_class = EveryRowBatchSampler
    return _sampler_class(dataset, batch_size, valid_label_columns, generator, seed, groups)
