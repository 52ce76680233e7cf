"""Lexical and hybrid baselines: BM25 through the ``bm25s`` library, and reciprocal rank fusion.

A user tuning embeddings needs to know whether dense retrieval pays off on their data at all, so
``embtune evaluate`` accepts two baselines beside the encoders (see
:mod:`embtune_core.commands.evaluate`):

* ``bm25`` (or ``lexical:bm25``): Okapi BM25 (Robertson & Zaragoza, "The Probabilistic Relevance
  Framework: BM25 and Beyond", 2009) as the maintained ``bm25s`` library computes it (Lù, "BM25S:
  Orders of magnitude faster lexical search via eager sparse scoring", 2024): its tokenizer
  (lower-cased ``\\b\\w\\w+\\b`` words, English stop words removed, no stemming), its default
  ``method="lucene"``, ``k1=1.5``, ``b=0.75``. We only call ``bm25s``; the scores are its own
  (``BM25.get_scores``), checked against ``bm25s.BM25.retrieve`` in the tests.
* ``hybrid``: a dense system's ranking and BM25's fused by reciprocal rank fusion (Cormack, Clarke
  & Büttcher, "Reciprocal rank fusion outperforms Condorcet and individual rank learning methods",
  SIGIR 2009): ``score(d) = sum over rankings of 1 / (k + rank(d))`` with their ``k = 60``. Each
  ranking contributes its top :data:`FUSION_DEPTH` documents.

BM25 retrieves only documents that share a term with the query (score > 0), as a Lucene or
Elasticsearch index returns them: a query sharing no word with the corpus retrieves nothing, in the
``bm25`` row and in the hybrid alike (checked against a reference BM25, rank_bm25 with Lucene's idf, in
``tests/reference``).

Ties follow the project's rule (equal scores rank by corpus position, earlier first), so BM25's
order can differ from ``bm25s.retrieve`` only among documents with exactly equal scores.

Example::

    index = BM25Index(corpus_texts)
    scores, indices = index.search(query_texts, depth=100)     # (n_queries, 100) each
    fused_scores, fused = rrf([dense_indices, indices])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

RRF_K = 60  # Cormack et al. 2009, section 3: k = 60 "was fixed during a pilot investigation"
FUSION_DEPTH = 1000  # documents each ranking contributes to the fusion (TREC run depth)
STOPWORDS = "en"  # as bm25s' own BEIR benchmark (examples/evaluate_on_beir.py) tokenizes


def _bm25s():
    """bm25s, imported once; it sets its own logger to DEBUG at import, which would print its index
    building at every run: back to the process's level unless that is DEBUG (``-v``)."""
    import logging

    import bm25s

    root = logging.getLogger().getEffectiveLevel()
    logging.getLogger("bm25s").setLevel(max(root, logging.WARNING) if root > logging.DEBUG else root)
    return bm25s


class BM25Index:
    """A ``bm25s.BM25`` index over ``corpus_texts`` (positions are corpus positions)."""

    identity_prefix = "bm25s"

    def __init__(self, corpus_texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75, method: str = "lucene",
                 stopwords: str | None = STOPWORDS):
        bm25s = _bm25s()

        self.n_docs = len(corpus_texts)
        self.stopwords = stopwords
        self.retriever = bm25s.BM25(k1=k1, b=b, method=method)
        tokens = bm25s.tokenize(list(corpus_texts), stopwords=stopwords, show_progress=False)
        if tokens.vocab:
            self.retriever.index(tokens, show_progress=False)
        else:  # only stop words (or no word at all): no term is indexed, every query retrieves nothing
            self.retriever = None  # bm25s refuses an empty vocabulary (max() of an empty sequence)
        self.identity = f"bm25s {bm25s.__version__} method={method} k1={k1} b={b} stopwords={stopwords}"

    def query_tokens(self, query_texts: Sequence[str]) -> list[list[str]]:
        bm25s = _bm25s()

        return bm25s.tokenize(list(query_texts), stopwords=self.stopwords, return_ids=False, show_progress=False)

    def scores(self, query_texts: Sequence[str]) -> np.ndarray:
        """BM25 score of every document for every query: ``(n_queries, n_docs)`` float32."""
        out = np.zeros((len(query_texts), self.n_docs), dtype=np.float32)
        if self.retriever is None:
            return out
        for row, tokens in enumerate(self.query_tokens(query_texts)):
            ids = self.retriever.get_tokens_ids(tokens)
            if ids:  # a query with no indexed term scores 0 everywhere (bm25s refuses an empty list)
                out[row] = self.retriever.get_scores_from_ids(ids)
        return out

    def search(self, query_texts: Sequence[str], depth: int, *, block: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Top ``depth`` documents per query, best first: ``(scores, indices)``, ties by corpus position.

        Only documents that share a term with the query (score > 0) are retrieved, as a Lucene or
        Elasticsearch index returns them; the rest of a row is padding (index -1, score 0). Ranking them
        by corpus position would count unrelated documents as retrieved and make the figures depend on
        the corpus order."""
        depth = min(depth, self.n_docs)
        all_scores, all_indices = [], []
        for start in range(0, len(query_texts), block):  # bounded memory: block x n_docs scores at once
            scores = self.scores(query_texts[start:start + block])
            order = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
            top = np.take_along_axis(scores, order, axis=1)
            all_indices.append(np.where(top > 0, order, -1))
            all_scores.append(np.where(top > 0, top, 0.0).astype(np.float32))
        if not all_indices:
            return np.empty((0, depth), np.float32), np.empty((0, depth), np.int64)
        return np.concatenate(all_scores), np.concatenate(all_indices).astype(np.int64)


def rrf(rankings: Sequence[np.ndarray], *, depth: int | None = None, k: int = RRF_K,
        valid: Sequence[np.ndarray | None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reciprocal rank fusion of rankings of the same queries (Cormack et al. 2009).

    ``rankings``: ``(n_queries, depth_i)`` corpus positions, best first (``-1`` pads). ``valid``:
    optional boolean masks of the same shapes, False for entries that were not retrieved (BM25's
    zero-score documents). Returns ``(scores, indices)`` of the fused top ``depth`` (default: the
    union's size), ties by corpus position; rows with fewer documents are padded with -1 and 0.
    """
    n_queries = rankings[0].shape[0]
    valid = valid or [None] * len(rankings)
    fused_rows, score_rows = [], []
    for q in range(n_queries):
        totals: dict[int, float] = {}
        for ranking, mask in zip(rankings, valid):
            for rank, doc in enumerate(ranking[q]):
                if doc < 0 or (mask is not None and not mask[q, rank]):
                    continue
                totals[int(doc)] = totals.get(int(doc), 0.0) + 1.0 / (k + rank + 1)
        ordered = sorted(totals.items(), key=lambda item: (-item[1], item[0]))
        fused_rows.append([doc for doc, _ in ordered])
        score_rows.append([score for _, score in ordered])
    width = depth if depth is not None else max((len(r) for r in fused_rows), default=0)
    indices = np.full((n_queries, width), -1, dtype=np.int64)
    scores = np.zeros((n_queries, width), dtype=np.float32)
    for q, (docs, values) in enumerate(zip(fused_rows, score_rows)):
        docs, values = docs[:width], values[:width]
        indices[q, :len(docs)] = docs
        scores[q, :len(values)] = values
    return scores, indices


class BM25Spec:
    """The ``bm25`` system of ``embtune evaluate``: BM25 settings; the index is built per corpus."""

    lexical = True

    def __init__(self, *, k1: float = 1.5, b: float = 0.75, method: str = "lucene", stopwords: str | None = STOPWORDS):
        bm25s = _bm25s()

        self.options = {"k1": k1, "b": b, "method": method, "stopwords": stopwords}
        self.identity = f"bm25s {bm25s.__version__} method={method} k1={k1} b={b} stopwords={stopwords}"
        self.dimension = 0

    def index(self, corpus_texts: Sequence[str]) -> BM25Index:
        return BM25Index(corpus_texts, **self.options)
