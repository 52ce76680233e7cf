"""Evaluate retrieval systems on a QA dataset: exact search, IR metrics per Matryoshka dimension, statistics.

Three layers, each usable on its own:

1. :func:`evaluate_embeddings` takes query and corpus embedding arrays and a
   :class:`RetrievalTask` (the dataset's queries, corpus and relevance as positions), searches the
   whole corpus exactly (:func:`embtune_core.retrieval.search.exact_search`, cosine similarity) at every
   requested dimension (truncate, then renormalise) and returns per-query scores.
2. :func:`evaluate_systems` embeds the dataset with each :class:`System` (an encoder, optionally
   with a query adapter applied to query embeddings only) through the embedding cache, calls
   layer 1 and adds bootstrap confidence intervals and paired significance of every system
   against the first. The result is an :class:`Evaluation`, which :mod:`embtune_core.reporting.report`
   writes as JSON, Markdown and HTML.
3. :func:`training_evaluator` wraps layer 1 as a sentence-transformers evaluator for
   ``SentenceTransformerTrainer``, so training logs the same metrics.

Conventions (each one applied is listed in the report's ``notes``):

* Queries without a relevant document in the corpus are left out, as sentence-transformers'
  ``InformationRetrievalEvaluator`` does; how many is logged and recorded.
* Corpus entries with exactly the same text are one document (``same_text_is_same_document``,
  default on; cf. mteb #4626): a model cannot tell copies apart, so whichever copy ranks first
  answers a query relevant to any of them, and later copies count as misses. Off, the copy listed
  later in the corpus loses every tie and perfect retrieval scores MRR 0.5.
* Texts longer than a local model's token limit are cut by the model; the counts per system are
  logged and recorded (:mod:`embtune_core.encoders.token_limits`).
* The corpus searched is the dataset's own unless ``extra_corpus`` adds the rest of the index
  (e.g. the training chunks); the report names which (:attr:`RetrievalTask.corpus_label`).
* BM25 and hybrid (BM25 + dense, reciprocal rank fusion) systems are scored like the others
  (:mod:`embtune_core.retrieval.lexical`); BM25 has no dimension, so its one ranking is repeated at each.

Example::

    from embtune_core.data.dataset import QADataset
    from embtune_core.scoring.evaluation import RetrievalTask, evaluate_embeddings

    dataset = QADataset.load("val_dataset.json")
    task = RetrievalTask.from_dataset(dataset)
    results = evaluate_embeddings(query_emb, corpus_emb, task, dims=[384, 128])
    results[128].means()["ndcg@10"]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from embtune_core.data.dataset import QADataset
from embtune_core.encoders.encoder_identity import identity_of
from embtune_core.errors import ConfigError, DatasetError, InputError
from embtune_core.retrieval.search import exact_search, normalize
from embtune_core.scoring import metrics as M
from embtune_core.scoring import stats

log = logging.getLogger(__name__)

DEFAULT_HIT_RATE_AT = (5,)  # LlamaIndex's guides report hit rate and MRR at top 5


# --- layer 1: arrays in, per-query scores out ---------------------------------------------------------
# Bumped when a figure's definition changes (2: graded qrels as pytrec_eval, BM25 retrieves only matches):
# part of the pipeline's evaluate stage key, so earlier runs' reports are recomputed, not reused.
SCORING_VERSION = 2
SENTENCE_TRANSFORMERS = "sentence-transformers"
PYTREC_EVAL = "pytrec_eval"

SCORING_NOTES = {
    SENTENCE_TRANSFORMERS: (
        "scoring: sentence-transformers' InformationRetrievalEvaluator conventions (LlamaIndex JSON and pairs "
        "files): relevance is binary (relevant_docs); MAP@k divides by min(k, relevant documents); queries "
        "without a relevant document in the corpus are left out; equal scores rank by corpus position"),
    PYTREC_EVAL: (
        "scoring: pytrec_eval / trec_eval conventions, as BEIR, MTEB and pyserini report (graded qrels): NDCG "
        "uses each document's grade as its gain; the binary measures (accuracy, precision, recall, MRR, MAP) "
        f"count grades >= {M.RELEVANCE_LEVEL} as relevant; recall and MAP@k divide by every relevant judgement; "
        "every judged query is averaged in; equal scores rank by document id, descending, as trec_eval"),
}


@dataclass
class RetrievalTask:
    """A dataset as arrays: the evaluated queries, the whole corpus, relevance as corpus positions.

    ``scoring`` is :data:`SENTENCE_TRANSFORMERS` (LlamaIndex JSON, pairs: binary ``relevant_docs``) or
    :data:`PYTREC_EVAL` (graded judgements, a dataset holding ``qrels``: BEIR folders). With graded
    judgements ``judged``/``grades`` hold each query's positive grades by corpus position, ``missing``
    the positive grades of judged documents absent from the corpus (they count in recall, MAP and the
    ideal NDCG, and can never be retrieved), and ``exclude`` the position of the document that has the
    query's own id (-1 for none), which BEIR removes from the ranking (``ignore_identical_ids``).
    """

    query_ids: list[str]
    query_texts: list[str]
    corpus_ids: list[str]
    corpus_texts: list[str]
    relevant: list[np.ndarray]  # corpus positions (group positions with ``groups``) relevant to each query
    groups: np.ndarray | None = None  # corpus position -> first position with the same text, or None
    skipped_queries: int = 0  # queries of the dataset left out: no relevant document in the corpus
    duplicate_texts: int = 0  # corpus entries whose text repeats an earlier entry's

    extra_corpus: int = 0  # entries searched beyond the dataset's own corpus (the rest of the index)
    scoring: str = SENTENCE_TRANSFORMERS
    judged: list[np.ndarray] | None = None  # graded: corpus positions with a positive grade, per query
    grades: list[np.ndarray] | None = None  # graded: their grades
    missing: list[np.ndarray] | None = None  # graded: positive grades of judged documents not in the corpus
    exclude: np.ndarray | None = None  # graded: position of the document with the query's own id, or -1
    same_text_is_same_document: bool = True

    @classmethod
    def from_dataset(cls, dataset: QADataset, *, path: str = "<dataset>",
                     same_text_is_same_document: bool | None = None,
                     extra_corpus: dict[str, str] | None = None) -> RetrievalTask:
        """``extra_corpus``: more documents to search (e.g. the training chunks, so the search runs
        over the whole index a deployment holds); ids already in the dataset's corpus are ignored.

        ``same_text_is_same_document`` (None: the scoring's default) collapses copies of one text into
        one document: on by default for binary relevance, off for graded judgements (pytrec_eval scores
        each document id as its own)."""
        qrels = dataset.extras.get("qrels")
        graded = isinstance(qrels, dict)
        if same_text_is_same_document is None:
            same_text_is_same_document = not graded
        corpus_ids = list(dataset.corpus)
        own = set(corpus_ids)
        extra = [(cid, text) for cid, text in (extra_corpus or {}).items() if cid not in own]
        corpus_ids += [cid for cid, _ in extra]
        texts = {**dataset.corpus, **dict(extra)}
        if graded:
            # trec_eval breaks equal scores by document id, descending: with the corpus in that order the
            # search's rule (equal scores: smaller position first) is the same rule.
            corpus_ids.sort(reverse=True)
        corpus_texts = [texts[c] for c in corpus_ids]
        position = {cid: i for i, cid in enumerate(corpus_ids)}
        first_with_text: dict[str, int] = {}
        group = np.asarray([first_with_text.setdefault(t, i) for i, t in enumerate(corpus_texts)], dtype=np.int64)
        duplicates = int((group != np.arange(len(group))).sum())
        groups = group if same_text_is_same_document and duplicates else None
        if graded:
            return cls._graded(dataset, qrels, corpus_ids, corpus_texts, position, groups, duplicates, len(extra),
                               same_text_is_same_document, path)
        query_ids, relevant = [], []
        for qid in dataset.queries:  # dataset order, like sentence-transformers
            positions = {position[c] for c in dataset.relevant_docs.get(qid, ()) if c in position}
            if groups is not None:
                positions = {int(groups[p]) for p in positions}
            if positions:
                query_ids.append(qid)
                relevant.append(np.asarray(sorted(positions), dtype=np.int64))
        if not query_ids:
            raise DatasetError("no query has a relevant document in the corpus; nothing to evaluate",
                               path=path, field="relevant_docs")
        return cls(query_ids, [dataset.queries[q] for q in query_ids], corpus_ids, corpus_texts, relevant,
                   groups=groups, skipped_queries=len(dataset.queries) - len(query_ids), duplicate_texts=duplicates,
                   extra_corpus=len(extra), same_text_is_same_document=same_text_is_same_document)

    @classmethod
    def _graded(cls, dataset: QADataset, qrels: dict[str, dict[str, int]], corpus_ids: list[str],
                corpus_texts: list[str], position: dict[str, int], groups: np.ndarray | None, duplicates: int,
                extra: int, same_text_is_same_document: bool, path: str) -> RetrievalTask:
        """Every query that has judgements and a text is evaluated, as pytrec_eval does (BEIR keeps the
        queries of its qrels); positive grades by position, grades of missing documents apart."""
        query_ids, relevant, judged, grades, missing, exclude = [], [], [], [], [], []
        for qid in dataset.queries:
            per_doc = qrels.get(qid)
            if not per_doc:
                continue
            by_position: dict[int, float] = {}
            lost = []
            for cid, grade in per_doc.items():
                if grade <= 0:
                    continue
                if cid in position:
                    p = int(groups[position[cid]]) if groups is not None else position[cid]
                    by_position[p] = max(by_position.get(p, 0), grade)  # copies: one document, its best grade
                else:
                    lost.append(grade)
            query_ids.append(qid)
            ordered = sorted(by_position)
            judged.append(np.asarray(ordered, dtype=np.int64))
            grades.append(np.asarray([by_position[p] for p in ordered], dtype=np.float64))
            relevant.append(np.asarray([p for p in ordered if by_position[p] >= M.RELEVANCE_LEVEL], dtype=np.int64))
            missing.append(np.asarray(lost, dtype=np.float64))
            exclude.append(position.get(qid, -1))
        if not query_ids:
            raise DatasetError("no query has a judgement; nothing to evaluate", path=path, field="qrels")
        return cls(query_ids, [dataset.queries[q] for q in query_ids], corpus_ids, corpus_texts, relevant,
                   groups=groups, skipped_queries=len(dataset.queries) - len(query_ids), duplicate_texts=duplicates,
                   extra_corpus=extra, scoring=PYTREC_EVAL, judged=judged, grades=grades, missing=missing,
                   exclude=np.asarray(exclude, dtype=np.int64), same_text_is_same_document=same_text_is_same_document)

    @property
    def graded(self) -> bool:
        return self.scoring == PYTREC_EVAL

    @property
    def corpus_label(self) -> str:
        """Which corpus was searched, in words, for the report."""
        n = len(self.corpus_ids)
        if not self.extra_corpus:
            return f"the evaluated dataset's own corpus ({n} documents)"
        return (f"the whole index ({n} documents: the evaluated dataset's {n - self.extra_corpus} plus "
                f"{self.extra_corpus} more, e.g. the training chunks)")

    def notes(self, *, same_text_is_same_document: bool | None = None) -> list[str]:
        """The conventions this task applies and what the data made of them, one line each; the first
        line always names the scoring convention."""
        if same_text_is_same_document is None:
            same_text_is_same_document = self.same_text_is_same_document
        notes = [SCORING_NOTES[self.scoring]]
        if self.skipped_queries:
            why = ("have no judgement in the qrels" if self.graded else
                   "have no relevant document in the corpus")
            notes.append(f"{self.skipped_queries} of {self.skipped_queries + len(self.query_ids)} queries {why} and "
                         "are left out of every metric"
                         + ("" if self.graded else " (as sentence-transformers does)"))
        if self.graded:
            unjudged = sum(1 for r, m in zip(self.relevant, self.missing) if not len(r) and not len(m))
            if unjudged:
                notes.append(f"{unjudged} of {len(self.query_ids)} queries have no judgement of grade >= "
                             f"{M.RELEVANCE_LEVEL}: they score 0 on every metric and are averaged in, as pytrec_eval "
                             "and BEIR do")
            lost = sum(len(m) for m in self.missing)
            if lost:
                queries = sum(1 for m in self.missing if len(m))
                notes.append(f"{lost} relevant judgements ({queries} queries) name documents missing from the corpus: "
                             "kept, as BEIR keeps them (they count in recall, MAP and the ideal NDCG and can never be "
                             "retrieved)")
            own = int((self.exclude >= 0).sum())
            if own:
                notes.append(f"{own} queries share their id with a corpus document; that document is left out of "
                             "their ranking, as BEIR's evaluation does by default (ignore_identical_ids)")
        if self.duplicate_texts:
            if same_text_is_same_document:
                notes.append(f"{self.duplicate_texts} corpus entries repeat the exact text of another; copies count as "
                             "one document (a hit on any copy of a relevant text is a hit; later copies are misses)")
            else:
                order = "document id, descending" if self.graded else "corpus order"
                notes.append(f"{self.duplicate_texts} corpus entries repeat the exact text of another; copies are "
                             f"scored as different documents, so ties between them are decided by {order}")
        return notes

    @property
    def n_relevant(self) -> np.ndarray:
        """Relevant judgements per query (graded: documents missing from the corpus included)."""
        if self.graded:
            return np.asarray([int((g >= M.RELEVANCE_LEVEL).sum() + (m >= M.RELEVANCE_LEVEL).sum())
                               for g, m in zip(self.grades, self.missing)], dtype=np.int64)
        return np.asarray([len(r) for r in self.relevant], dtype=np.int64)

    @property
    def ideal_gains(self) -> list[np.ndarray]:
        """Graded: every positive grade of each query, missing documents included (NDCG's ideal)."""
        return [np.concatenate([g, m]) for g, m in zip(self.grades, self.missing)]

    def search_depth(self, depth: int) -> int:
        """How deep to search so that ``depth`` documents remain once a query's own id is left out."""
        return depth + 1 if self.exclude is not None and bool((self.exclude >= 0).any()) else depth

    def without_own_ids(self, indices: np.ndarray, scores: np.ndarray | None, depth: int
                        ) -> tuple[np.ndarray, np.ndarray | None]:
        """The rankings with each query's own-id document removed (BEIR's ``ignore_identical_ids``), cut
        to ``depth``."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.exclude is None or not bool((self.exclude >= 0).any()):
            return indices[:, :depth], None if scores is None else np.asarray(scores)[:, :depth]
        keep = indices != self.exclude[:, None]
        order = np.argsort(~keep, axis=1, kind="stable")  # kept entries first, in rank order
        indices = np.where(np.take_along_axis(keep, order, axis=1), np.take_along_axis(indices, order, axis=1), -1)
        if scores is not None:
            scores = np.where(indices >= 0, np.take_along_axis(np.asarray(scores), order, axis=1), 0.0)
            scores = scores[:, :depth]
        return indices[:, :depth], scores


@dataclass
class MetricSettings:
    """Which cut-offs to compute: sentence-transformers' IR defaults plus LlamaIndex's hit rate/MRR@k."""

    hit_rate_at: tuple[int, ...] = DEFAULT_HIT_RATE_AT
    accuracy_at: tuple[int, ...] = M.ACCURACY_AT
    precision_recall_at: tuple[int, ...] = M.PRECISION_RECALL_AT
    mrr_at: tuple[int, ...] = M.MRR_AT
    ndcg_at: tuple[int, ...] = M.NDCG_AT
    map_at: tuple[int, ...] = M.MAP_AT

    @property
    def depth(self) -> int:
        return max(max(self.hit_rate_at, default=1),
                   M.max_depth(accuracy_at=self.accuracy_at, precision_recall_at=self.precision_recall_at,
                               mrr_at=self.mrr_at, ndcg_at=self.ndcg_at, map_at=self.map_at))

    def compute(self, hits: np.ndarray, n_relevant: np.ndarray) -> dict[str, np.ndarray]:
        """Binary relevance (sentence-transformers' conventions)."""
        out: dict[str, np.ndarray] = {}
        for k in self.hit_rate_at:
            out.update(M.hit_rate_mrr(hits, k))
        out.update(M.ir_metrics(hits, n_relevant, accuracy_at=self.accuracy_at,
                                precision_recall_at=self.precision_recall_at, mrr_at=self.mrr_at,
                                ndcg_at=self.ndcg_at, map_at=self.map_at))
        return out

    def compute_graded(self, gains: np.ndarray, n_relevant: np.ndarray, ideal_gains: Sequence[np.ndarray]
                       ) -> dict[str, np.ndarray]:
        """Graded judgements (pytrec_eval's conventions, :func:`embtune_core.scoring.metrics.graded_metrics`)."""
        hits = gains >= M.RELEVANCE_LEVEL
        out: dict[str, np.ndarray] = {}
        for k in self.hit_rate_at:
            out.update(M.hit_rate_mrr(hits, k))
        out.update(M.graded_metrics(gains, n_relevant, ideal_gains, accuracy_at=self.accuracy_at,
                                    precision_recall_at=self.precision_recall_at, mrr_at=self.mrr_at,
                                    ndcg_at=self.ndcg_at, map_at=self.map_at))
        return out


@dataclass
class DimensionResult:
    """Per-query scores of one system at one embedding dimension."""

    dim: int
    per_query: dict[str, np.ndarray]
    first_relevant_rank: np.ndarray  # 1-based; 0 = not within the ranking depth
    ranking: M.Ranking

    def means(self) -> dict[str, float]:
        return M.mean_scores(self.per_query)


def truncate(embeddings: np.ndarray, dim: int) -> np.ndarray:
    """Matryoshka truncation: the first ``dim`` components, renormalised to unit length."""
    return normalize(np.asarray(embeddings, dtype=np.float32)[:, :dim])


def check_dims(dims: Iterable[int] | None, full_dim: int, *, source: str = "--dims") -> list[int]:
    """``dims`` sorted descending and validated against the embedding width; default: the full width."""
    if not dims:
        return [full_dim]
    out = sorted({int(d) for d in dims}, reverse=True)
    bad = [d for d in out if d <= 0 or d > full_dim]
    if bad:
        raise ConfigError(f"dimension {bad[0]} is outside 1..{full_dim} (the embedding width)", field=source)
    return out


def evaluate_embeddings(query_emb: np.ndarray, corpus_emb: np.ndarray, task: RetrievalTask, *,
                        dims: Iterable[int] | None = None, settings: MetricSettings | None = None,
                        use_gpu: bool | None = None, owner: np.ndarray | None = None) -> dict[int, DimensionResult]:
    """Rank the whole corpus for every query at each dimension and score the rankings.

    ``query_emb`` (n_queries, d) is aligned with ``task.query_ids``, ``corpus_emb`` (n_corpus, d)
    with ``task.corpus_ids`` -- or, with ``owner``, (n_windows, d) window vectors, ``owner[i]`` the
    corpus position of window ``i``, a document scored by its best window (MaxP,
    :mod:`embtune_core.encoders.long_documents`). Similarity is cosine (both sides renormalised after truncation).
    """
    settings = settings or MetricSettings()
    query_emb, corpus_emb = np.asarray(query_emb), np.asarray(corpus_emb)
    rows = len(owner) if owner is not None else len(task.corpus_ids)
    if query_emb.shape[0] != len(task.query_ids) or corpus_emb.shape[0] != rows:
        raise ValueError(f"embeddings {query_emb.shape}/{corpus_emb.shape} do not match "
                         f"{len(task.query_ids)} queries/{rows} corpus rows")
    if query_emb.shape[1] != corpus_emb.shape[1]:
        raise ValueError(f"query width {query_emb.shape[1]} != corpus width {corpus_emb.shape[1]}")
    results: dict[int, DimensionResult] = {}
    for dim in check_dims(dims, query_emb.shape[1]):
        scores, indices = dense_search(query_emb, corpus_emb, dim, task.search_depth(settings.depth), owner=owner,
                                       use_gpu=use_gpu)
        results[dim] = score_ranking(indices, scores, task, dim, settings)
    return results


def dense_search(query_emb: np.ndarray, corpus_emb: np.ndarray, dim: int, depth: int, *,
                 owner: np.ndarray | None = None, use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``depth`` corpus positions (and cosines) per query at width ``dim``; with ``owner``,
    ``corpus_emb`` holds window vectors and each document scores its best window (exact MaxP)."""
    queries, corpus = truncate(query_emb, dim), truncate(corpus_emb, dim)
    if owner is None:
        return exact_search(queries, corpus, depth, use_gpu=use_gpu)
    from embtune_core.encoders.long_documents import max_pool_scores, windows_to_search

    depth = min(depth, int(owner.max()) + 1 if len(owner) else 0)
    scores, indices = exact_search(queries, corpus, windows_to_search(owner, depth), use_gpu=use_gpu)
    return max_pool_scores(scores, indices, owner, depth)


def score_ranking(indices: np.ndarray, scores: np.ndarray | None, task: RetrievalTask, dim: int,
                  settings: MetricSettings) -> DimensionResult:
    """Per-query metrics of a ranking (corpus positions, best first) of ``task``'s queries, in the task's
    scoring convention (binary, or graded as pytrec_eval); a query's own-id document is left out first
    for graded judgements (BEIR's ``ignore_identical_ids``)."""
    indices, scores = task.without_own_ids(indices, scores, settings.depth)
    ranking = M.Ranking(task.query_ids, task.corpus_ids, indices, scores)
    if task.graded:
        ranked = M.collapse_groups(ranking.indices, task.groups) if task.groups is not None else ranking.indices
        gains = M.judged_values(ranked, task.judged, task.grades)
        per_query = settings.compute_graded(gains, task.n_relevant, task.ideal_gains)
        hits = gains >= M.RELEVANCE_LEVEL
    else:
        hits = M.hit_matrix(ranking.indices, task.relevant, groups=task.groups)
        per_query = settings.compute(hits, task.n_relevant)
    return DimensionResult(dim, per_query, M.first_relevant_rank(hits), ranking)


def evaluate_lexical(index: Any, task: RetrievalTask, dims: Sequence[int], settings: MetricSettings
                     ) -> dict[int, DimensionResult]:
    """BM25 (:class:`embtune_core.retrieval.lexical.BM25Index`) on ``task``: one ranking, repeated at each of
    ``dims`` so it pairs with dense systems at every dimension (it uses no embeddings)."""
    scores, indices = index.search(task.query_texts, task.search_depth(settings.depth))
    result = score_ranking(indices, scores, task, dims[0], settings)
    return {dim: DimensionResult(dim, result.per_query, result.first_relevant_rank, result.ranking) for dim in dims}


def evaluate_hybrid(query_emb: np.ndarray, corpus_emb: np.ndarray, index: Any, task: RetrievalTask,
                    dims: Sequence[int], settings: MetricSettings, use_gpu: bool | None = None,
                    owner: np.ndarray | None = None, fusion: Any = None) -> dict[int, DimensionResult]:
    """Dense ranking at each dimension fused with BM25's (:func:`embtune_core.retrieval.fusion.fuse`; default the
    untuned reciprocal rank fusion, k = 60, Cormack et al. 2009), each side's top ``fusion.depth``."""
    from embtune_core.retrieval.fusion import Fusion, fuse

    fusion = fusion or Fusion()
    depth = min(len(task.corpus_ids), fusion.depth)
    bm25_scores, bm25_indices = index.search(task.query_texts, depth)
    results = {}
    for dim in dims:
        dense_scores, dense = dense_search(query_emb, corpus_emb, dim, depth, owner=owner, use_gpu=use_gpu)
        scores, indices = fuse(dense_scores, dense, bm25_scores, bm25_indices, fusion,
                               top=task.search_depth(settings.depth))
        results[dim] = score_ranking(indices, scores, task, dim, settings)
    return results


# --- layer 2: systems (encoder [+ query adapter]) through the embedding cache --------------------------
@dataclass
class System:
    """One retrieval system: an encoder, optionally with a query adapter (queries only).

    ``spec`` is how the user wrote it (for the report); ``encoder`` follows the encoder protocol
    (``identity``, ``dimension``, ``encode_queries``, ``encode_documents``); ``adapter`` is a
    :class:`~embtune_core.adapters.adapter_io.SavedAdapter` (from ``load_adapter``) or a bare
    ``torch.nn.Module`` mapping (n, dimension) query embeddings to (n, dimension).
    """

    name: str
    encoder: Any
    adapter: Any = None
    spec: str = ""
    # This dense system fused with BM25: a :class:`~embtune_core.retrieval.fusion.Fusion`, or its spec ("rrf": untuned)
    fusion: Any = None
    # A :class:`~embtune_core.retrieval.index_tuning.TunedIndex`: document vectors tuned without re-embedding (NUDGE)
    index_tuning: Any = None

    def __post_init__(self) -> None:
        if isinstance(self.fusion, str):
            from embtune_core.retrieval.fusion import Fusion

            self.fusion = Fusion.parse(self.fusion)

    @property
    def lexical(self) -> bool:
        """BM25 alone (``encoder`` is :class:`embtune_core.retrieval.lexical.BM25Spec`): no embeddings."""
        return bool(getattr(self.encoder, "lexical", False))

    @property
    def identity(self) -> str:
        identity = str(getattr(self.encoder, "identity", type(self.encoder).__name__))
        if self.fusion:
            identity = f"{self.fusion.short()} of BM25 and {identity}"
        if self.adapter is not None:
            identity += f" | adapter {getattr(self.adapter, 'fingerprint', None) or type(self.adapter).__name__}"
        if self.index_tuning is not None:
            identity += f" | index tuning {self.index_tuning.fingerprint}"
        return identity


def apply_adapter(adapter: Any, query_emb: np.ndarray, *, batch_size: int = 8192) -> np.ndarray:
    """Query embeddings through an adapter: a :class:`~embtune_core.adapters.adapter_io.SavedAdapter`
    (its ``transform``) or a bare ``torch.nn.Module`` (run in batches without gradients)."""
    if hasattr(adapter, "transform"):
        return np.concatenate([adapter.transform(query_emb[start:start + batch_size])
                               for start in range(0, max(1, query_emb.shape[0]), batch_size)])
    import torch

    was_training = adapter.training
    adapter.eval()
    try:
        parameter = next(adapter.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        dtype = parameter.dtype if parameter is not None else torch.float32
        out = []
        with torch.inference_mode():
            for start in range(0, query_emb.shape[0], batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(query_emb[start:start + batch_size]))
                out.append(adapter(batch.to(device=device, dtype=dtype)).float().cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, query_emb.shape[1]), np.float32)
    finally:
        adapter.train(was_training)


def embed_system(system: System, task: RetrievalTask, *, cache: Any = None
                 ) -> tuple[np.ndarray, np.ndarray, Any]:
    """Query and corpus embeddings of ``task`` for ``system``, served from the embedding cache, and the
    corpus's :class:`~embtune_core.encoders.long_documents.Windows` when the encoder reads documents as windows
    (else None).

    The adapter is applied after the cache, so one cached base embedding serves every adapter. With
    ``document_windows`` the windows are cached under the plain encoder (a window that is a whole
    document shares its entry); ``"mean"`` pools them into one row per document, ``"max"`` returns
    one row per window (``windows.owner`` maps each to its document).
    """
    if cache is None:
        from embtune_core.encoders.embedding_cache import EmbeddingCache

        cache = EmbeddingCache()
    from embtune_core.encoders.long_documents import WindowedEncoder
    from embtune_core.retrieval.sparse_dense import SparseDenseEncoder

    encoder, windows = system.encoder, None
    if isinstance(encoder, SparseDenseEncoder):  # the dense part through the cache, BM25's joined at the end
        encoder = encoder.base
    mode = encoder.mode if isinstance(encoder, WindowedEncoder) else None
    if mode is not None:
        windows = encoder.windows(task.corpus_texts)
        encoder = encoder.base
    query_emb = np.asarray(cache.embed(encoder, task.query_texts, kind="query"), dtype=np.float32)
    corpus_texts = windows.texts if windows is not None else task.corpus_texts
    corpus_emb = np.asarray(cache.embed(encoder, corpus_texts, kind="document"), dtype=np.float32)
    if mode == "mean":
        from embtune_core.encoders.long_documents import pool

        corpus_emb = pool(corpus_emb, windows)
    query_emb, corpus_emb = finish_vectors(system, query_emb, corpus_emb, task.query_texts, task.corpus_texts,
                                           task.corpus_ids, windowed_max=mode == "max")
    for kind, emb in (("query", query_emb), ("document", corpus_emb)):
        if not np.isfinite(emb).all():  # a diverged model or adapter: the search would rank noise
            rows = int((~np.isfinite(emb)).any(axis=1).sum())
            raise InputError(f"system '{system.name}' gives {rows} of {len(emb)} {kind} vectors with NaN or infinite "
                             "values (a diverged model or adapter?); nothing to rank", field=system.spec or system.name)
    return query_emb, corpus_emb, windows


def finish_vectors(system: System, query_emb: np.ndarray | None, corpus_emb: np.ndarray | None,
                   query_texts: Sequence[str] = (), corpus_texts: Sequence[str] = (),
                   corpus_ids: Sequence[str] | None = None, *, windowed_max: bool = False
                   ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """A system's final vectors from its dense encoder's (either side may be None): the index tuning moves
    the documents it tuned (by id, else by text), the adapter maps the queries, and a sparse-dense
    encoder joins BM25's part. The one place these compose, for evaluation and for serving."""
    from embtune_core.retrieval.sparse_dense import SparseDenseEncoder

    if system.index_tuning is not None and corpus_emb is not None:
        if windowed_max:
            raise ConfigError(f"system '{system.name}': an index tuning holds one vector per document; it cannot "
                              "tune a window index (document_windows = max); use mean or off", field="--system")
        corpus_emb, _ = system.index_tuning.apply(corpus_ids, corpus_texts, corpus_emb)
    if system.adapter is not None and query_emb is not None:
        query_emb = apply_adapter(system.adapter, query_emb)
    if isinstance(system.encoder, SparseDenseEncoder):
        if windowed_max:
            raise ConfigError(f"system '{system.name}': a sparse-dense vector is one per document; use document "
                              "windows mean or off", field="--system")
        if query_emb is not None:
            query_emb = system.encoder.compose_queries(query_emb, query_texts)
        if corpus_emb is not None:
            corpus_emb = system.encoder.compose_documents(corpus_emb, corpus_texts)
    return query_emb, corpus_emb


@dataclass
class SystemResult:
    name: str
    spec: str
    identity: str
    dimension: int
    dims: dict[int, DimensionResult]
    seconds: dict[str, float] = field(default_factory=dict)
    truncation: dict[str, Any] | None = None  # token limit and texts cut (embtune_core.encoders.token_limits)
    details: list[str] = field(default_factory=list)  # e.g. how its adapter was trained, for the report
    # The dense encoder's typed identity (embtune_core.encoders.encoder_identity); None for BM25 alone
    encoder_identity: Any = None


def adapter_details(adapter: Any) -> tuple[list[str], dict[str, Any] | None]:
    """One line on how ``adapter`` was trained and its training curve (from its saved config), if known."""
    from embtune_core.reporting.report_training import from_adapter_training

    training = getattr(getattr(adapter, "config", None), "training", None)
    if not isinstance(training, dict) or not training:
        return [], None
    config = training.get("config") or {}
    line = (f"{config.get('adapter', 'query')} adapter trained on {training.get('train_queries', '?')} queries"
            # train_queries counts the merged set: the pseudo-queries are part of it, not added to it
            + (f" ({training['augment_queries']} of them pseudo-queries from the index)"
               if training.get("augment_queries") else "")
            + f", epoch {training.get('best_epoch', '?')} of {config.get('epochs', '?')} kept")
    return [line], from_adapter_training(training)


@dataclass
class Evaluation:
    """Every system's per-query scores per dimension, with CIs and paired tests against the first."""

    dataset_name: str
    task: RetrievalTask
    systems: list[SystemResult]
    settings: MetricSettings
    confidence: float = 0.95
    seed: int = 0
    n_resamples: int = stats.DEFAULT_RESAMPLES
    n_permutations: int = stats.DEFAULT_PERMUTATIONS
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # conventions applied and warnings, one line each
    split: str | None = None  # the BEIR qrels split evaluated, when the dataset is a BEIR folder
    # What produced the data and the systems (source, generator, chunker, training...), for the report's
    # context block; keys are free-form labels, values short strings (see embtune_core.reporting.report_verdict).
    context: dict[str, Any] = field(default_factory=dict)
    # Training curves shown in the report: [{"name", "x_label", "series": {label: [[x, y], ...]}}]
    training: list[dict[str, Any]] = field(default_factory=list)
    # The system a run recommends, with its figures against the base and BM25 (embtune_core.workflow.recommend)
    recommendation: dict[str, Any] | None = None

    @property
    def all_dims(self) -> list[int]:
        return sorted({d for s in self.systems for d in s.dims}, reverse=True)

    @property
    def metric_names(self) -> list[str]:
        for system in self.systems:
            for result in system.dims.values():
                return list(result.per_query)
        return []

    def compute_statistics(self) -> None:
        """Fill :attr:`summary`: ``summary[system][dim][metric]`` = mean, CI, and the paired comparison
        with the first system at the same dimension (``None`` for the first system itself)."""
        baseline = self.systems[0]
        summary: dict[str, Any] = {}
        for system in self.systems:
            per_dim: dict[int, Any] = {}
            for dim, result in system.dims.items():
                names = list(result.per_query)
                scores = np.stack([result.per_query[m] for m in names], axis=1)  # (queries, metrics)
                low, high = stats.bootstrap_ci(scores, confidence=self.confidence, n_resamples=self.n_resamples,
                                               seed=self.seed)
                comparison = None
                if system is not baseline and dim in baseline.dims:
                    base_scores = np.stack([baseline.dims[dim].per_query[m] for m in names], axis=1)
                    comparison = stats.compare(base_scores, scores, confidence=self.confidence,
                                               n_resamples=self.n_resamples, n_permutations=self.n_permutations,
                                               seed=self.seed)
                per_dim[dim] = {
                    metric: {"mean": float(scores[:, j].mean()), "ci_low": float(low[j]), "ci_high": float(high[j]),
                             "vs_baseline": None if comparison is None else
                             {key: float(values[j]) for key, values in comparison.items()}}
                    for j, metric in enumerate(names)}
            summary[system.name] = per_dim
        self.summary = summary


def evaluate_systems(systems: Sequence[System], dataset: QADataset, *, dims: Iterable[int] | None = None,
                     settings: MetricSettings | None = None, dataset_name: str = "<dataset>",
                     confidence: float = 0.95, seed: int = 0, n_resamples: int = stats.DEFAULT_RESAMPLES,
                     n_permutations: int = stats.DEFAULT_PERMUTATIONS, cache: Any = None,
                     use_gpu: bool | None = None, progress_bar: bool = True,
                     same_text_is_same_document: bool | None = None,
                     extra_corpus: dict[str, str] | None = None) -> Evaluation:
    """Evaluate each system on ``dataset`` at each of ``dims`` (default: each system's full width).

    Dimensions wider than a system's embeddings are skipped for that system (an API model and a
    small local model can share one table at the dimensions they both have). The conventions of
    the module docstring apply; each one the data triggers is logged once and kept in
    :attr:`Evaluation.notes`. ``extra_corpus``: documents searched beside the dataset's corpus
    (the rest of the index, see :meth:`RetrievalTask.from_dataset`). Systems may be BM25 and
    hybrids (:mod:`embtune_core.retrieval.lexical`).
    """
    from embtune_core.encoders import token_limits
    from embtune_core.runtime.progress import progress

    if not systems:
        raise ConfigError("no system to evaluate", field="--system")
    names = [s.name for s in systems]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"system name '{duplicates[0]}' is used twice", field="--system")
    settings = settings or MetricSettings()
    task = RetrievalTask.from_dataset(dataset, path=dataset_name, same_text_is_same_document=same_text_is_same_document,
                                      extra_corpus=extra_corpus)
    notes = task.notes()
    log.info("%s: %s", dataset_name, notes[0])  # the scoring convention, always applied
    for note in notes[1:]:
        log.warning("%s: %s", dataset_name, note)
    wanted = sorted({int(d) for d in dims}, reverse=True) if dims else None
    if wanted and any(d <= 0 for d in wanted):
        raise ConfigError(f"dimension {min(wanted)} must be positive", field="--dims")
    bm25: dict[str, Any] = {}  # one BM25 index per corpus, shared by the bm25 and hybrid systems

    def bm25_index(spec: Any = None):
        if "index" not in bm25:
            from embtune_core.retrieval.lexical import BM25Spec

            bm25["index"] = (spec or BM25Spec()).index(task.corpus_texts)
        return bm25["index"]

    results: dict[str, SystemResult] = {}
    curves: list[dict[str, Any]] = []
    curves_shown: set[Any] = set()
    # Dense systems first: BM25 has no dimension, so it is scored at every dimension the others use.
    from embtune_core.retrieval.sparse_dense import SparseDenseEncoder

    one_vector = [s for s in systems if isinstance(s.encoder, SparseDenseEncoder)]  # after the dims they pair at
    order = ([s for s in systems if not s.lexical and s not in one_vector] + one_vector
             + [s for s in systems if s.lexical])
    bar = progress(order, desc="evaluating systems", unit="system") if progress_bar else order
    for system in bar:
        t0 = time.perf_counter()
        if system.lexical:
            used = sorted({d for r in results.values() for d in r.dims} | set(wanted or []), reverse=True) or [0]
            index = bm25_index(system.encoder)
            t1 = time.perf_counter()
            per_dim = evaluate_lexical(index, task, used, settings)
            results[system.name] = SystemResult(system.name, system.spec, system.identity, 0, per_dim,
                                                {"index": t1 - t0, "search_and_metrics": time.perf_counter() - t1})
            continue
        truncation = token_limits.check_encoder(system.encoder, {"query": task.query_texts,
                                                                 "document": task.corpus_texts})
        if truncation and any(v["over"] for k, v in truncation.items() if k != "limit"):
            notes.append(f"system '{system.name}': " + token_limits.describe(truncation))
        query_emb, corpus_emb, windows = embed_system(system, task, cache=cache)
        owner = windows.owner if windows is not None and system.encoder.mode == "max" else None
        if windows is not None:
            notes.append(f"system '{system.name}': " + system.encoder.describe(windows))
        t1 = time.perf_counter()
        width = query_emb.shape[1]
        system_dims = [d for d in wanted if d <= width] if wanted else [width]
        from embtune_core.retrieval.sparse_dense import SparseDenseEncoder

        one_width = isinstance(system.encoder, SparseDenseEncoder)  # dense + BM25 parts: never truncated
        if not system_dims:
            raise ConfigError(f"system '{system.name}' has {width}-dimensional embeddings, narrower than "
                              f"every requested dimension {wanted}", field="--dims")
        if system.fusion:
            per_dim = evaluate_hybrid(query_emb, corpus_emb, bm25_index(), task, system_dims, settings,
                                      use_gpu=use_gpu, owner=owner, fusion=system.fusion)
        elif one_width:
            result = evaluate_embeddings(query_emb, corpus_emb, task, dims=[width], settings=settings,
                                         use_gpu=use_gpu, owner=owner)[width]
            used = sorted({d for r in results.values() for d in r.dims} | set(wanted or []), reverse=True) or [width]
            per_dim = {dim: DimensionResult(dim, result.per_query, result.first_relevant_rank, result.ranking)
                       for dim in used}
            notes.append(f"system '{system.name}': one vector of {width} numbers (dense part at full width, BM25 "
                         "part, padding) ranks the same at every dimension; repeated to pair with the others")
        else:
            per_dim = evaluate_embeddings(query_emb, corpus_emb, task, dims=system_dims, settings=settings,
                                          use_gpu=use_gpu, owner=owner)
        t2 = time.perf_counter()
        details, curve = adapter_details(system.adapter) if system.adapter is not None else ([], None)
        shown = getattr(system.adapter, "fingerprint", None) or id(system.adapter)
        if curve is not None and shown in curves_shown:  # one curve per adapter, under the first system using it
            curve = None
        elif curve is not None:
            curves_shown.add(shown)
        if curve is not None:
            curve["name"] = f"{system.name} ({curve['name']})"
            curves.append(curve)
        if system.fusion:
            details.append(system.fusion.describe() + " of this dense ranking and BM25's")
        if system.index_tuning is not None:
            tuned = system.index_tuning
            details.append(f"document vectors tuned without re-embedding (NUDGE-N, gamma {tuned.config.get('gamma')}):"
                           f" {tuned.applied} of {len(task.corpus_ids)} searched documents moved")
        results[system.name] = SystemResult(system.name, system.spec, system.identity, width, per_dim,
                                            {"embed": t1 - t0, "search_and_metrics": t2 - t1}, truncation, details,
                                            encoder_identity=identity_of(system.encoder))
    if any(s.lexical for s in systems):
        notes.append("BM25 uses no embeddings: its scores are the same at every dimension and are repeated "
                     "in each row so that it pairs with the dense systems")
    evaluation = Evaluation(dataset_name, task, [results[s.name] for s in systems], settings, confidence, seed,
                            n_resamples, n_permutations, notes=notes, training=curves)
    evaluation.compute_statistics()
    return evaluation


# --- layer 3: the same metrics inside SentenceTransformerTrainer ---------------------------------------
def sentence_evaluator_base() -> type:
    """sentence-transformers' evaluator base class, which the trainer calls (the one lookup of it)."""
    from sentence_transformers.base.evaluation import BaseEvaluator

    return BaseEvaluator


def training_evaluator(dataset: QADataset, *, name: str = "val", matryoshka_dims: Iterable[int] | None = None,
                       batch_size: int = 32, settings: MetricSettings | None = None):
    """A sentence-transformers evaluator computing our IR metrics on ``dataset`` during training.

    It encodes queries with ``model.encode_query`` and the corpus with ``model.encode_document``,
    then scores exactly as ``embtune evaluate`` does. Keys are ``{name}_{metric}`` at the model's
    full width (``val_ndcg@10``, ``val_map@100``...) and ``{name}_dim{d}_{metric}`` for each
    Matryoshka dimension ``d`` narrower than that. ``primary_metric`` is ``{name}_ndcg@10`` (full
    width); the trainer logs it as ``eval_{name}_ndcg@10``, so pass
    ``metric_for_best_model="eval_val_ndcg@10"`` (or ``"val_ndcg@10"``; transformers adds ``eval_``).

    Example::

        evaluator = training_evaluator(val_dataset, name="val", matryoshka_dims=[384, 128, 64])
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                             loss=loss, evaluator=evaluator)
    """
    base = sentence_evaluator_base()
    task = RetrievalTask.from_dataset(dataset)
    metric_settings = settings or MetricSettings()
    dims = sorted({int(d) for d in matryoshka_dims}, reverse=True) if matryoshka_dims else []

    class EmbtuneIREvaluator(base):
        """IR metrics (NDCG@10, MRR@10, MAP@100, accuracy/precision/recall@k) per Matryoshka dimension."""

        def __init__(self) -> None:
            super().__init__()
            self.name = name
            self.task = task
            self.dims = dims
            self.batch_size = batch_size
            self.settings = metric_settings
            self.primary_metric = f"{name}_{M.PRIMARY_METRIC}" if name else M.PRIMARY_METRIC
            self.greater_is_better = True
            self._readable: dict[Any, tuple[list[str], list[str]]] = {}

        def __call__(self, model, output_path: str | None = None, epoch: int = -1, steps: int = -1,
                     *args, **kwargs) -> dict[str, float]:
            from embtune_core.encoders.token_prefix import readable_texts

            # What the model reads of each text (cut once per token limit): a long chunk is never
            # tokenised whole at every evaluation.
            key = (getattr(model, "max_seq_length", None), id(getattr(model, "tokenizer", None)))
            if key not in self._readable:
                self._readable = {key: (readable_texts(model, self.task.query_texts),
                                        readable_texts(model, self.task.corpus_texts))}
            queries, corpus = self._readable[key]
            query_emb = model.encode_query(queries, batch_size=self.batch_size,
                                           convert_to_numpy=True, show_progress_bar=False)
            corpus_emb = model.encode_document(corpus, batch_size=self.batch_size,
                                               convert_to_numpy=True, show_progress_bar=False)
            full = query_emb.shape[1]
            wanted = [full] + [d for d in self.dims if d < full]
            results = evaluate_embeddings(query_emb, corpus_emb, self.task, dims=wanted, settings=self.settings)
            out: dict[str, float] = {}
            for dim in wanted:
                prefix = "" if dim == full else f"dim{dim}_"
                out.update({f"{prefix}{metric}": value for metric, value in results[dim].means().items()})
            out = self.prefix_name_to_metrics(out, self.name)
            self.store_metrics_in_model_card_data(model, out, epoch, steps)
            return out

        def get_config_dict(self) -> dict[str, Any]:
            return {"matryoshka_dims": self.dims} if self.dims else {}

    return EmbtuneIREvaluator()
