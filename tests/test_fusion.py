"""Tuned hybrid fusion (embtune_core.retrieval.fusion): weighted RRF ranks exactly as LangChain's EnsembleRetriever,
convex fusion as Weaviate's relativeScoreFusion defines it, BM25's zero scores are never retrieved, and the
choice on held-out queries keeps the untuned hybrid unless another fusion is strictly better."""

from __future__ import annotations

import numpy as np
import pytest

from embtune_core.errors import ConfigError
from embtune_core.retrieval.fusion import Fusion, candidates, choose_fusion, fuse


def _random_rankings(rng, n_queries=30, n_docs=25, depth=12):
    dense_idx = np.stack([rng.permutation(n_docs)[:depth] for _ in range(n_queries)])
    dense_val = -np.sort(-rng.random((n_queries, depth)), axis=1)
    bm25_idx = np.stack([rng.permutation(n_docs)[:depth] for _ in range(n_queries)])
    bm25_val = -np.sort(-rng.integers(0, 4, (n_queries, depth)).astype(float), axis=1)  # ties and zeros
    return dense_val, dense_idx, bm25_val, bm25_idx


def test_weighted_rrf_ranks_as_langchains_ensemble_retriever():
    pytest.importorskip("langchain_classic")
    from langchain_classic.retrievers import EnsembleRetriever
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class Fixed(BaseRetriever):
        lists: dict

        def _get_relevant_documents(self, query, *, run_manager=None):
            return [Document(page_content=f"doc{d}") for d in self.lists[query]]

    rng = np.random.default_rng(0)
    dense_val, dense_idx, bm25_val, bm25_idx = _random_rankings(rng)
    for fusion in (Fusion("rrf", 60, 0.5, depth=12), Fusion("rrf", 5, 0.7, depth=8), Fusion("rrf", 1, 0.3, depth=12)):
        depth = fusion.depth
        dense = Fixed(lists={str(q): list(dense_idx[q, :depth]) for q in range(len(dense_idx))})
        # BM25 returns only documents with a positive score, as Lucene (and embtune's BM25Retriever) do
        bm25 = Fixed(lists={str(q): [d for d, s in zip(bm25_idx[q, :depth], bm25_val[q, :depth]) if s > 0]
                            for q in range(len(bm25_idx))})
        reference = EnsembleRetriever(retrievers=[dense, bm25], weights=[fusion.weight, 1 - fusion.weight],
                                      c=fusion.k)
        _, ours = fuse(dense_val, dense_idx, bm25_val, bm25_idx, fusion)
        for q in range(len(dense_idx)):
            expected = [int(d.page_content[3:]) for d in reference.invoke(str(q))]
            assert [int(d) for d in ours[q] if d >= 0] == expected


def test_convex_fusion_of_min_max_normalised_scores_by_hand():
    dense_val = np.array([[0.9, 0.7, 0.5]])
    dense_idx = np.array([[0, 1, 2]])
    bm25_val = np.array([[8.0, 4.0, 0.0]])  # document 3 shares no word with the query: not retrieved
    bm25_idx = np.array([[2, 1, 3]])
    scores, indices = fuse(dense_val, dense_idx, bm25_val, bm25_idx, Fusion("convex", weight=0.25, depth=3))
    # dense normalised: 0 -> 1, 1 -> 0.5, 2 -> 0; BM25 normalised over its retrieved two: 2 -> 1, 1 -> 0
    expected = {0: 0.25 * 1.0, 1: 0.25 * 0.5, 2: 0.75 * 1.0}
    assert indices[0].tolist()[:3] == [2, 0, 1] and 3 not in indices[0].tolist()
    np.testing.assert_allclose(scores[0][:3], [expected[2], expected[0], expected[1]], rtol=1e-6)


def test_zero_score_bm25_documents_are_never_retrieved():
    rng = np.random.default_rng(1)
    dense_val, dense_idx, bm25_val, bm25_idx = _random_rankings(rng)
    bm25_val[:] = 0.0
    for fusion in (Fusion(), Fusion("convex", weight=0.4)):
        _, indices = fuse(dense_val[:, :0], dense_idx[:, :0], bm25_val, bm25_idx, fusion)
        assert (indices == -1).all()


def test_choice_keeps_the_untuned_hybrid_unless_strictly_better():
    rng = np.random.default_rng(2)
    dense_val, dense_idx, bm25_val, bm25_idx = _random_rankings(rng, n_queries=40)
    # every query's answer is BM25's first document and deep in the dense list: BM25-heavy fusions win
    relevant = [np.array([bm25_idx[q, 0]]) for q in range(40)]
    bm25_val[:, 0] = 10.0
    choice = choose_fusion(dense_val, dense_idx, bm25_val, bm25_idx, relevant)
    assert choice.score >= choice.untuned and choice.fusion.weight < 0.5
    assert choice.queries == 40 and choice.scores[candidates()[0].spec()] == pytest.approx(choice.untuned)
    # identical rankings on both sides: every fusion scores the same, so the untuned one is kept
    same = choose_fusion(dense_val, dense_idx, dense_val * 10, dense_idx, relevant)
    assert same.fusion == Fusion()


def test_fusion_spec_round_trip_and_one_line_errors():
    for fusion in (Fusion(), Fusion("rrf", 20, 0.7, 50), Fusion("convex", weight=0.3)):
        assert Fusion.parse(fusion.spec()) == fusion
    for bad in ("borda", "rrf,k=x", "rrf,alpha=1", "convex,weight=1.5"):
        with pytest.raises(ConfigError):
            Fusion.parse(bad)
