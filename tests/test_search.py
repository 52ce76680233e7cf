import numpy as np
import pytest

from embtune_core.search import exact_search, normalize


def _brute_force(q, c, k):
    scores = q @ c.T
    order = np.lexsort((np.broadcast_to(np.arange(c.shape[0]), scores.shape), -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@pytest.mark.parametrize("corpus_block,query_block", [(7, 3), (1000, 1000), (1, 5)])
def test_blocked_search_matches_brute_force(corpus_block, query_block):
    rng = np.random.default_rng(0)
    corpus = normalize(rng.normal(size=(53, 8)))
    queries = normalize(rng.normal(size=(11, 8)))
    scores, ids = exact_search(queries, corpus, 10, corpus_block=corpus_block, query_block=query_block)
    ref_scores, ref_ids = _brute_force(queries, corpus, 10)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5, atol=1e-6)


def test_ties_rank_earlier_document_first_whatever_the_block_size():
    corpus = np.ones((20, 4), dtype=np.float32)
    query = np.ones((1, 4), dtype=np.float32)
    for block in (3, 20):
        _, ids = exact_search(query, corpus, 5, corpus_block=block)
        assert ids.tolist() == [[0, 1, 2, 3, 4]]


def test_k_larger_than_corpus_is_clipped():
    _, ids = exact_search(np.eye(3, dtype=np.float32), np.eye(3, dtype=np.float32), 10)
    assert ids.shape == (3, 3)
    assert ids[:, 0].tolist() == [0, 1, 2]


def test_dimension_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape mismatch"):
        exact_search(np.zeros((1, 3)), np.zeros((2, 4)), 1)
