"""The LangChain side of hybrid retrieval returns what `embtune evaluate` measured: BM25Retriever ranks as the
bm25 row (zero scores never returned), HybridRetriever as the hybrid row, for the untuned and tuned fusions."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("langchain_community")

from langchain_core.embeddings import Embeddings

from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.retrieval.fusion import Fusion
from embtune_core.retrieval.lexical import BM25Spec
from embtune_core.scoring.evaluation import MetricSettings, System, evaluate_systems


class HashingEmbeddings(Embeddings):
    """test_evaluation's HashingEncoder as LangChain embeddings, unit length (cosine = inner product)."""

    def __init__(self, encoder):
        self.encoder, self.dimension = encoder, encoder.dimension

    def _unit(self, texts):
        vectors = self.encoder.encode_documents(texts)
        return (vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)).tolist()

    def embed_documents(self, texts):
        return self._unit(list(texts))

    def embed_query(self, text):
        return self._unit([text])[0]


@pytest.mark.parametrize("fusion", [Fusion(), Fusion("rrf", 5, 0.7, depth=40), Fusion("convex", weight=0.3, depth=40)])
def test_hybrid_retriever_ranks_as_the_evaluated_hybrid(tmp_path, fusion):
    from test_evaluation import HashingEncoder, small_dataset

    from embtune_integrations.faiss_store import build_faiss_store
    from embtune_integrations.hybrid import BM25Retriever, hybrid_retriever

    dataset = small_dataset()
    encoder = HashingEncoder(48)
    systems = [System("hybrid", encoder, spec="hybrid", fusion=fusion), System("bm25", BM25Spec(), spec="bm25")]
    evaluation = evaluate_systems(systems, dataset, cache=EmbeddingCache(tmp_path), progress_bar=False,
                                  n_resamples=20, n_permutations=20, same_text_is_same_document=False,
                                  settings=MetricSettings())
    ids = list(dataset.corpus)
    store = build_faiss_store(list(dataset.corpus.values()), HashingEmbeddings(encoder), ids=ids, use_gpu=False)
    k = 10
    retriever = hybrid_retriever(store, fusion.to_json(), k=k)
    bm25 = BM25Retriever.from_documents(retriever.bm25.documents, k=k)
    hybrid_ranking = evaluation.systems[0].dims[48].ranking
    bm25_ranking = evaluation.systems[1].dims[48].ranking
    for row, query_id in enumerate(hybrid_ranking.query_ids):
        question = dataset.queries[query_id]
        served = [d.id for d in retriever.invoke(question)]
        assert served == hybrid_ranking.ranked_ids(row)[:k]
        lexical = [d.id for d in bm25.invoke(question)]
        expected = [c for c, s in zip(bm25_ranking.ranked_ids(row), bm25_ranking.scores[row]) if s > 0][:k]
        assert lexical == expected
    # a question sharing no word with any document: BM25 returns nothing, the hybrid only dense documents
    assert bm25.invoke("zzzz qqqq") == []
