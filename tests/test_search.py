import numpy as np
import pytest

from embtune_core.retrieval.search import exact_search, faiss_module, normalize


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


# --- backends: torch and FAISS return the same rankings, ties included ---------------------------------
needs_faiss = pytest.mark.skipif(faiss_module() is None, reason="needs a FAISS build (embtune[cpu])")
BLOCKS = [(1, 1), (7, 3), (64, 16), (1000, 1000)]


def _grid(rng, shape, levels=2):
    """Small integers: every dot product is exact in float32 in any summation order, and ties abound."""
    return rng.integers(-levels, levels + 1, size=shape).astype(np.float32)


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=needs_faiss)])
@pytest.mark.parametrize("corpus_block,query_block", BLOCKS)
def test_each_backend_matches_the_brute_force_tie_rule_exactly(backend, corpus_block, query_block):
    rng = np.random.default_rng(1)
    corpus = _grid(rng, (120, 5))
    corpus = np.concatenate([corpus, corpus[::3]])  # exact duplicates further down the corpus
    queries = _grid(rng, (17, 5))
    for k in (1, 10, 40, len(corpus)):
        scores, ids = exact_search(queries, corpus, k, corpus_block=corpus_block, query_block=query_block,
                                   backend=backend)
        ref_scores, ref_ids = _brute_force(queries, corpus, k)
        np.testing.assert_array_equal(ids, ref_ids)
        np.testing.assert_array_equal(scores, ref_scores)
        assert scores.dtype == np.float32 and ids.dtype == np.int64


@needs_faiss
@pytest.mark.parametrize("corpus_block,query_block", BLOCKS)
def test_torch_and_faiss_rank_random_unit_vectors_identically(corpus_block, query_block):
    rng = np.random.default_rng(2)
    corpus = normalize(rng.normal(size=(700, 24)))
    corpus[500:600] = corpus[100:200]  # duplicated rows: exact ties in both backends
    queries = normalize(rng.normal(size=(40, 24)))
    queries[:5] = corpus[100:105]
    t_scores, t_ids = exact_search(queries, corpus, 25, corpus_block=corpus_block, query_block=query_block,
                                   backend="torch")
    f_scores, f_ids = exact_search(queries, corpus, 25, corpus_block=corpus_block, query_block=query_block,
                                   backend="faiss")
    np.testing.assert_array_equal(t_ids, f_ids)
    np.testing.assert_array_equal(t_scores, f_scores)  # both rescored exactly: equal to the bit
    assert (t_ids[:5, :2] == np.array([[100, 500], [101, 501], [102, 502], [103, 503], [104, 504]])).all()


@pytest.mark.parametrize("backend", ["torch", pytest.param("faiss", marks=needs_faiss)])
def test_a_tie_group_longer_than_faiss_extra_fetch_still_ranks_by_position(backend):
    corpus = np.concatenate([np.zeros((30, 4)), np.ones((50, 4)), np.zeros((5, 4))]).astype(np.float32)
    _, ids = exact_search(np.ones((3, 4), np.float32), corpus, 7, backend=backend)
    assert ids.tolist() == [list(range(30, 37))] * 3


def test_backend_comes_from_the_environment_and_bad_names_are_one_line_errors(monkeypatch):
    from embtune_core.errors import ConfigError
    from embtune_core.retrieval.search import choose_backend

    monkeypatch.setenv("EMBTUNE_SEARCH_BACKEND", "torch")
    assert choose_backend().name == "torch"
    monkeypatch.setenv("EMBTUNE_SEARCH_BACKEND", "annoy")
    with pytest.raises(ConfigError, match="EMBTUNE_SEARCH_BACKEND: search backend must be one of auto, faiss, torch"):
        exact_search(np.eye(2), np.eye(2), 1)
    with pytest.raises(ConfigError, match="backend: search backend must be one of"):
        exact_search(np.eye(2), np.eye(2), 1, backend="annoy")


def test_without_faiss_auto_is_torch_and_forcing_faiss_is_a_one_line_error(monkeypatch):
    import sys

    from embtune_core.errors import ConfigError
    from embtune_core.retrieval import search

    monkeypatch.delenv("EMBTUNE_SEARCH_BACKEND", raising=False)
    monkeypatch.setitem(sys.modules, "faiss", None)  # what `import faiss` sees with no FAISS build installed
    search.faiss_module.cache_clear()
    search.gpu_available.cache_clear()
    try:
        assert search.choose_backend(use_gpu=False) == search.Backend("torch", "cpu")
        with pytest.raises(ConfigError, match="search backend 'faiss' needs a FAISS build"):
            search.exact_search(np.eye(2), np.eye(2), 1, backend="faiss")
    finally:
        monkeypatch.undo()
        search.faiss_module.cache_clear()
        search.gpu_available.cache_clear()


def test_the_backend_is_logged_once_per_process_not_per_call(caplog):
    from embtune_core.retrieval import search

    search._announced.discard(search.Backend("torch", "cpu"))
    with caplog.at_level("INFO", logger="embtune_core.retrieval.search"):
        for _ in range(3):
            exact_search(np.eye(3), np.eye(3), 2, backend="torch", use_gpu=False)
    assert [r.getMessage() for r in caplog.records] == ["exact search: torch on cpu"]
