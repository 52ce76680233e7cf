"""A dense model and BM25 in one vector per chunk: a hybrid that any single vector index serves.

A tuned fusion of a dense ranking and BM25 beats both on many corpora (on the shared 10-K set BM25
alone beats every dense model), but hosts such as DocsGPT search one vector index and cannot run
BM25 beside it. Pinecone's "sparse-dense vectors" answer this by putting both in one vector; this
module does it for a plain FAISS index:

* The lexical part of a document is its BM25 weight for every term of the vocabulary (Okapi BM25,
  Lucene's variant, with bm25s's tokenizer and defaults, :mod:`embtune_core.retrieval.lexical`): ``idf(t) * tf
  / (tf + k1 * (1 - b + b * dl / avgdl))``, idf and avgdl from the chunks the index holds. The lexical
  part of a query counts its terms. Their inner product *is* the query's BM25 score (tested against
  ``bm25s`` itself). Terms outside the vocabulary count for nothing, as in bm25s; above
  ``max_terms`` terms, the vocabulary is hashed into that many signed buckets (feature hashing,
  Weinberger et al., ICML 2009) and the score becomes an unbiased approximation (said in one line).
* The vectors are ``[sqrt(w) * dense ; sqrt((1 - w) / scale) * lexical ; pad]`` for a unit-length
  dense vector, so a query's inner product with a document is ``w * cosine + (1 - w) * BM25 / scale``:
  the linear fusion of Bruch et al. (TOIS 2023) with weight ``w`` chosen on held-out questions and
  ``scale`` the median best BM25 score of those questions.
* ``pad`` makes every document vector the same length ``M`` (the inner-product-to-L2 reduction of
  Bachrach et al., RecSys 2014: ``pad = sqrt(M^2 - |x|^2)``; queries get 0): with equal document
  norms, inner product, cosine and L2 distance rank documents identically, so the vectors work in an
  inner-product index, a cosine one, and DocsGPT's L2 ``FaissStore`` unchanged. ``M`` leaves
  :data:`HEADROOM` for chunks added later; a longer one is cut to ``M`` and counted in one line.

The vocabulary, document frequencies, average length, ``w``, ``scale`` and ``M`` are saved as
``lexical.json`` (no pickle) in a folder; :class:`SparseDenseEncoder` wraps any dense encoder with it.

Example::

    lexical = LexicalVectors.fit(index_texts)                       # vocabulary of the index
    encoder = SparseDenseEncoder(dense_encoder, lexical, weight=0.7, scale=12.0)
    documents = encoder.encode_documents(texts)                      # (n, dim + V + 1)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embtune_core.errors import InputError
from embtune_core.runtime import atomic

log = logging.getLogger(__name__)

FORMAT = "embtune-sparse-dense"
CONFIG_FILE = "lexical.json"
MAX_TERMS = 32768  # above this many distinct terms the vocabulary is hashed into this many buckets
HEADROOM = 1.25  # M is this times the longest fit document vector, so chunks added later usually fit


def tokenize(texts: Sequence[str], stopwords: str | None) -> list[list[str]]:
    """bm25s's tokenizer (lower-cased words of two or more characters, stop words removed), as strings."""
    from embtune_core.retrieval.lexical import _bm25s

    return _bm25s().tokenize(list(texts), stopwords=stopwords, return_ids=False, show_progress=False)


class LexicalVectors:
    """BM25 as vectors over a fixed vocabulary (module docstring)."""

    def __init__(self, vocabulary: dict[str, int], document_frequency: list[int], n_documents: int,
                 average_length: float, *, k1: float = 1.5, b: float = 0.75, stopwords: str | None = "en",
                 dims: int | None = None):
        self.vocabulary = vocabulary
        self.document_frequency = np.asarray(document_frequency, dtype=np.float64)
        self.n_documents = int(n_documents)
        self.average_length = float(average_length)
        self.k1, self.b, self.stopwords = float(k1), float(b), stopwords
        self.dims = int(dims or len(vocabulary))
        self.hashed = self.dims < len(vocabulary)
        n, df = self.n_documents, self.document_frequency
        self.idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))  # Lucene's idf, as bm25s computes it
        if self.hashed:
            self._bucket = np.empty(len(vocabulary), dtype=np.int64)
            self._sign = np.empty(len(vocabulary), dtype=np.float32)
            for term, index in vocabulary.items():
                digest = hashlib.blake2b(term.encode("utf-8"), digest_size=8).digest()
                self._bucket[index] = int.from_bytes(digest[:6], "little") % self.dims
                self._sign[index] = 1.0 if digest[6] & 1 else -1.0

    @classmethod
    def fit(cls, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75, stopwords: str | None = "en",
            max_terms: int = MAX_TERMS) -> LexicalVectors:
        """Vocabulary, document frequencies and average length of ``texts`` (the index's chunks)."""
        tokens = tokenize(texts, stopwords)
        frequency: Counter[str] = Counter()
        for document in tokens:
            frequency.update(set(document))
        vocabulary = {term: i for i, term in enumerate(sorted(frequency))}
        df = [frequency[term] for term in sorted(frequency)]
        average = sum(len(d) for d in tokens) / max(1, len(tokens))
        dims = min(len(vocabulary), max_terms) if vocabulary else 1
        if len(vocabulary) > max_terms:
            log.warning("lexical vectors: %d terms hashed into %d signed buckets; BM25 scores are approximated "
                        "(max_terms raises the limit)", len(vocabulary), max_terms)
        return cls(vocabulary, df, len(tokens), average, k1=k1, b=b, stopwords=stopwords, dims=dims)

    def _place(self, rows: list[dict[int, float]]) -> np.ndarray:
        out = np.zeros((len(rows), self.dims), dtype=np.float32)
        for row, weights in enumerate(rows):
            if not weights:
                continue
            terms = np.fromiter(weights.keys(), dtype=np.int64)
            values = np.fromiter(weights.values(), dtype=np.float64)
            if self.hashed:
                np.add.at(out[row], self._bucket[terms], (values * self._sign[terms]).astype(np.float32))
            else:
                out[row, terms] = values
        return out

    def documents(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, dims)``: each text's BM25 weight per vocabulary term."""
        rows = []
        for document in tokenize(texts, self.stopwords):
            counts = Counter(t for t in document if t in self.vocabulary)
            length = len(document)
            norm = self.k1 * (1.0 - self.b + self.b * length / self.average_length) if self.average_length else 0.0
            rows.append({self.vocabulary[t]: self.idf[self.vocabulary[t]] * tf / (tf + norm) for t, tf in counts.items()})
        return self._place(rows)

    def queries(self, texts: Sequence[str]) -> np.ndarray:
        """``(n, dims)``: how often each vocabulary term occurs in each query (bm25s sums over query tokens)."""
        rows = [dict(Counter(self.vocabulary[t] for t in query if t in self.vocabulary))
                for query in tokenize(texts, self.stopwords)]
        return self._place(rows)

    def to_json(self) -> dict[str, Any]:
        terms = sorted(self.vocabulary, key=self.vocabulary.__getitem__)
        return {"terms": terms, "document_frequency": [int(x) for x in self.document_frequency],
                "n_documents": self.n_documents, "average_length": self.average_length, "k1": self.k1, "b": self.b,
                "stopwords": self.stopwords, "dims": self.dims}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LexicalVectors:
        terms = data["terms"]
        return cls({t: i for i, t in enumerate(terms)}, data["document_frequency"], data["n_documents"],
                   data["average_length"], k1=data["k1"], b=data["b"], stopwords=data["stopwords"], dims=data["dims"])


class SparseDenseEncoder:
    """A dense encoder and :class:`LexicalVectors` in one vector (module docstring). ``base`` is the dense
    encoder, whose vectors the embedding cache keeps; :meth:`compose` joins cached dense vectors with the
    lexical part."""

    def __init__(self, base: Any, lexical: LexicalVectors, *, weight: float, scale: float, norm: float | None = None,
                 path: Path | None = None):
        if not 0.0 < weight < 1.0 or scale <= 0:
            raise InputError(f"weight must be in (0, 1) and scale > 0, got {weight}, {scale}", path=path,
                             field="weight")
        self.base, self.lexical_vectors = base, lexical
        self.weight, self.scale, self.norm, self.path = float(weight), float(scale), norm, path
        self.clipped = 0

    def __getattr__(self, name: str) -> Any:
        # token limits, the model, prompts...: the dense encoder's (never reached for our own attributes)
        if name.startswith("__") or "base" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["base"], name)

    @property
    def dimension(self) -> int:
        return int(self.base.dimension) + self.lexical_vectors.dims + 1

    @property
    def identity(self) -> str:
        digest = hashlib.sha256(json.dumps(self.lexical_vectors.to_json(), sort_keys=True).encode()).hexdigest()[:12]
        return (f"{self.base.identity} | sparse-dense BM25 {digest} w={self.weight:g} scale={self.scale:g} "
                f"M={self.norm:g}" if self.norm else f"{self.base.identity} | sparse-dense BM25 {digest}")

    def _parts(self, dense: np.ndarray, lexical: np.ndarray) -> np.ndarray:
        dense = np.asarray(dense, dtype=np.float32)
        norms = np.linalg.norm(dense, axis=1, keepdims=True)
        dense = dense / np.where(norms > 0, norms, 1.0)
        return np.concatenate([math.sqrt(self.weight) * dense,
                               math.sqrt((1.0 - self.weight) / self.scale) * lexical], axis=1)

    def compose_documents(self, dense: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Document vectors from the dense encoder's vectors of ``texts``; every row of length ``norm``."""
        body = self._parts(dense, self.lexical_vectors.documents(texts))
        squared = (body.astype(np.float64) ** 2).sum(axis=1)
        if self.norm is None:
            self.norm = float(math.sqrt(squared.max(initial=1.0) * HEADROOM))
        long = squared > self.norm ** 2
        if long.any():
            self.clipped += int(long.sum())
            log.warning("sparse-dense: %d document(s) longer than the index's norm %.3f (chunks much longer than "
                        "those it was fit on); their padding is 0, so an L2 index ranks them a little lower",
                        int(long.sum()), self.norm)
        pad = np.sqrt(np.clip(self.norm ** 2 - squared, 0.0, None)).astype(np.float32)[:, None]
        return np.concatenate([body, pad], axis=1)

    def compose_queries(self, dense: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        """Query vectors (the same factors, so the inner product is ``w * cosine + (1 - w) * BM25 / scale``)."""
        body = self._parts(dense, self.lexical_vectors.queries(texts))
        return np.concatenate([body, np.zeros((len(body), 1), np.float32)], axis=1)

    def encode_documents(self, texts: Sequence[str]) -> np.ndarray:
        return self.compose_documents(self.base.encode_documents(list(texts)), texts)

    def encode_queries(self, texts: Sequence[str]) -> np.ndarray:
        return self.compose_queries(self.base.encode_queries(list(texts)), texts)

    def save(self, directory: str | Path) -> Path:
        directory = Path(directory)
        with atomic.atomic_directory(directory) as tmp:
            (tmp / CONFIG_FILE).write_text(json.dumps({"format": FORMAT, "format_version": 1, "weight": self.weight,
                                                       "scale": self.scale, "norm": self.norm,
                                                       "dense_identity": str(self.base.identity),
                                                       "lexical": self.lexical_vectors.to_json()}) + "\n", encoding="utf-8")
        self.path = directory
        return directory


def load_sparse_dense(directory: str | Path, base: Any) -> SparseDenseEncoder:
    """The :class:`SparseDenseEncoder` saved in ``directory``, over the dense encoder ``base``."""
    path = Path(directory) / CONFIG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"no {CONFIG_FILE}: not a sparse-dense folder", path=directory) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"unreadable JSON ({exc})", path=path) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"not an embtune sparse-dense file (format is not {FORMAT!r})", path=path, field="format")
    try:
        lexical = LexicalVectors.from_json(data["lexical"])
        return SparseDenseEncoder(base, lexical, weight=float(data["weight"]), scale=float(data["scale"]),
                                  norm=float(data["norm"]) if data.get("norm") else None, path=Path(directory))
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"missing or malformed field ({exc})", path=path, field="lexical") from None


WEIGHT_GRID = (0.5, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9)


def fit_sparse_dense(base: Any, corpus_texts: Sequence[str], dense_queries: np.ndarray, dense_corpus: np.ndarray,
                     query_texts: Sequence[str], relevant: Sequence[np.ndarray] | None = None, *,
                     groups: np.ndarray | None = None, weights: Sequence[float] = WEIGHT_GRID,
                     score: Any = None) -> tuple[SparseDenseEncoder, dict[str, Any]]:
    """Fit the vocabulary on ``corpus_texts`` (the index's chunks) and choose ``weight`` on held-out
    questions (``query_texts`` with ``relevant`` corpus positions; dense vectors given, aligned), by
    NDCG@10 of the exact inner product (``score(ranked positions) -> float`` when given: the evaluation's
    own scoring); ``scale`` is those questions' median best BM25 score. Ties keep the earlier weight of
    ``weights`` (0.5 first). Returns the encoder and a record of the choice."""
    from embtune_core.scoring import metrics as M

    lexical = LexicalVectors.fit(corpus_texts)
    bm25 = lexical.queries(query_texts) @ lexical.documents(corpus_texts).T
    best_bm25 = bm25.max(axis=1, initial=0.0)
    positive = best_bm25[best_bm25 > 0]
    scale = float(np.median(positive)) if len(positive) else 1.0
    unit = lambda x: x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    cosine = unit(np.asarray(dense_queries, np.float64)) @ unit(np.asarray(dense_corpus, np.float64)).T
    if score is None:  # binary NDCG@10 against ``relevant``
        n_relevant = np.array([max(1, len(r)) for r in relevant])

        def score(order: np.ndarray) -> float:
            hits = M.hit_matrix(order[:, :10], list(relevant), groups=groups)
            return float(M.ndcg(hits, n_relevant, 10).mean())

    scores: dict[str, float] = {}
    best = None
    for weight in weights:
        value = score(M.rank_scores(weight * cosine + (1.0 - weight) * bm25 / scale, 11))
        scores[repr(float(weight))] = round(value, 6)
        if best is None or value > best[0] + 1e-12:
            best = (value, float(weight))
    encoder = SparseDenseEncoder(base, lexical, weight=best[1], scale=scale)
    encoder.compose_documents(dense_corpus, corpus_texts)  # fixes the document norm M on the index's chunks
    return encoder, {"weight": best[1], "scale": scale, "ndcg@10": best[0], "weights_tried": scores,
                     "terms": len(lexical.vocabulary), "dims": encoder.dimension, "hashed": lexical.hashed}
