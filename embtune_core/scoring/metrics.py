"""Retrieval metrics over rankings: pure functions, one score per query, then averaged.

A :class:`Ranking` holds, for each query, the corpus positions retrieved best first (from
:func:`embtune_core.retrieval.search.exact_search`). :func:`hit_matrix` turns it into a boolean matrix
``hits[q, r]`` (is the document at rank ``r + 1`` relevant to query ``q``?) and every metric is a
vectorised function of that matrix and the number of relevant documents per query.

Definitions (per query; a dataset's score is the mean over queries that have at least one relevant
document, as sentence-transformers' ``InformationRetrievalEvaluator`` does):

* ``hit_rate@k`` = ``accuracy@k``: 1 if any relevant document is in the top k, else 0 (LlamaIndex's
  hit rate; sentence-transformers' accuracy).
* ``mrr@k``: 1 / rank of the first relevant document in the top k, else 0.
* ``precision@k``: relevant documents in the top k, divided by k (by k even when the corpus is
  smaller than k, as sentence-transformers does).
* ``recall@k``: relevant documents in the top k, divided by the number of relevant documents.
* ``ndcg@k``: binary-gain DCG of the top k over the DCG of the ideal ranking
  (``min(k, n_relevant)`` hits at the top), discount ``1 / log2(rank + 1)``.
* ``map@k``: sum of precision@rank at each relevant rank within the top k, divided by
  ``min(k, n_relevant)``.

Duplicates: corpus entries with exactly the same text are one document (a model cannot tell
them apart): :func:`collapse_groups` maps each to its group, so a query relevant to either copy
is answered by whichever ranks first, and the other copy counts as a miss. ``evaluate`` applies
this by default and says how many duplicates it found (see :mod:`embtune_core.scoring.evaluation`).

Ties: documents are ordered by score, highest first; equal scores are ordered by corpus position
(the earlier document in the dataset's corpus ranks first). :func:`rank_scores` applies this rule
to a dense score matrix and :func:`~embtune_core.retrieval.search.exact_search` applies it over blocks.
(sentence-transformers breaks ties by the corpus id string instead; the two agree whenever scores
are distinct, which they are for real embeddings of distinct texts.) For graded judgements
(BEIR qrels) the evaluation orders the corpus by document id, descending, before searching, so
the same rule breaks ties as trec_eval does (score descending, then document id descending).

Graded judgements (BEIR qrels), scored as pytrec_eval / trec_eval do (:func:`graded_metrics`):

* a document is relevant for the binary measures (accuracy, precision, recall, MRR, MAP) when its
  grade is at least :data:`RELEVANCE_LEVEL` (1: trec_eval's default ``relevance_level``);
* ``ndcg@k`` uses the grade as the gain (negative grades gain 0); the ideal ranking puts every
  judged grade of the query first, highest first, judged documents missing from the corpus
  included;
* ``recall@k`` and ``map@k`` divide by every relevant judgement of the query (``map_cut`` divides by
  the number of relevant documents, not by ``min(k, n_relevant)``), missing documents included;
* a query whose judgements are all below the relevance level scores 0 on every measure (pytrec_eval
  returns it with zeros, and BEIR averages it in).

Example::

    ranking = Ranking(query_ids, corpus_ids, indices)        # indices: (n_queries, depth) int64
    hits = hit_matrix(ranking.indices, relevant_positions)    # relevant_positions: list of int arrays
    per_query = ir_metrics(hits, n_relevant)                  # {"ndcg@10": array([...]), ...}
    means = mean_scores(per_query)                            # {"ndcg@10": 0.71, ...}
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ACCURACY_AT = (1, 3, 5, 10)
PRECISION_RECALL_AT = (1, 3, 5, 10)
MRR_AT = (10,)
NDCG_AT = (10,)
MAP_AT = (100,)

PRIMARY_METRIC = "ndcg@10"
RELEVANCE_LEVEL = 1  # trec_eval's default relevance_level: grade >= 1 is relevant for binary measures


@dataclass
class Ranking:
    """Ranked corpus positions per query, best first; ``-1`` pads a row shorter than the rest.

    ``query_ids[i]`` is the query of row ``i``; ``indices[i, r]`` is the corpus position (into
    ``corpus_ids``) at rank ``r + 1``; ``scores`` (optional) holds the matching similarities.
    """

    query_ids: list[str]
    corpus_ids: list[str]
    indices: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64).reshape(len(self.query_ids), -1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float32).reshape(self.indices.shape)

    @property
    def depth(self) -> int:
        return self.indices.shape[1]

    def ranked_ids(self, row: int) -> list[str]:
        """The corpus ids of query ``row``, best first."""
        return [self.corpus_ids[i] for i in self.indices[row] if i >= 0]

    def relevant_positions(self, relevant_docs: Mapping[str, Iterable[str]]) -> list[np.ndarray]:
        """``relevant_docs`` ({query id: corpus ids}) as corpus positions, one array per row.

        Ids not in the corpus are dropped (they can never be retrieved).
        """
        position = {cid: i for i, cid in enumerate(self.corpus_ids)}
        return [np.fromiter({position[c] for c in relevant_docs.get(q, ()) if c in position}, dtype=np.int64)
                for q in self.query_ids]


def rank_scores(scores: np.ndarray, k: int | None = None) -> np.ndarray:
    """Corpus positions by descending score, ties by ascending position; the first ``k`` per row.

    ``scores`` is a dense ``(n_queries, n_corpus)`` matrix. This is the reference ordering that
    :func:`embtune_core.retrieval.search.exact_search` reproduces block by block.
    """
    scores = np.asarray(scores)
    order = np.argsort(-scores, axis=1, kind="stable")  # stable: equal scores keep corpus order
    return order if k is None else order[:, :k]


def collapse_groups(indices: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Ranked positions mapped to their group (``groups[position]``, e.g. the first corpus position
    holding the same text), with every repeat of a group later in the same row replaced by ``-1``
    (a miss): two copies of one text are one document, found once, at its best rank."""
    indices = np.asarray(indices, dtype=np.int64)
    mapped = np.where(indices >= 0, np.asarray(groups, dtype=np.int64)[np.clip(indices, 0, None)], -1)
    order = np.argsort(mapped, axis=1, kind="stable")  # stable: the best rank of a group comes first
    ordered = np.take_along_axis(mapped, order, axis=1)
    repeat_sorted = np.zeros(ordered.shape, dtype=bool)
    repeat_sorted[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    repeat = np.empty_like(repeat_sorted)
    np.put_along_axis(repeat, order, repeat_sorted, axis=1)
    return np.where(repeat, -1, mapped)


def hit_matrix(indices: np.ndarray, relevant: Sequence[np.ndarray], groups: np.ndarray | None = None) -> np.ndarray:
    """``hits[q, r]``: is the document at rank ``r + 1`` of query ``q`` relevant? (bool)

    ``relevant[q]`` holds the corpus positions relevant to query ``q``. With ``groups`` (corpus
    position -> group position, see :func:`collapse_groups`) ``relevant`` holds group positions,
    any member of a relevant group is a hit, and later members of a group already ranked are
    misses. Vectorised with one ``np.isin`` over (query, position) keys, so ten thousand queries
    cost milliseconds.
    """
    indices = np.asarray(indices, dtype=np.int64)
    if groups is not None:
        indices = collapse_groups(indices, groups)
    n_queries = indices.shape[0]
    if len(relevant) != n_queries:
        raise ValueError(f"{len(relevant)} relevant sets for {n_queries} ranked queries")
    width = int(max(indices.max(initial=-1), max((int(r.max()) for r in relevant if len(r)), default=-1))) + 2
    rows = np.arange(n_queries, dtype=np.int64)[:, None]
    ranked_keys = rows * width + (indices + 1)  # +1: padding -1 maps to 0, never a relevant key
    relevant_keys = np.concatenate(
        [q * width + (np.asarray(r, dtype=np.int64) + 1) for q, r in enumerate(relevant)] or [np.empty(0, np.int64)])
    return np.isin(ranked_keys, relevant_keys) & (indices >= 0)


def judged_values(indices: np.ndarray, judged: Sequence[np.ndarray], values: Sequence[np.ndarray]) -> np.ndarray:
    """``out[q, r]``: the value (e.g. the relevance grade) that ``judged[q]`` gives the document at rank
    ``r + 1`` of query ``q``, 0.0 for an unjudged document or padding (float64, same shape as ``indices``).

    ``judged[q]`` holds corpus positions and ``values[q]`` one number each. Vectorised like
    :func:`hit_matrix`: one sorted key array and one ``searchsorted``.
    """
    indices = np.asarray(indices, dtype=np.int64)
    n_queries = indices.shape[0]
    if len(judged) != n_queries or len(values) != n_queries:
        raise ValueError(f"{len(judged)} judged sets for {n_queries} ranked queries")
    width = int(max(indices.max(initial=-1), max((int(j.max()) for j in judged if len(j)), default=-1))) + 2
    keys = np.concatenate([q * width + (np.asarray(j, dtype=np.int64) + 1) for q, j in enumerate(judged)]
                          or [np.empty(0, np.int64)])
    vals = np.concatenate([np.asarray(v, dtype=np.float64) for v in values] or [np.empty(0, np.float64)])
    order = np.argsort(keys, kind="stable")
    keys, vals = keys[order], vals[order]
    if not len(keys):
        return np.zeros(indices.shape, dtype=np.float64)
    ranked = np.arange(n_queries, dtype=np.int64)[:, None] * width + (indices + 1)
    where = np.minimum(np.searchsorted(keys, ranked), len(keys) - 1)
    found = (indices >= 0) & (keys[where] == ranked)
    return np.where(found, vals[where], 0.0)


def _top(hits: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` columns, padded with misses when the ranking is shallower than ``k``."""
    top = hits[:, :k]
    if top.shape[1] < k:
        top = np.pad(top, ((0, 0), (0, k - top.shape[1])))
    return top


def _n_relevant(n_relevant: np.ndarray | Sequence[int]) -> np.ndarray:
    n = np.asarray(n_relevant, dtype=np.float64)
    if np.any(n <= 0):
        raise ValueError("every evaluated query needs at least one relevant document")
    return n


def hit_rate(hits: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1.0 if a relevant document is in the top ``k``, else 0.0."""
    return _top(hits, k).any(axis=1).astype(np.float64)


def reciprocal_rank(hits: np.ndarray, k: int) -> np.ndarray:
    """Per query: 1 / rank of the first relevant document in the top ``k``, else 0.0."""
    top = _top(hits, k)
    first = top.argmax(axis=1)
    return np.where(top.any(axis=1), 1.0 / (first + 1.0), 0.0)


def precision(hits: np.ndarray, k: int) -> np.ndarray:
    """Per query: relevant documents in the top ``k`` divided by ``k``."""
    return _top(hits, k).sum(axis=1) / float(k)


def recall(hits: np.ndarray, n_relevant, k: int) -> np.ndarray:
    """Per query: relevant documents in the top ``k`` divided by the number of relevant documents."""
    return _top(hits, k).sum(axis=1) / _n_relevant(n_relevant)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(k, dtype=np.float64) + 2.0)


def ndcg(hits: np.ndarray, n_relevant, k: int) -> np.ndarray:
    """Per query: binary-gain NDCG@k; the ideal ranking puts ``min(k, n_relevant)`` hits first."""
    discounts = _discounts(k)
    dcg = _top(hits, k) @ discounts
    ideal_cumulative = np.concatenate([[0.0], np.cumsum(discounts)])
    ideal = ideal_cumulative[np.minimum(_n_relevant(n_relevant), k).astype(np.int64)]
    return dcg / ideal


def average_precision(hits: np.ndarray, n_relevant, k: int) -> np.ndarray:
    """Per query: AP@k, the precision at each relevant rank within ``k``, over ``min(k, n_relevant)``."""
    top = _top(hits, k).astype(np.float64)
    precision_at_rank = np.cumsum(top, axis=1) / np.arange(1, k + 1, dtype=np.float64)
    return (precision_at_rank * top).sum(axis=1) / np.minimum(_n_relevant(n_relevant), k)


def ir_metrics(hits: np.ndarray, n_relevant, *, accuracy_at: Iterable[int] = ACCURACY_AT,
               precision_recall_at: Iterable[int] = PRECISION_RECALL_AT, mrr_at: Iterable[int] = MRR_AT,
               ndcg_at: Iterable[int] = NDCG_AT, map_at: Iterable[int] = MAP_AT) -> dict[str, np.ndarray]:
    """Per-query scores of sentence-transformers' IR metrics, keyed like its results.

    Keys: ``accuracy@k``, ``precision@k``, ``recall@k``, ``mrr@k``, ``ndcg@k``, ``map@k``.
    ``hits`` must be at least as deep as the largest ``k`` (or the whole corpus when smaller).
    """
    out: dict[str, np.ndarray] = {}
    for k in accuracy_at:
        out[f"accuracy@{k}"] = hit_rate(hits, k)
    for k in precision_recall_at:
        out[f"precision@{k}"] = precision(hits, k)
        out[f"recall@{k}"] = recall(hits, n_relevant, k)
    for k in mrr_at:
        out[f"mrr@{k}"] = reciprocal_rank(hits, k)
    for k in ndcg_at:
        out[f"ndcg@{k}"] = ndcg(hits, n_relevant, k)
    for k in map_at:
        out[f"map@{k}"] = average_precision(hits, n_relevant, k)
    return out


def _ideal_dcg(ideal_gains: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per query: DCG@k of the ideal ranking, ``ideal_gains[q]`` (every positive grade, any order)."""
    discounts = _discounts(k)
    out = np.zeros(len(ideal_gains), dtype=np.float64)
    for q, gains in enumerate(ideal_gains):
        best = np.sort(np.asarray(gains, dtype=np.float64))[::-1][:k]
        out[q] = float(best @ discounts[:len(best)])
    return out


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0.0 where the denominator is 0 (trec_eval's convention)."""
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator, dtype=np.float64),
                     where=denominator > 0)


def graded_metrics(gains: np.ndarray, n_relevant, ideal_gains: Sequence[np.ndarray], *,
                   accuracy_at: Iterable[int] = ACCURACY_AT, precision_recall_at: Iterable[int] = PRECISION_RECALL_AT,
                   mrr_at: Iterable[int] = MRR_AT, ndcg_at: Iterable[int] = NDCG_AT,
                   map_at: Iterable[int] = MAP_AT, relevance_level: float = RELEVANCE_LEVEL
                   ) -> dict[str, np.ndarray]:
    """Per-query scores of graded judgements as pytrec_eval computes them (``success``, ``P``, ``recall``,
    ``recip_rank`` on the run cut at k, ``ndcg_cut``, ``map_cut``), keyed like :func:`ir_metrics`.

    ``gains[q, r]``: the grade of the document at rank ``r + 1`` (0 when unjudged; :func:`judged_values`).
    ``n_relevant[q]``: judgements of query ``q`` at or above ``relevance_level``, documents missing from
    the corpus included. ``ideal_gains[q]``: every positive grade of query ``q``, missing documents
    included. A query without a relevant judgement scores 0 everywhere (no error: pytrec_eval keeps it).
    """
    gains = np.asarray(gains, dtype=np.float64)
    hits = gains >= relevance_level
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    out: dict[str, np.ndarray] = {}
    for k in accuracy_at:
        out[f"accuracy@{k}"] = hit_rate(hits, k)
    for k in precision_recall_at:
        found = _top(hits, k).sum(axis=1).astype(np.float64)
        out[f"precision@{k}"] = found / float(k)
        out[f"recall@{k}"] = _divide(found, n_rel)
    for k in mrr_at:
        out[f"mrr@{k}"] = reciprocal_rank(hits, k)
    for k in ndcg_at:
        top = np.clip(_top(gains, k), 0.0, None)  # negative grades gain nothing (trec_eval)
        out[f"ndcg@{k}"] = _divide(top @ _discounts(k), _ideal_dcg(ideal_gains, k))
    for k in map_at:
        top = _top(hits, k).astype(np.float64)
        precision_at_rank = np.cumsum(top, axis=1) / np.arange(1, k + 1, dtype=np.float64)
        out[f"map@{k}"] = _divide((precision_at_rank * top).sum(axis=1), n_rel)
    return out


def hit_rate_mrr(hits: np.ndarray, k: int = 5) -> dict[str, np.ndarray]:
    """Per-query LlamaIndex ``hit_rate@k`` and ``mrr@k`` (MRR cut at k: 0 when no hit in the top k)."""
    return {f"hit_rate@{k}": hit_rate(hits, k), f"mrr@{k}": reciprocal_rank(hits, k)}


def max_depth(*, accuracy_at: Iterable[int] = ACCURACY_AT, precision_recall_at: Iterable[int] = PRECISION_RECALL_AT,
              mrr_at: Iterable[int] = MRR_AT, ndcg_at: Iterable[int] = NDCG_AT,
              map_at: Iterable[int] = MAP_AT) -> int:
    """How deep a ranking must be for :func:`ir_metrics` with these cut-offs."""
    return max([*accuracy_at, *precision_recall_at, *mrr_at, *ndcg_at, *map_at])


def first_relevant_rank(hits: np.ndarray) -> np.ndarray:
    """Per query: 1-based rank of the first relevant document, or 0 when none is in the ranking."""
    found = hits.any(axis=1)
    return np.where(found, hits.argmax(axis=1) + 1, 0).astype(np.int64)


def mean_scores(per_query: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Each metric averaged over queries (0.0 for an empty set of queries)."""
    return {name: float(np.mean(values)) if len(values) else 0.0 for name, values in per_query.items()}
