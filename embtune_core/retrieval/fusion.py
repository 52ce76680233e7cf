"""Hybrid retrieval: a dense ranking and BM25's fused, with the fusion chosen on held-out data.

Two fusions, each defined as a host serves it, so that what embtune measures is what LangChain returns:

* ``rrf``: weighted reciprocal rank fusion, LangChain's ``EnsembleRetriever`` (langchain_classic,
  ``weighted_reciprocal_rank``): ``score(d) = w / (k + rank_dense(d)) + (1 - w) / (k + rank_bm25(d))``
  over the documents each ranking returns (ranks from 1), Cormack, Clarke & Büttcher, SIGIR 2009
  (``k`` is the ensemble's ``c``; their k = 60 with equal weights is the untuned hybrid);
* ``convex``: a convex combination of min-max normalised scores, ``w * dense' + (1 - w) * bm25'``,
  each list's scores mapped to [0, 1] over the documents it returned and 0 for a document it did
  not return (Weaviate's ``relativeScoreFusion``; Bruch, Gai & Ingber, "An Analysis of Fusion
  Functions for Hybrid Retrieval", ACM TOIS 2023, who find a tuned convex combination beats RRF).

Each ranking contributes its top ``depth`` documents (each retriever's ``k`` in LangChain); BM25
contributes only documents that share a term with the query (score > 0), as Lucene returns. Ties
go to the document that appears first in the dense list, then the BM25 list (EnsembleRetriever's
stable sort over the concatenated lists).

:func:`choose_fusion` tries :data:`RRF_GRID` x :data:`WEIGHT_GRID` and convex fusion at each of
:data:`WEIGHT_GRID` on held-out queries and keeps the best by NDCG@10; the untuned hybrid (RRF, k =
60, w = 0.5) is tried first and kept unless another is strictly better. It never sees the
validation split: the pipeline passes held-out *training* documents' questions.

Example::

    fusion = choose_fusion(dense_scores, dense_indices, bm25_scores, bm25_indices, relevant).fusion
    scores, indices = fuse(dense_scores, dense_indices, bm25_scores, bm25_indices, fusion, top=10)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

from embtune_core.errors import ConfigError

RRF_GRID = (60, 5, 10, 20, 40, 100)
WEIGHT_GRID = (0.5, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8)
DEFAULT_DEPTH = 100


@dataclass(frozen=True)
class Fusion:
    """How a dense ranking and BM25's are fused (module docstring). ``weight`` is the dense side's."""

    method: Literal["rrf", "convex"] = "rrf"
    k: int = 60
    weight: float = 0.5
    depth: int = DEFAULT_DEPTH

    def __post_init__(self) -> None:
        if self.method not in ("rrf", "convex"):
            raise ConfigError(f"must be rrf or convex, not {self.method!r}", field="fusion.method")
        if not 0.0 <= self.weight <= 1.0:
            raise ConfigError(f"must be in [0, 1], not {self.weight}", field="fusion.weight")
        if self.k < 0 or self.depth < 1:
            raise ConfigError("k must be >= 0 and depth >= 1", field="fusion")

    def describe(self) -> str:
        if self.method == "rrf":
            return (f"reciprocal rank fusion (k = {self.k}, dense weight {self.weight:g}, BM25 weight "
                    f"{1 - self.weight:g}) of each side's top {self.depth}")
        return (f"convex fusion of min-max normalised scores (dense weight {self.weight:g}, BM25 weight "
                f"{1 - self.weight:g}) of each side's top {self.depth}")

    def short(self) -> str:
        """``RRF(k=60)`` for the untuned hybrid, else every setting (the system's identity)."""
        if self == Fusion():
            return "RRF(k=60)"
        if self.method == "rrf":
            return f"RRF(k={self.k}, dense weight {self.weight:g}, depth {self.depth})"
        return f"convex(dense weight {self.weight:g}, depth {self.depth})"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], *, path: Any = None) -> Fusion:
        from embtune_core.settings import from_table

        return from_table(cls, dict(data), path=path, table="fusion")

    @classmethod
    def parse(cls, text: str) -> Fusion:
        """``rrf``, ``rrf,k=20,weight=0.7,depth=100`` or ``convex,weight=0.3``: the ``+fusion:`` part of
        a system spec."""
        method, *pairs = [p.strip() for p in text.split(",") if p.strip()]
        values: dict[str, Any] = {"method": method}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep or key not in ("k", "weight", "depth"):
                raise ConfigError(f"'{pair}': expected k=, weight= or depth=", field="fusion")
            try:
                values[key] = float(value) if key == "weight" else int(value)
            except ValueError:
                raise ConfigError(f"'{pair}': not a number", field="fusion") from None
        return cls(**values)

    def spec(self) -> str:
        return (f"{self.method},k={self.k},weight={self.weight:g},depth={self.depth}" if self.method == "rrf"
                else f"convex,weight={self.weight:g},depth={self.depth}")


def _minmax(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Each row's valid scores mapped to [0, 1] (all equal: 1); invalid entries 0."""
    big = np.where(valid, scores, np.inf).min(axis=1, keepdims=True, initial=np.inf)
    top = np.where(valid, scores, -np.inf).max(axis=1, keepdims=True, initial=-np.inf)
    span = top - big
    safe = np.where(np.isfinite(span) & (span > 0), span, 1.0)
    scaled = np.where(np.isfinite(span) & (span > 0), (scores - big) / safe, 1.0)
    return np.where(valid, scaled, 0.0)


def fuse(dense_scores: np.ndarray, dense_indices: np.ndarray, bm25_scores: np.ndarray, bm25_indices: np.ndarray,
         fusion: Fusion, *, top: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fused ``(scores, indices)`` of each query, best first, ``-1``/0 padded to ``top`` (default: the
    union's width). Inputs: ``(n_queries, >= depth)`` rankings, best first, ``-1`` pads; BM25 entries
    with score <= 0 are not retrieved."""
    depth = fusion.depth
    dense_idx = np.asarray(dense_indices, dtype=np.int64)[:, :depth]
    bm25_idx = np.asarray(bm25_indices, dtype=np.int64)[:, :depth]
    dense_val = np.asarray(dense_scores, dtype=np.float64)[:, :depth]
    bm25_val = np.asarray(bm25_scores, dtype=np.float64)[:, :depth]
    dense_ok = dense_idx >= 0
    bm25_ok = (bm25_idx >= 0) & (bm25_val > 0)
    if fusion.method == "rrf":
        ranks_d = np.arange(1, dense_idx.shape[1] + 1, dtype=np.float64)
        ranks_b = np.arange(1, bm25_idx.shape[1] + 1, dtype=np.float64)
        part_d = np.where(dense_ok, fusion.weight / (fusion.k + ranks_d), 0.0)
        part_b = np.where(bm25_ok, (1.0 - fusion.weight) / (fusion.k + ranks_b), 0.0)
    else:
        part_d = fusion.weight * _minmax(dense_val, dense_ok)
        part_b = (1.0 - fusion.weight) * _minmax(bm25_val, bm25_ok)
    # Every retrieved entry, in EnsembleRetriever's order (dense list, then BM25's): its position is the
    # tie-break, and a document's score sums over its entries.
    docs = np.concatenate([np.where(dense_ok, dense_idx, -1), np.where(bm25_ok, bm25_idx, -1)], axis=1)
    parts = np.concatenate([part_d, part_b], axis=1)
    n_queries, width = docs.shape
    out_idx = np.full((n_queries, top if top is not None else width), -1, dtype=np.int64)
    out_val = np.zeros(out_idx.shape, dtype=np.float32)
    for q in range(n_queries):
        row = docs[q]
        keep = row >= 0
        if not keep.any():
            continue
        unique, first, inverse = np.unique(row[keep], return_index=True, return_inverse=True)
        totals = np.zeros(len(unique))
        np.add.at(totals, inverse, parts[q][keep])
        order = np.lexsort((first, -totals))  # score descending, then first appearance
        n = min(out_idx.shape[1], len(order))
        out_idx[q, :n] = unique[order[:n]]
        out_val[q, :n] = totals[order[:n]]
    return out_val, out_idx


def candidates() -> list[Fusion]:
    """The fusions :func:`choose_fusion` tries, the untuned hybrid (RRF, k = 60, w = 0.5) first."""
    grid = [Fusion("rrf", k, w) for k in RRF_GRID for w in WEIGHT_GRID]
    grid += [Fusion("convex", 60, w) for w in WEIGHT_GRID]
    return grid


@dataclass
class FusionChoice:
    fusion: Fusion
    score: float
    untuned: float
    metric: str = "ndcg@10"
    queries: int = 0
    scores: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"fusion": self.fusion.to_json(), "score": self.score, "untuned": self.untuned, "metric": self.metric,
                "queries": self.queries, "tried": len(self.scores)}


def choose_fusion(dense_scores: np.ndarray, dense_indices: np.ndarray, bm25_scores: np.ndarray,
                  bm25_indices: np.ndarray, relevant: Sequence[np.ndarray] | None = None, *,
                  groups: np.ndarray | None = None, grid: Sequence[Fusion] | None = None,
                  score: Any = None, top: int = 10) -> FusionChoice:
    """The fusion of ``grid`` (default :func:`candidates`) with the best mean NDCG@10 on these held-out
    queries; the first of equals wins. ``score(indices) -> float`` scores a fused ranking (the evaluation's
    own scoring, graded judgements included); without it, binary NDCG@10 against ``relevant`` (corpus
    positions per query)."""
    from embtune_core.scoring import metrics as M

    grid = list(grid or candidates())
    if score is None:
        n_relevant = np.array([max(1, len(r)) for r in relevant])

        def score(indices: np.ndarray) -> float:
            hits = M.hit_matrix(indices, list(relevant), groups=groups)
            return float(M.ndcg(hits, n_relevant, 10).mean()) if len(relevant) else 0.0

    best: tuple[float, Fusion] | None = None
    scores: dict[str, float] = {}
    for fusion in grid:
        _, indices = fuse(dense_scores, dense_indices, bm25_scores, bm25_indices, fusion, top=top)
        score_ = score(indices)
        scores[fusion.spec()] = round(score_, 6)
        if best is None or score_ > best[0] + 1e-12:
            best = (score_, fusion)
    assert best is not None
    return FusionChoice(best[1], best[0], scores[grid[0].spec()], queries=len(dense_indices), scores=scores)
