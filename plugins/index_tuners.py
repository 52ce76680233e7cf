"""Registers the built-in index tuner ``nudge-n``: document-side tuning without re-embedding.

NUDGE-N (Zeighami, Wellmer & Parameswaran, ICLR 2025) moves each document vector towards its training
queries inside a bound chosen on held-out queries; the algorithm and its safety constraints are in
:mod:`embtune_core.retrieval.index_tuning`.

Example::

    from embtune_core.plugins import get_registry

    tuner = get_registry().create("index_tuners", "nudge-n", gammas=[0.1, 0.2])
    tuned = tuner.tune(ids, texts, doc_vectors, query_vectors, answers, encoder_identity=encoder.identity)
"""

from __future__ import annotations

from typing import Any

from embtune_core import hookimpl


class NudgeN:
    """The ``nudge-n`` tuner: :func:`embtune_core.retrieval.index_tuning.tune_index` with a
    :class:`~embtune_core.retrieval.index_tuning.NudgeConfig` built from the options (``gammas``, ``dev_fraction``,
    ``metric``, ``seed``)."""

    def __init__(self, *, gammas: list[float] | None = None, dev_fraction: float = 0.2, metric: str = "ndcg@10",
                 seed: int = 0):
        from embtune_core.retrieval.index_tuning import DEFAULT_GAMMAS, NudgeConfig

        self.config = NudgeConfig(list(gammas) if gammas is not None else list(DEFAULT_GAMMAS), dev_fraction,
                                  metric, seed)
        self.config.validate()

    def tune(self, doc_ids, doc_texts, doc_vectors, queries, answers, dev_queries=None, dev_answers=None, *,
             encoder_identity: str = "", adapter_fingerprint: str | None = None, record: dict[str, Any] | None = None):
        from embtune_core.retrieval.index_tuning import tune_index

        return tune_index(doc_ids, doc_texts, doc_vectors, queries, answers, dev_queries, dev_answers,
                          config=self.config, encoder_identity=encoder_identity,
                          adapter_fingerprint=adapter_fingerprint, record=record)


@hookimpl
def register_index_tuners(register):
    register("nudge-n", NudgeN, description="NUDGE-N: unit-length document vectors moved towards their "
                                            "training queries, bound chosen on held-out queries (ICLR 2025)")
