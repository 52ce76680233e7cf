"""embtune's figures on BEIR-style data equal pytrec_eval's (the figures BEIR, MTEB and pyserini report).

The oracle is pytrec_eval itself (``pytrec-eval-terrier`` from PyPI), fed exactly what BEIR's
``EvaluateRetrieval.evaluate`` feeds it: the qrels as read, every query's scores over the corpus,
with each query's own-id document popped (``ignore_identical_ids=True``, BEIR's default). embtune
computes its figures through its own path: a :class:`QADataset` holding the qrels,
:class:`RetrievalTask`, the exact search over (random, tie-rich) embeddings and the metric functions.

Datasets are random: graded and binary qrels (grades -1..3), ties (embeddings drawn from a handful of
vectors, so many documents score alike), duplicate documents, judged documents missing from the corpus,
queries judged only 0, queries without judgements, query ids that are corpus ids, ids whose sort order
matters (trec_eval breaks ties by document id, descending; embtune follows it for graded qrels).
MRR@k is pytrec_eval's ``recip_rank`` cut at k (RR@k = RR when its rank is within k, else 0): ir_measures'
``RR@k`` goes through its msmarco provider, which breaks ties another way.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytrec_eval = pytest.importorskip("pytrec_eval", reason="pytrec-eval-terrier (the dev extra) is not installed")

from embtune_core.data.dataset import QADataset
from embtune_core.retrieval.search import exact_search, normalize
from embtune_core.scoring import metrics as M
from embtune_core.scoring.evaluation import MetricSettings, RetrievalTask, evaluate_embeddings

SETTINGS = MetricSettings(hit_rate_at=(5,), accuracy_at=(1, 3, 5, 10), precision_recall_at=(1, 3, 5, 10),
                          mrr_at=(10,), ndcg_at=(3, 10), map_at=(10, 100))
_ID_STYLES = ("d{}", "{}", "doc-{:03d}", "é{}", "Z{}")
_VECTORS = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [0, 0, 1, 1], [2, 1, 0, 1],
                     [1, 1, 1, 1], [0, 1, 1, 0]], dtype=np.float32)


def random_beir(seed: int, n_corpus: int, n_queries: int, tie_rich: bool):
    """(corpus, queries, qrels, query vectors, corpus vectors) of one random BEIR-style dataset."""
    rng = np.random.default_rng(seed)
    style = _ID_STYLES[rng.integers(len(_ID_STYLES))]
    corpus_ids = list(dict.fromkeys(style.format(int(i)) for i in rng.choice(1000, n_corpus, replace=False)))
    texts = [f"text {rng.integers(3 if tie_rich else 10**6)}" for _ in corpus_ids]  # duplicates when tie-rich
    corpus = dict(zip(corpus_ids, texts))
    query_ids = []
    for i in range(n_queries):  # some queries carry a corpus id (ArguAna, Quora): BEIR pops that document
        query_ids.append(corpus_ids[rng.integers(len(corpus_ids))] if rng.random() < 0.2 else f"q{i}")
    query_ids = list(dict.fromkeys(query_ids))
    queries = {q: f"question {q}" for q in query_ids}
    grades = np.array([-1, 0, 0, 1, 1, 1, 2, 2, 3])
    qrels: dict[str, dict[str, int]] = {}
    for q in query_ids:
        if rng.random() < 0.15:
            continue  # a query without judgements: not evaluated by either
        judged = rng.choice(corpus_ids, size=rng.integers(1, len(corpus_ids) + 1), replace=False)
        qrels[q] = {str(c): int(grades[rng.integers(len(grades))]) for c in judged}
        if rng.random() < 0.25:  # judged documents missing from the corpus (ArguAna ships one)
            for j in range(rng.integers(1, 3)):
                qrels[q][f"missing-{j}"] = int(rng.integers(0, 3))
        if rng.random() < 0.1:  # judged only 0
            qrels[q] = {c: 0 for c in qrels[q]}
    if not qrels:
        qrels[query_ids[0]] = {corpus_ids[0]: 1}
    pool = _VECTORS if tie_rich else rng.normal(size=(64, 4)).astype(np.float32)
    corpus_vectors = pool[rng.integers(len(pool), size=len(corpus_ids))]
    query_vectors = pool[rng.integers(len(pool), size=len(query_ids))] + (
        0 if tie_rich else rng.normal(scale=0.1, size=(len(query_ids), 4)).astype(np.float32))
    return corpus, queries, qrels, query_vectors, corpus_vectors


def beir_reference(corpus_ids, query_ids, qrels, scores) -> dict[str, dict[str, float]]:
    """BEIR's EvaluateRetrieval.evaluate, measure by measure: pytrec_eval on every query's scores, each
    query's own-id document popped first (ignore_identical_ids=True)."""
    run = {q: {c: float(s) for c, s in zip(corpus_ids, row) if c != q} for q, row in zip(query_ids, scores)}
    measures = {"success.1,3,5,10", "P.1,3,5,10", "recall.1,3,5,10", "ndcg_cut.3,10", "map_cut.10,100",
                "recip_rank"}
    found = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    out = {}
    for q, m in found.items():
        rr = m["recip_rank"]
        out[q] = {**{f"accuracy@{k}": m[f"success_{k}"] for k in (1, 3, 5, 10)},
                  **{f"precision@{k}": m[f"P_{k}"] for k in (1, 3, 5, 10)},
                  **{f"recall@{k}": m[f"recall_{k}"] for k in (1, 3, 5, 10)},
                  "ndcg@3": m["ndcg_cut_3"], "ndcg@10": m["ndcg_cut_10"],
                  "map@10": m["map_cut_10"], "map@100": m["map_cut_100"],
                  # RR@k: the reciprocal rank when the first relevant document is within k
                  "mrr@10": rr if rr >= 1 / 10 - 1e-12 else 0.0,
                  "hit_rate@5": m["success_5"], "mrr@5": rr if rr >= 1 / 5 - 1e-12 else 0.0}
    return out


def embtune_scores(corpus, queries, qrels, query_vectors, corpus_vectors):
    dataset = QADataset(queries, corpus, {q: [c for c, g in per.items() if g >= 1 and c in corpus]
                                          for q, per in qrels.items()}, extras={"qrels": qrels})
    dataset.relevant_docs = {q: ids for q, ids in dataset.relevant_docs.items() if ids}
    task = RetrievalTask.from_dataset(dataset)
    position = {c: i for i, c in enumerate(corpus)}
    qrow = {q: i for i, q in enumerate(queries)}
    q_emb = query_vectors[[qrow[q] for q in task.query_ids]]
    c_emb = corpus_vectors[[position[c] for c in task.corpus_ids]]
    result = evaluate_embeddings(q_emb, c_emb, task, settings=SETTINGS)
    per_query = next(iter(result.values())).per_query
    return task, {q: {m: float(v[i]) for m, v in per_query.items()} for i, q in enumerate(task.query_ids)}


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n_corpus=st.integers(1, 25), n_queries=st.integers(1, 6),
       tie_rich=st.booleans())
def test_every_metric_equals_pytrec_eval_on_random_beir_data(seed, n_corpus, n_queries, tie_rich):
    corpus, queries, qrels, query_vectors, corpus_vectors = random_beir(seed, n_corpus, n_queries, tie_rich)
    task, ours = embtune_scores(corpus, queries, qrels, query_vectors, corpus_vectors)
    # The scores pytrec_eval ranks: the search's own (float32) scores of every document.
    ids = list(corpus)
    all_scores, all_indices = exact_search(normalize(query_vectors), normalize(corpus_vectors), len(ids))
    scores = np.zeros((len(queries), len(ids)), dtype=np.float32)
    np.put_along_axis(scores, all_indices, all_scores, axis=1)
    theirs = beir_reference(ids, list(queries), qrels, scores)
    assert set(ours) == set(theirs)  # the same queries are evaluated: those with judgements
    for q, measures in theirs.items():
        for name, value in measures.items():
            assert ours[q][name] == pytest.approx(value, abs=1e-9), (q, name, qrels.get(q))
    # ...and the dataset's figure is BEIR's: the mean over pytrec_eval's queries.
    for name in ("ndcg@10", "map@100", "recall@10", "precision@1"):
        mean = sum(m[name] for m in theirs.values()) / len(theirs)
        assert np.mean([ours[q][name] for q in task.query_ids]) == pytest.approx(mean, abs=1e-9)


def test_graded_answer_below_a_grade_one_document_is_pytrec_eval_s_0_8597():
    """The issue's instance: grade 1 outranks the grade-2 answer; binary gains said 1.0000."""
    corpus = {"d1": "grade one", "d2": "grade two", "d3": "unjudged"}
    qrels = {"q": {"d1": 1, "d2": 2}}
    q_emb = np.array([[1.0, 0.0]], dtype=np.float32)
    c_emb = np.array([[0.9, 0.1], [0.5, 0.5], [0.0, 1.0]], dtype=np.float32)
    _, ours = embtune_scores(corpus, {"q": "x"}, qrels, q_emb, c_emb)
    assert ours["q"]["ndcg@10"] == pytest.approx(0.8597186998521972, abs=1e-12)
    ideal = 2 + 1 / math.log2(3)
    assert ours["q"]["ndcg@10"] == pytest.approx((1 + 2 / math.log2(3)) / ideal)


def test_equal_scores_rank_by_document_id_descending_as_trec_eval_does():
    """The tie rule, stated and checked: with every score equal, the relevant 'a' ranks after 'b' and 'c'."""
    corpus = {"a": "x", "b": "y", "c": "z"}
    vec = np.ones((3, 2), dtype=np.float32)
    task, ours = embtune_scores(corpus, {"q": "x"}, {"q": {"a": 1}}, np.ones((1, 2), np.float32), vec)
    assert task.corpus_ids == ["c", "b", "a"]
    assert ours["q"]["mrr@10"] == pytest.approx(1 / 3)
    found = pytrec_eval.RelevanceEvaluator({"q": {"a": 1}}, {"recip_rank"}).evaluate({"q": dict.fromkeys("abc", 1.0)})
    assert found["q"]["recip_rank"] == pytest.approx(1 / 3)
    assert "equal scores rank by document id, descending, as trec_eval" in task.notes()[0]
    assert "document id, descending" in " ".join(M.__doc__.split())
