"""Retrieval metrics and statistics: definitions, agreement with sentence-transformers, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from embtune_core.retrieval.search import exact_search
from embtune_core.scoring import metrics as M
from embtune_core.scoring import stats

K_VALUES = (1, 3, 5, 10)


# --- hand-computed cases ----------------------------------------------------------------------------
def test_single_relevant_document_at_rank_three():
    hits = M.hit_matrix(np.array([[4, 7, 2, 9, 0]]), [np.array([2])])
    assert hits.tolist() == [[False, False, True, False, False]]
    scores = M.ir_metrics(hits, [1], accuracy_at=(1, 3), precision_recall_at=(3,), mrr_at=(10,),
                          ndcg_at=(10,), map_at=(100,))
    assert scores["accuracy@1"][0] == 0.0
    assert scores["accuracy@3"][0] == 1.0
    assert scores["precision@3"][0] == pytest.approx(1 / 3)
    assert scores["recall@3"][0] == 1.0
    assert scores["mrr@10"][0] == pytest.approx(1 / 3)
    assert scores["ndcg@10"][0] == pytest.approx(1 / math.log2(4))
    assert scores["map@100"][0] == pytest.approx(1 / 3)


def test_two_relevant_documents():
    # relevant at ranks 1 and 3 of 4 retrieved; 3 relevant in total (one never retrieved)
    hits = np.array([[True, False, True, False]])
    scores = M.ir_metrics(hits, [3], accuracy_at=(1,), precision_recall_at=(3,), mrr_at=(10,),
                          ndcg_at=(10,), map_at=(100,))
    assert scores["precision@3"][0] == pytest.approx(2 / 3)
    assert scores["recall@3"][0] == pytest.approx(2 / 3)
    ideal = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert scores["ndcg@10"][0] == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert scores["map@100"][0] == pytest.approx((1 / 1 + 2 / 3) / 3)


def test_llamaindex_hit_rate_and_mrr_are_cut_at_k():
    hits = np.array([[False] * 6 + [True], [False, True] + [False] * 5])
    result = M.hit_rate_mrr(hits, k=5)
    assert result["hit_rate@5"].tolist() == [0.0, 1.0]
    assert result["mrr@5"].tolist() == [0.0, 0.5]  # rank 7 is outside the top 5: no credit


def test_precision_divides_by_k_even_for_a_tiny_corpus():
    hits = np.array([[True, False]])  # only two documents exist
    assert M.precision(hits, 10)[0] == pytest.approx(0.1)


def test_padding_never_counts_as_a_hit():
    hits = M.hit_matrix(np.array([[3, -1, -1]]), [np.array([0])])
    assert not hits.any()


def test_query_without_relevant_documents_is_rejected():
    with pytest.raises(ValueError, match="at least one relevant"):
        M.recall(np.array([[False]]), [0], 1)


def test_ranking_maps_positions_to_ids():
    ranking = M.Ranking(["q1"], ["a", "b", "c"], np.array([[2, 0, -1]]))
    assert ranking.ranked_ids(0) == ["c", "a"]
    assert [r.tolist() for r in ranking.relevant_positions({"q1": ["b", "zzz"]})] == [[1]]


# --- ties ----------------------------------------------------------------------------------------------
def test_ties_rank_the_earlier_corpus_document_first():
    scores = np.array([[0.5, 0.9, 0.5, 0.9, 0.1]])
    assert M.rank_scores(scores).tolist() == [[1, 3, 0, 2, 4]]


@settings(max_examples=40, deadline=None)
@given(n_corpus=st.integers(1, 30), relevant_at=st.integers(0, 29))
def test_all_tied_scores_rank_in_corpus_order(n_corpus, relevant_at):
    relevant_at %= n_corpus
    corpus = np.ones((n_corpus, 4), dtype=np.float32)
    query = np.ones((1, 4), dtype=np.float32)
    _, indices = exact_search(query, corpus, 100)
    assert indices[0].tolist() == list(range(n_corpus))
    hits = M.hit_matrix(indices, [np.array([relevant_at])])
    expected = 1.0 / (relevant_at + 1) if relevant_at < 10 else 0.0
    assert M.reciprocal_rank(hits, 10)[0] == pytest.approx(expected)


# --- properties ----------------------------------------------------------------------------------------
@st.composite
def rankings(draw):
    """A full ranking of a small corpus for a few queries, each with 1..n relevant documents."""
    n_corpus = draw(st.integers(1, 25))
    n_queries = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    indices = np.stack([rng.permutation(n_corpus) for _ in range(n_queries)])
    relevant = [rng.choice(n_corpus, size=rng.integers(1, n_corpus + 1), replace=False) for _ in range(n_queries)]
    return indices, relevant


@settings(max_examples=80, deadline=None)
@given(rankings())
def test_every_metric_is_between_zero_and_one(case):
    indices, relevant = case
    hits = M.hit_matrix(indices, relevant)
    n_relevant = [len(r) for r in relevant]
    scores = {**M.ir_metrics(hits, n_relevant), **M.hit_rate_mrr(hits, 5)}
    for name, values in scores.items():
        assert np.all(values >= 0.0) and np.all(values <= 1.0 + 1e-12), name


@settings(max_examples=80, deadline=None)
@given(rankings())
def test_perfect_ranking_scores_one(case):
    indices, relevant = case
    perfect = np.stack([np.concatenate([r, np.setdiff1d(row, r)]) for row, r in zip(indices, relevant)])
    hits = M.hit_matrix(perfect, relevant)
    n_relevant = np.array([len(r) for r in relevant])
    scores = M.ir_metrics(hits, n_relevant)
    for name in ("accuracy@1", "accuracy@10", "mrr@10", "ndcg@10", "map@100"):
        np.testing.assert_allclose(scores[name], 1.0, err_msg=name)
    for k in K_VALUES:
        np.testing.assert_allclose(scores[f"recall@{k}"], np.minimum(n_relevant, k) / n_relevant)
        np.testing.assert_allclose(scores[f"precision@{k}"], np.minimum(n_relevant, k) / k)


@settings(max_examples=60, deadline=None)
@given(rankings())
def test_agrees_with_sentence_transformers_compute_metrics(case):
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    indices, relevant = case
    n_queries, n_corpus = indices.shape
    corpus_ids = [f"d{i:03d}" for i in range(n_corpus)]  # zero-padded: id order == corpus order
    query_ids = [f"q{i}" for i in range(n_queries)]
    relevant_docs = {q: {corpus_ids[i] for i in r} for q, r in zip(query_ids, relevant)}
    evaluator = InformationRetrievalEvaluator({q: q for q in query_ids}, {c: c for c in corpus_ids},
                                              relevant_docs, write_csv=False)
    results = [[{"corpus_id": corpus_ids[i], "score": float(n_corpus - rank)} for rank, i in enumerate(row)]
               for row in indices]
    theirs = evaluator.compute_metrics(results)
    ours = M.mean_scores(M.ir_metrics(M.hit_matrix(indices, relevant), [len(r) for r in relevant]))
    for family, by_k in theirs.items():
        for k, value in by_k.items():
            assert ours[family.replace("@k", f"@{k}")] == pytest.approx(value, abs=1e-12)


# --- statistics ------------------------------------------------------------------------------------------
def test_bootstrap_ci_is_seeded_and_brackets_the_mean():
    values = np.random.default_rng(1).random(200)
    low, high = stats.bootstrap_ci(values, seed=3)
    assert (low, high) == stats.bootstrap_ci(values, seed=3)
    assert low < values.mean() < high
    assert stats.bootstrap_ci(values, seed=4) != (low, high)


def test_constant_scores_have_a_zero_width_interval():
    assert stats.bootstrap_ci(np.full(50, 0.25)) == pytest.approx((0.25, 0.25))


def test_identical_systems_are_not_significant():
    values = np.random.default_rng(0).random(100)
    result = stats.compare(values, values.copy())
    assert result["difference"] == 0.0
    assert result["p_randomization"] == 1.0
    assert result["p_ttest"] == 1.0


def test_a_clear_improvement_is_significant_and_matches_scipy():
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(0)
    base = rng.random(300)
    better = np.clip(base + 0.1 + rng.normal(0, 0.05, 300), 0, 1)
    result = stats.compare(base, better, n_permutations=2000)
    assert result["difference"] > 0.05
    assert result["ci_low"] > 0
    assert result["p_randomization"] < 0.01
    assert result["p_ttest"] == pytest.approx(ttest_rel(better, base).pvalue)


def test_randomization_test_is_exact_enough_for_noise():
    rng = np.random.default_rng(5)
    a, b = rng.random(80), rng.random(80)
    p = stats.paired_randomization_test(a, b, n_permutations=4000, seed=1)
    t = stats.paired_ttest(a, b)[1]
    assert abs(p - t) < 0.05  # permutation and t-test agree on noise


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=40), st.integers(0, 1000))
def test_ci_lies_within_the_range_of_the_scores(values, seed):
    low, high = stats.bootstrap_ci(values, seed=seed, n_resamples=200)
    assert min(values) - 1e-12 <= low <= high <= max(values) + 1e-12


def test_paired_tests_need_the_same_queries():
    with pytest.raises(ValueError, match="same queries"):
        stats.compare([1.0, 0.0], [1.0])


def test_matrix_statistics_equal_column_by_column():
    rng = np.random.default_rng(2)
    a = rng.random((150, 4))
    b = np.clip(a + rng.normal(0.02, 0.1, (150, 4)), 0, 1)
    b[:, 3] = a[:, 3]  # an unchanged metric
    low, high = stats.bootstrap_ci(b, seed=7, n_resamples=300)
    together = stats.compare(a, b, n_resamples=300, n_permutations=300, seed=7)
    for j in range(4):
        assert (low[j], high[j]) == pytest.approx(stats.bootstrap_ci(b[:, j], seed=7, n_resamples=300))
        alone = stats.compare(a[:, j], b[:, j], n_resamples=300, n_permutations=300, seed=7)
        for key, value in alone.items():
            assert together[key][j] == pytest.approx(value), key
    assert together["p_randomization"][3] == 1.0 and together["p_ttest"][3] == 1.0
