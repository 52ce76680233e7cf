"""Split a QA dataset into training and validation by source document, and refuse leaky splits.

Chunks of one document are near-duplicates in topic and wording, so a split by query or by chunk
lets validation queries be answered from what training saw. Here whole groups -- by default
source documents (``corpus_metadata[id]["source"]``), or ``"page"`` (source and page) or
``"chunk"`` -- go to one side only. Groups linked by a query relevant to chunks of both are merged
first. Each side gets only its own corpus entries, as LlamaIndex's finetuning examples do.

:func:`check_no_leakage` refuses a validation set that shares a corpus id, a query id, a query
text or a source document with training (LlamaIndex's default output path once merged train
into val: llama_index issue 16479); :func:`write_split` runs it before writing both files.

Example::

    train, val = split_by_source(dataset, val_fraction=0.2, seed=0)
    write_split(train, val, "out/train.json", "out/val.json")
"""

from __future__ import annotations

import itertools
import logging
import random
from pathlib import Path
from typing import Any

from embtune_core.data.dataset import QADataset
from embtune_core.errors import DatasetError, InputError

log = logging.getLogger(__name__)
GROUP_BY = ("source", "page", "chunk")


def group_of(dataset: QADataset, corpus_id: str, by: str = "source") -> str:
    """The split group of a corpus entry; entries without metadata are their own group."""
    meta = dataset.corpus_metadata.get(corpus_id) or {}
    # source_name (the file as named relative to the inputs) keeps the split the same from any folder.
    source = meta.get("source_name") or meta.get("source")
    if by == "chunk" or not source:
        return f"chunk:{meta.get('chunk_id', corpus_id)}"
    if by == "page":
        return f"{source}#{meta.get('page', '')}"
    return str(source)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def split_by_source(dataset: QADataset, *, val_fraction: float = 0.2, seed: int = 0,
                    by: str = "source") -> tuple[QADataset, QADataset]:
    """``(train, val)`` with no group (document, page or chunk) on both sides.

    Groups are shuffled with ``seed`` and moved to validation until it holds at least
    ``val_fraction`` of the queries. Both sides get at least one group.
    """
    if by not in GROUP_BY:
        raise InputError(f"split_by must be one of {', '.join(GROUP_BY)}, not {by!r}", field="split_by")
    if not 0.0 < val_fraction < 1.0:
        raise InputError(f"val_fraction must be between 0 and 1 (exclusive), not {val_fraction}",
                         field="val_fraction")
    groups = _UnionFind()
    for cid in dataset.corpus:
        groups.find(group_of(dataset, cid, by))
    for qid in dataset.queries:
        ids = dataset.relevant_docs.get(qid, [])
        for a, b in itertools.pairwise(ids):
            groups.union(group_of(dataset, a, by), group_of(dataset, b, by))
    queries_per_group: dict[str, int] = {}
    for qid in dataset.queries:
        ids = dataset.relevant_docs.get(qid, [])
        if ids:
            root = groups.find(group_of(dataset, ids[0], by))
            queries_per_group[root] = queries_per_group.get(root, 0) + 1
    roots = sorted(r for r, n in queries_per_group.items() if n)
    if len(roots) < 2:
        hint = {"source": "; use split_by \"page\" or \"chunk\" (weaker: one document on both sides), "
                          "or val_fraction 0 and a separate validation document",
                "page": "; use split_by \"chunk\"", "chunk": ""}[by]
        raise InputError(f"cannot split by {by}: the queries come from {len(roots)} {by} group(s), "
                         f"need at least 2{hint}", field="split_by")
    random.Random(seed).shuffle(roots)
    total = sum(queries_per_group[r] for r in roots)
    val_roots: set[str] = set()
    in_val = 0
    for root in roots[:-1]:  # the last group always stays in training
        if in_val >= val_fraction * total:
            break
        val_roots.add(root)
        in_val += queries_per_group[root]
    share = in_val / total
    if abs(share - val_fraction) > 0.05 and not 0.5 * val_fraction <= share <= 1.5 * val_fraction:
        biggest = max(queries_per_group.values())
        log.warning("split by %s: validation holds %d of %d queries (%.0f%%), not the %.0f%% asked for: whole "
                    "%s groups move together and the largest holds %d queries; use split_by \"page\" or "
                    "\"chunk\", or a separate validation set", by, in_val, total, 100 * share, 100 * val_fraction,
                    by, biggest)
    val_corpus = [c for c in dataset.corpus if groups.find(group_of(dataset, c, by)) in val_roots]
    train_corpus = [c for c in dataset.corpus if groups.find(group_of(dataset, c, by)) not in val_roots]
    val_set = set(val_corpus)
    val_queries = [q for q in dataset.queries
                   if dataset.relevant_docs.get(q) and dataset.relevant_docs[q][0] in val_set]
    val_query_set = set(val_queries)
    train_queries = [q for q in dataset.queries if q not in val_query_set]
    val_queries = without_repeated_questions(dataset, train_queries, val_queries)
    train = dataset.subset(train_queries, corpus_ids=train_corpus)
    val = dataset.subset(val_queries, corpus_ids=val_corpus)
    return train, val


def without_repeated_questions(dataset: QADataset, train_queries: list[str], val_queries: list[str]) -> list[str]:
    """``val_queries`` less those whose text is also a training question's.

    A question asked of both sides ("What was the total revenue?") would leak: training keeps it.
    """
    train_texts = {dataset.queries[q] for q in train_queries}
    kept = [q for q in val_queries if dataset.queries[q] not in train_texts]
    if len(kept) < len(val_queries):
        log.info("split: %d validation queries repeat a training query's text; left out",
                 len(val_queries) - len(kept))
    return kept


def leakage(train: QADataset, val: QADataset) -> dict[str, list[Any]]:
    """What the two sets share: corpus ids, query ids, query texts and source documents."""
    train_sources = {str(m.get("source")) for m in train.corpus_metadata.values() if m.get("source")}
    val_sources = {str(m.get("source")) for m in val.corpus_metadata.values() if m.get("source")}
    train_texts = set(train.queries.values())
    return {
        "corpus ids": sorted(set(train.corpus) & set(val.corpus)),
        "query ids": sorted(set(train.queries) & set(val.queries)),
        "query texts": sorted({t for t in val.queries.values() if t in train_texts}),
        "source documents": sorted(train_sources & val_sources),
    }


def check_no_leakage(train: QADataset, val: QADataset, *, path: str | Path = "<validation set>",
                     allow_shared_sources: bool = False) -> None:
    """Raise :class:`DatasetError` (one line) when validation overlaps training."""
    found = leakage(train, val)
    if allow_shared_sources:
        found.pop("source documents")
    problems = [f"{len(v)} {k} (e.g. {str(v[0])[:60]!r})" for k, v in found.items() if v]
    if problems:
        raise DatasetError("validation set overlaps training: " + ", ".join(problems)
                           + "; refusing to write it", path=path)


def write_split(train: QADataset, val: QADataset | None, train_path: str | Path,
                val_path: str | Path | None, *, allow_shared_sources: bool = False) -> None:
    """Write ``train`` and ``val`` atomically after checking that they are separate and disjoint."""
    if val is not None and val_path is not None:
        if Path(train_path).resolve() == Path(val_path).resolve():
            raise DatasetError("training and validation would be written to the same file", path=val_path)
        check_no_leakage(train, val, path=val_path, allow_shared_sources=allow_shared_sources)
    train.save(train_path)
    if val is not None and val_path is not None:
        val.save(val_path)
