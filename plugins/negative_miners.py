"""Built-in hard-negative miner ``embedding-rank``: rank the corpus per query with an encoder, keep
the closest non-positives that are not likely false negatives.

Inputs: a QA dataset and an encoder (an object with ``encode_queries``/``encode_documents``, a
SentenceTransformer, or a model name/path/encoder spec such as
``st:sentence-transformers/all-MiniLM-L6-v2``). Output: the dataset with ``negatives``
({query id: [corpus ids]}, best-ranked first).

For each query the corpus is ranked by cosine similarity (exact FAISS search); the query's
positives are removed; candidates are taken from ranks ``range_min`` to ``range_max`` (0 = the
highest-scoring non-positive). A candidate scoring too close to the positive is probably an
unlabelled positive (a false negative) and is dropped:

* ``relative_margin`` (default 0.05): NV-Retriever's TopK-PercPos (Moreira et al. 2024) keeps a
  negative only if ``score <= positive_score * (1 - relative_margin)``, i.e. below 95% of the
  positive's score; with several positives the lowest positive score is used.
* ``margin`` (optional): TopK-MarginPos, keep only if ``score <= positive_score - margin``.

A candidate whose text equals a positive's text (the same chunk under another id) or an already kept
negative's is never kept, whatever the margins (``skipped_same_text`` counts them).

The first ``num_negatives`` survivors are kept. ``last_report`` counts the candidates examined,
the ones the guard dropped and queries left with fewer than ``num_negatives``.

Example::

    miner = get_registry().create("negative_miners", "embedding-rank", num_negatives=5)
    mined = miner.mine(dataset, "sentence-transformers/all-MiniLM-L6-v2")
    miner.last_report["dropped_by_guard"]
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from embtune_core import hookimpl
from embtune_core.data.dataset import QADataset
from embtune_core.errors import ConfigError
from embtune_core.retrieval.search import exact_search, normalize

log = logging.getLogger(__name__)


def as_encoder(encoder: Any) -> Any:
    """An encoder object from an encoder, a SentenceTransformer, or a name/path/spec string."""
    if hasattr(encoder, "encode_queries") and hasattr(encoder, "encode_documents"):
        return encoder
    from embtune_core.plugins import get_registry

    if isinstance(encoder, str):
        from embtune_core.encoders.encoding import encoder_from_spec

        return encoder_from_spec(encoder)
    return get_registry().create("encoders", "sentence-transformers", model=encoder)


def _embed(encoder: Any, texts: list[str], kind: str, use_cache: bool) -> np.ndarray:
    if use_cache and getattr(encoder, "identity", None):
        from embtune_core.encoders.embedding_cache import EmbeddingCache

        return EmbeddingCache().embed(encoder, texts, kind=kind)
    method = encoder.encode_queries if kind == "query" else encoder.encode_documents
    return np.asarray(method(texts), dtype=np.float32)


class EmbeddingRankMiner:
    """Hard negatives by embedding rank with a false-negative guard.

    Args:
        num_negatives: negatives kept per query.
        range_min: candidates start at this rank among non-positives (skip the very top).
        range_max: candidates end before this rank.
        relative_margin: drop candidates scoring above ``positive * (1 - relative_margin)``;
            ``None`` or 0 disables it.
        margin: drop candidates scoring above ``positive - margin``; ``None`` disables it.
        use_cache: embed through the on-disk embedding cache.
    """

    def __init__(self, num_negatives: int = 5, range_min: int = 0, range_max: int = 50,
                 relative_margin: float | None = 0.05, margin: float | None = None,
                 use_cache: bool = True):
        if num_negatives < 1:
            raise ConfigError("must be at least 1", field="num_negatives")
        if not 0 <= range_min < range_max:
            raise ConfigError(f"need 0 <= range_min < range_max, got {range_min} and {range_max}",
                              field="range_min")
        if relative_margin is not None and not 0.0 <= relative_margin < 1.0:
            raise ConfigError("must be in [0, 1)", field="relative_margin")
        self.num_negatives, self.range_min, self.range_max = num_negatives, range_min, range_max
        self.relative_margin, self.margin, self.use_cache = relative_margin, margin, use_cache
        self.last_report: dict[str, Any] = {}

    def threshold(self, positive_score: float) -> float:
        """The highest score a negative may have for a query whose (lowest) positive scores this."""
        limit = np.inf
        if self.relative_margin:
            limit = min(limit, positive_score * (1.0 - self.relative_margin))
        if self.margin is not None:
            limit = min(limit, positive_score - self.margin)
        return float(limit)

    def mine(self, dataset: QADataset, encoder: Any) -> QADataset:
        from embtune_core.encoders import token_limits

        encoder = as_encoder(encoder)
        qids = [q for q in dataset.queries if dataset.relevant_docs.get(q)]
        cids = list(dataset.corpus)
        truncation = token_limits.check_encoder(encoder, {"query": [dataset.queries[q] for q in qids],
                                                          "document": [dataset.corpus[c] for c in cids]})
        position = {c: i for i, c in enumerate(cids)}
        q_emb = normalize(_embed(encoder, [dataset.queries[q] for q in qids], "query", self.use_cache))
        c_emb = normalize(_embed(encoder, [dataset.corpus[c] for c in cids], "document", self.use_cache))
        max_pos = max((len(dataset.relevant_docs[q]) for q in qids), default=0)
        scores, indices = exact_search(q_emb, c_emb, self.range_max + max_pos)
        negatives: dict[str, list[str]] = {}
        examined = dropped = short = same_text = 0
        for row, qid in enumerate(qids):
            positives = {position[c] for c in dataset.relevant_docs[qid] if c in position}
            pos_score = float(min(q_emb[row] @ c_emb[p] for p in positives))
            limit = self.threshold(pos_score)
            # A chunk whose text equals a positive's is that positive under another id (boilerplate
            # repeats in real filings): never a negative, whatever the guard's margin. Two negatives
            # with one text would be the same negative twice.
            seen_texts = {dataset.corpus[cids[p]] for p in positives}
            kept: list[str] = []
            rank = -1
            for score, index in zip(scores[row], indices[row]):
                if index in positives or index >= len(cids):
                    continue
                if dataset.corpus[cids[index]] in seen_texts:
                    same_text += 1
                    continue
                rank += 1
                if rank < self.range_min:
                    continue
                if rank >= self.range_max or len(kept) == self.num_negatives:
                    break
                examined += 1
                if score > limit:
                    dropped += 1
                    continue
                kept.append(cids[index])
                seen_texts.add(dataset.corpus[cids[index]])
            short += len(kept) < self.num_negatives
            negatives[qid] = kept
        extras = dict(dataset.extras)
        extras["negatives"] = negatives
        self.last_report = {
            "queries": len(qids), "candidates_examined": examined, "dropped_by_guard": dropped,
            "negatives_kept": sum(len(v) for v in negatives.values()),
            "queries_with_fewer_negatives": short, "num_negatives": self.num_negatives,
            "skipped_same_text": same_text, "truncation": truncation,
            "range": [self.range_min, self.range_max], "relative_margin": self.relative_margin,
            "margin": self.margin,
        }
        log.info("mined %d negatives for %d queries; the false-negative guard dropped %d of %d candidates "
                 "examined; %d queries have fewer than %d; %d candidates skipped for repeating a positive's or "
                 "another negative's text", self.last_report["negatives_kept"], len(qids),
                 dropped, examined, short, self.num_negatives, same_text)
        return QADataset(dataset.queries, dataset.corpus, dataset.relevant_docs, dataset.mode, extras)


@dataclass
class EmbeddingRankOptions:
    """The options of ``embedding-rank`` (the ``[mine]`` table, ``embtune mine``'s flags): see the module docstring."""

    num_negatives: int = 5
    range_min: int = 0
    range_max: int = 50
    relative_margin: float | None = 0.05
    margin: float | None = None
    use_cache: bool = True


@hookimpl
def register_negative_miners(register):
    register("embedding-rank", EmbeddingRankMiner, options=EmbeddingRankOptions,
             description="rank the corpus with an encoder; keep top non-positives below 95% of the "
                         "positive's score (NV-Retriever TopK-PercPos)")
