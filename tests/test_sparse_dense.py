"""Sparse-dense vectors (embtune_core.retrieval.sparse_dense): the lexical part's inner product is bm25s's own BM25 score,
the joined vector scores w * cosine + (1 - w) * BM25 / scale, and equal document norms make inner product,
cosine and L2 rank alike (so DocsGPT's L2 FaissStore serves it unchanged)."""

from __future__ import annotations

import numpy as np
import pytest

from embtune_core.retrieval.lexical import BM25Index
from embtune_core.retrieval.sparse_dense import (
    LexicalVectors,
    SparseDenseEncoder,
    fit_sparse_dense,
    load_sparse_dense,
)

TEXTS = ["Uber reported revenue growth of 57 percent in the mobility segment during 2021.",
         "Drivers are independent contractors; classification litigation could raise costs for drivers.",
         "Insurance reserves for auto liability claims increased in the fourth quarter.",
         "Uber Freight connects shippers with carriers and grew gross bookings.",
         "Delivery gross bookings grew as restaurants and grocery merchants joined the platform.",
         "The effective tax rate reflects a valuation allowance on deferred tax assets tax."]
QUERIES = ["How did mobility revenue grow?", "drivers contractors litigation", "insurance reserves",
           "what does Uber Freight do for shippers", "tax allowance", "nothing matches zzz"]


class Hashing:
    identity, dimension = "hashing-16", 16

    def _vectors(self, texts):
        out = np.zeros((len(texts), 16), np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().split():
                out[row, hash(word) % 16] += 1.0
        return out

    encode_queries = encode_documents = _vectors


def test_lexical_inner_product_is_bm25s_score():
    lexical = LexicalVectors.fit(TEXTS)
    ours = lexical.queries(QUERIES) @ lexical.documents(TEXTS).T
    np.testing.assert_allclose(ours, BM25Index(TEXTS).scores(QUERIES), rtol=1e-5, atol=1e-5)
    # a hashed vocabulary approximates it (signed buckets: unbiased, not exact)
    hashed = LexicalVectors.fit(TEXTS, max_terms=8)
    assert hashed.hashed and hashed.dims == 8
    assert not np.allclose(hashed.queries(QUERIES) @ hashed.documents(TEXTS).T, ours)


def test_joined_vector_scores_the_linear_fusion_and_ranks_alike_under_ip_cosine_and_l2(tmp_path):
    rng = np.random.default_rng(0)
    dense_docs, dense_queries = rng.normal(size=(6, 16)), rng.normal(size=(6, 16))
    lexical = LexicalVectors.fit(TEXTS)
    encoder = SparseDenseEncoder(Hashing(), lexical, weight=0.6, scale=4.0)
    docs = encoder.compose_documents(dense_docs, TEXTS)
    queries = encoder.compose_queries(dense_queries, QUERIES)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)
    expected = 0.6 * unit(dense_queries) @ unit(dense_docs).T + 0.4 * BM25Index(TEXTS).scores(QUERIES) / 4.0
    np.testing.assert_allclose(queries @ docs.T, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(docs, axis=1), encoder.norm, rtol=1e-5)
    ip = np.argsort(-(queries @ docs.T), axis=1, kind="stable")
    cosine = np.argsort(-(unit(queries) @ unit(docs).T), axis=1, kind="stable")
    l2 = np.argsort(((queries[:, None, :] - docs[None, :, :]) ** 2).sum(-1), axis=1, kind="stable")
    np.testing.assert_array_equal(ip, cosine)
    np.testing.assert_array_equal(ip, l2)
    # saved without pickle, loaded over the same dense encoder: the same vectors
    loaded = load_sparse_dense(encoder.save(tmp_path / "sd"), Hashing())
    np.testing.assert_allclose(loaded.compose_documents(dense_docs, TEXTS), docs, rtol=1e-6)
    assert loaded.identity == encoder.identity


def test_weight_is_chosen_on_held_out_questions():
    rng = np.random.default_rng(1)
    dense_docs = rng.normal(size=(6, 16))
    # dense queries point at the wrong documents: BM25 must carry the ranking, so a low dense weight wins
    dense_queries = dense_docs[[1, 2, 3, 4, 5, 0]] + rng.normal(scale=0.01, size=(6, 16))
    relevant = [np.array([i]) for i in range(5)]
    encoder, record = fit_sparse_dense(Hashing(), TEXTS, dense_queries[:5], dense_docs, QUERIES[:5], relevant)
    assert record["weight"] < 0.5 and record["ndcg@10"] > record["weights_tried"]["0.5"] - 1e-9
    assert encoder.norm is not None and encoder.dimension == 16 + record["terms"] + 1


def test_weights_outside_the_open_interval_are_refused():
    with pytest.raises(Exception, match="weight"):
        SparseDenseEncoder(Hashing(), LexicalVectors.fit(TEXTS), weight=1.0, scale=1.0)
