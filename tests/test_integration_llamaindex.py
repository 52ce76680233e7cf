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


# --- issue 27, fault 5: LlamaIndex copies, pickles and runs the embedding in worker processes ------------
def _same(a, b):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("with_adapter", [False, True])
def test_pickle_and_deepcopy_keep_a_working_model(tiny_model_dir, adapter_dir, with_adapter, caplog):
    import copy
    import pickle

    embed = EmbtuneLlamaIndexEmbedding(tiny_model_dir, adapter=adapter_dir if with_adapter else None,
                                       embed_batch_size=4, normalize=True)
    query, text = embed.get_query_embedding("how fast did Uber grow?"), embed.get_text_embedding(TEXTS[0])
    data = pickle.dumps(embed)
    assert len(data) < 20_000  # names and settings travel, not the weights
    assert not any("unpickleable" in r.getMessage() for r in caplog.records)
    for clone in (pickle.loads(data), copy.deepcopy(embed), embed.model_copy(deep=True)):
        assert clone._inner is not embed._inner and clone.identity == embed.identity
        assert clone.encoder_options == {"normalize": True} and clone.embed_batch_size == 4
        _same(clone.get_query_embedding("how fast did Uber grow?"), query)
        _same(clone.get_text_embedding(TEXTS[0]), text)
    # LlamaIndex's ingestion cache hashes to_dict(): the content identity is in it.
    assert embed.to_dict()["identity"] == embed.identity and " files=" in embed.identity


def test_pickled_copy_refuses_a_model_whose_files_changed(tiny_model_dir, tmp_path):
    import pickle
    import shutil

    from embtune_core.errors import InputError

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    data = pickle.dumps(EmbtuneLlamaIndexEmbedding(str(folder)))
    (folder / "README.md").write_text("a model card does not change vectors")
    pickle.loads(data)
    config = folder / "config_sentence_transformers.json"
    config.write_text(config.read_text().replace('"prompts": {', '"prompts": {"query": "q: ", '))
    with pytest.raises(InputError, match="files changed"):
        pickle.loads(data)


def test_a_model_passed_in_memory_pickles_as_itself(tiny_model_dir):
    import copy
    import pickle

    from sentence_transformers import SentenceTransformer

    embed = EmbtuneLlamaIndexEmbedding(SentenceTransformer(tiny_model_dir), embed_batch_size=4)
    assert embed.model is None
    for clone in (pickle.loads(pickle.dumps(embed)), copy.deepcopy(embed)):
        _same(clone.get_text_embedding(TEXTS[1]), embed.get_text_embedding(TEXTS[1]))


@pytest.mark.timeout(600)  # a transformation a worker cannot unpickle hangs multiprocessing.Pool for ever
def test_ingestion_pipeline_with_two_worker_processes(tiny_model_dir, adapter_dir):
    """LlamaIndex's parallel ingestion: a spawn pool unpickles the transformations in each worker."""
    import functools
    import re

    from llama_index.core import Document, VectorStoreIndex
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter

    embed = EmbtuneLlamaIndexEmbedding(tiny_model_dir, adapter=adapter_dir, embed_batch_size=4)
    documents = [Document(text=t, id_=f"doc-{i}") for i, t in enumerate(TEXTS)]
    # The splitter's default tokenizer is tiktoken's, whose file a spawned worker would download (LlamaIndex
    # points tiktoken at its bundled copy only while building it): words instead, offline.
    words = functools.partial(re.findall, r"\w+|[^\w\s]")
    pipeline = IngestionPipeline(transformations=[SentenceSplitter(chunk_size=64, chunk_overlap=0, tokenizer=words),
                                                  embed], disable_cache=True)
    nodes = pipeline.run(documents=documents, num_workers=2)
    assert len(nodes) == len(TEXTS)
    by_text = {n.get_content(): n.embedding for n in nodes}
    expected = EmbtuneEmbeddings(tiny_model_dir, batch_size=4).embed_documents(TEXTS)
    np.testing.assert_allclose([by_text[t] for t in TEXTS], expected, atol=1e-6)
    # The nodes serve a VectorStoreIndex whose queries go through the adapter.
    index = VectorStoreIndex(nodes, embed_model=embed)
    hits = index.as_retriever(similarity_top_k=1).retrieve(TEXTS[3])
    assert hits[0].node.get_content() in TEXTS
