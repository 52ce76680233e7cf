"""LlamaIndex integration: EmbtuneLlamaIndexEmbedding returns EmbtuneEmbeddings' vectors, through
llama-index-core's real classes (BaseEmbedding's public methods, a VectorStoreIndex retrieving)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

pytest.importorskip("llama_index.core", reason="needs the llamaindex extra (llama-index-core)")

from test_integration_langchain import TEXTS, make_adapter

from embtune_integrations.langchain import EmbtuneEmbeddings
from embtune_integrations.llamaindex import EmbtuneLlamaIndexEmbedding


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    directory = tmp_path_factory.mktemp("li-adapter") / "adapter"
    make_adapter(EmbtuneEmbeddings(tiny_model_dir, batch_size=4), directory, seed=3)
    return directory


@pytest.mark.parametrize("with_adapter", [False, True])
def test_same_vectors_as_langchain_embeddings(tiny_model_dir, adapter_dir, with_adapter):
    from llama_index.core.base.embeddings.base import BaseEmbedding

    adapter = adapter_dir if with_adapter else None
    lc = EmbtuneEmbeddings(tiny_model_dir, adapter=adapter, batch_size=4)
    li = EmbtuneLlamaIndexEmbedding(tiny_model_dir, adapter=adapter, embed_batch_size=4)
    assert isinstance(li, BaseEmbedding) and li.dimension == lc.dimension
    # LlamaIndex cuts the list into batches of embed_batch_size before the model sees it (and the model
    # sorts each call by length), so padding differs from one 6-text call: equal to float32 rounding
    np.testing.assert_allclose(np.array(li.get_text_embedding_batch(TEXTS)), np.array(lc.embed_documents(TEXTS)),
                               atol=1e-6)
    np.testing.assert_array_equal(np.array(li.get_text_embedding_batch(TEXTS[:4])),
                                  np.array(lc.embed_documents(TEXTS[:4])))
    np.testing.assert_array_equal(np.array(li.get_text_embedding(TEXTS[0])), np.array(lc.embed_documents(TEXTS[:1])[0]))
    np.testing.assert_array_equal(np.array(li.get_query_embedding("how fast did Uber grow?")),
                                  np.array(lc.embed_query("how fast did Uber grow?")))
    query = asyncio.run(li.aget_query_embedding("how fast did Uber grow?"))
    np.testing.assert_array_equal(np.array(query), np.array(lc.embed_query("how fast did Uber grow?")))
    if with_adapter:  # the adapter acts on queries only
        plain = EmbtuneEmbeddings(tiny_model_dir, batch_size=4)
        assert not np.allclose(li.get_query_embedding(TEXTS[0]), plain.embed_query(TEXTS[0]))
        np.testing.assert_array_equal(np.array(li.get_text_embedding(TEXTS[0])), np.array(plain.embed_documents(TEXTS[:1])[0]))


def test_vector_store_index_retrieves_with_it(tiny_model_dir):
    from llama_index.core import Document, VectorStoreIndex

    embed = EmbtuneLlamaIndexEmbedding(tiny_model_dir, embed_batch_size=4)
    index = VectorStoreIndex.from_documents([Document(text=t) for t in TEXTS], embed_model=embed)
    hits = index.as_retriever(similarity_top_k=1).retrieve(TEXTS[2])
    assert hits[0].node.get_content() == TEXTS[2]  # a text is its own nearest neighbour
