"""Built-in evaluators: LlamaIndex's hit rate and MRR, sentence-transformers' IR metrics, paired significance.

Each factory takes keyword options and returns an object with
``evaluate(ranking: Ranking, dataset: QADataset) -> dict``: ``ranking`` (an
:class:`embtune_core.scoring.metrics.Ranking`) holds the ranked corpus positions per query, best first;
the result maps metric names to their mean over the ranked queries that have a relevant document,
and ``per_query`` to {metric: [score per query]} aligned with ``query_ids``.

Example::

    from embtune_core.plugins import get_registry

    evaluator = get_registry().create("evaluators", "ir-metrics")
    result = evaluator.evaluate(ranking, dataset)      # {"ndcg@10": 0.71, ..., "per_query": {...}}
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embtune_core import hookimpl
from embtune_core.errors import ConfigError
from embtune_core.scoring import metrics as M
from embtune_core.scoring import stats


def _hits(ranking: M.Ranking, dataset, needed_depth: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Hit matrix and relevant counts for the ranked queries that have a relevant document."""
    if ranking.depth < min(needed_depth, len(ranking.corpus_ids)):
        raise ConfigError(f"ranking is {ranking.depth} deep but these metrics need {needed_depth}; "
                          "search with a larger k", field="ranking")
    relevant = ranking.relevant_positions(dataset.relevant_docs)
    keep = np.asarray([len(r) > 0 for r in relevant], dtype=bool)
    hits = M.hit_matrix(ranking.indices[keep], [r for r, k in zip(relevant, keep) if k])
    n_relevant = np.asarray([len(r) for r in relevant if len(r)], dtype=np.int64)
    query_ids = [q for q, k in zip(ranking.query_ids, keep) if k]
    return hits, n_relevant, query_ids


def _result(per_query: dict[str, np.ndarray], query_ids: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = M.mean_scores(per_query)
    out["per_query"] = {name: values.tolist() for name, values in per_query.items()}
    out["query_ids"] = query_ids
    return out


def _cutoffs(value, option: str) -> tuple[int, ...]:
    values = (value,) if isinstance(value, int) else tuple(value)
    if not values or any(not isinstance(k, int) or k <= 0 for k in values):
        raise ConfigError(f"cut-offs must be positive integers, got {value!r}", field=option)
    return values


class HitRateMRR:
    """LlamaIndex's retrieval metrics: ``hit_rate@k`` (a relevant document in the top k) and
    ``mrr@k`` (1 / rank of the first relevant document in the top k, else 0).

    Options: ``k`` (int or list of ints, default 5, as in LlamaIndex's fine-tuning guides).
    """

    def __init__(self, k=5) -> None:
        self.k = _cutoffs(k, "k")

    def evaluate(self, ranking: M.Ranking, dataset) -> dict[str, Any]:
        hits, _, query_ids = _hits(ranking, dataset, max(self.k))
        per_query: dict[str, np.ndarray] = {}
        for k in self.k:
            per_query.update(M.hit_rate_mrr(hits, k))
        return _result(per_query, query_ids)


class IRMetrics:
    """sentence-transformers' ``InformationRetrievalEvaluator`` metrics for any number of relevant
    documents per query: accuracy/precision/recall@{1,3,5,10}, MRR@10, NDCG@10, MAP@100.

    Options: ``accuracy_at``, ``precision_recall_at``, ``mrr_at``, ``ndcg_at``, ``map_at`` (lists
    of cut-offs, defaults as above).
    """

    def __init__(self, accuracy_at=M.ACCURACY_AT, precision_recall_at=M.PRECISION_RECALL_AT,
                 mrr_at=M.MRR_AT, ndcg_at=M.NDCG_AT, map_at=M.MAP_AT) -> None:
        self.cutoffs = {"accuracy_at": _cutoffs(accuracy_at, "accuracy_at"),
                        "precision_recall_at": _cutoffs(precision_recall_at, "precision_recall_at"),
                        "mrr_at": _cutoffs(mrr_at, "mrr_at"), "ndcg_at": _cutoffs(ndcg_at, "ndcg_at"),
                        "map_at": _cutoffs(map_at, "map_at")}

    def evaluate(self, ranking: M.Ranking, dataset) -> dict[str, Any]:
        hits, n_relevant, query_ids = _hits(ranking, dataset, M.max_depth(**self.cutoffs))
        return _result(M.ir_metrics(hits, n_relevant, **self.cutoffs), query_ids)


class Significance:
    """Paired significance of a ranking against a ``baseline`` ranking of the same queries.

    Computes ``metric`` (default ``ndcg@10``; any key of ``ir-metrics`` or ``hit_rate@k``/``mrr@k``)
    per query for both, then the mean difference with its bootstrap CI, a sign-flip randomisation
    test and scipy's paired t-test (see :mod:`embtune_core.scoring.stats`).

    Options: ``baseline`` (a Ranking, required), ``metric``, ``confidence`` (0.95), ``seed`` (0).
    """

    def __init__(self, baseline: M.Ranking | None = None, metric: str = M.PRIMARY_METRIC,
                 confidence: float = 0.95, seed: int = 0) -> None:
        if baseline is None:
            raise ConfigError("needs a baseline ranking to compare against", field="baseline")
        self.baseline, self.metric, self.confidence, self.seed = baseline, metric, confidence, seed

    def _per_query(self, ranking: M.Ranking, dataset) -> dict[str, float]:
        name, _, k = self.metric.partition("@")
        if not k.isdigit():
            raise ConfigError(f"metric must look like ndcg@10, got '{self.metric}'", field="metric")
        if name == "hit_rate":
            result = HitRateMRR(k=int(k)).evaluate(ranking, dataset)
        else:
            option = {"accuracy": "accuracy_at", "precision": "precision_recall_at", "recall": "precision_recall_at",
                      "mrr": "mrr_at", "ndcg": "ndcg_at", "map": "map_at"}.get(name)
            if option is None:
                raise ConfigError(f"unknown metric '{self.metric}'", field="metric")
            cutoffs = {key: (1,) for key in ("accuracy_at", "precision_recall_at", "mrr_at", "ndcg_at", "map_at")}
            cutoffs[option] = (int(k),)
            result = IRMetrics(**cutoffs).evaluate(ranking, dataset)
        return dict(zip(result["query_ids"], result["per_query"][self.metric]))

    def evaluate(self, ranking: M.Ranking, dataset) -> dict[str, Any]:
        ours, theirs = self._per_query(ranking, dataset), self._per_query(self.baseline, dataset)
        shared = [q for q in ours if q in theirs]
        if not shared:
            raise ConfigError("the ranking and the baseline share no query", field="baseline")
        a = np.asarray([theirs[q] for q in shared])
        b = np.asarray([ours[q] for q in shared])
        out = {"metric": self.metric, "queries": len(shared), "baseline_mean": float(a.mean()),
               "mean": float(b.mean())}
        out.update(stats.compare(a, b, confidence=self.confidence, seed=self.seed))
        return out


@hookimpl
def register_evaluators(register):
    register("hit-rate-mrr", HitRateMRR,
             description="LlamaIndex hit rate@k and MRR@k (k=5 by default), per query and mean")
    register("ir-metrics", IRMetrics,
             description="sentence-transformers IR metrics: accuracy/precision/recall@{1,3,5,10}, "
                         "MRR@10, NDCG@10, MAP@100, any number of relevant documents per query")
    register("significance", Significance,
             description="paired test of a ranking against a baseline ranking: mean difference, "
                         "bootstrap CI, randomisation test, paired t-test")
