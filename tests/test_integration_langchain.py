"""LangChain integration: EmbtuneEmbeddings (model dir, base + adapter) and pickle-free FAISS stores."""

from __future__ import annotations

import asyncio
import json
import pickle

import numpy as np
import pytest
import torch

from embtune_core.adapters.adapter_io import AdapterConfig, build_adapter, save_adapter
from embtune_core.errors import InputError
from embtune_core.retrieval.search import gpu_available
from embtune_integrations.faiss_store import (
    MANIFEST,
    as_retriever,
    build_faiss_store,
    is_on_gpu,
    load_faiss_store,
    save_faiss_store,
)
from embtune_integrations.langchain import EmbtuneEmbeddings

TEXTS = [
    "Uber's revenue grew 57% in 2021 to 17.5 billion dollars.",
    "The mitochondria is the powerhouse of the cell.",
    "Paris is the capital and largest city of France.",
    "FAISS performs efficient similarity search over dense vectors.",
    "The Great Barrier Reef lies off the coast of Queensland.",
    "Photosynthesis converts light energy into chemical energy.",
]


def make_adapter(base: EmbtuneEmbeddings, directory, seed: int = 0):
    """A linear adapter for ``base`` with random (non-identity) weights, saved like training saves it."""
    torch.manual_seed(seed)
    module = build_adapter("linear", base.dimension, {"bias": True})
    with torch.no_grad():
        module.linear.weight.add_(0.5 * torch.randn_like(module.linear.weight))
        module.linear.bias.copy_(0.1 * torch.randn_like(module.linear.bias))
    config = AdapterConfig("linear", base.dimension, {"bias": True}, base_encoder_identity=base.identity,
                           base_normalize=True, normalize_output=True)
    save_adapter(directory, module, config)
    return module


@pytest.fixture(scope="module")
def base(tiny_model_dir):
    return EmbtuneEmbeddings(tiny_model_dir, batch_size=4)


@pytest.fixture(scope="module")
def adapter_dir(base, tmp_path_factory):
    directory = tmp_path_factory.mktemp("adapter") / "adapter"
    make_adapter(base, directory)
    return directory


@pytest.fixture(scope="module")
def adapted(tiny_model_dir, adapter_dir):
    return EmbtuneEmbeddings(tiny_model_dir, adapter=adapter_dir, batch_size=4)


def test_model_directory_embeddings_match_the_model(base, tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    assert base.dimension == 32
    docs = base.embed_documents(TEXTS)
    assert isinstance(docs, list) and len(docs) == len(TEXTS)
    assert all(isinstance(v, list) and len(v) == 32 and isinstance(v[0], float) for v in docs)
    expected = SentenceTransformer(tiny_model_dir).encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(np.array(docs), expected, atol=1e-5)
    query = base.embed_query(TEXTS[0])
    assert len(query) == 32 and abs(np.linalg.norm(query) - 1) < 1e-5
    assert base.embed_documents([]) == []
    with pytest.raises(InputError):
        base.embed_documents("one string, not a list")


def test_adapter_changes_query_vectors_only(base, adapted, adapter_dir):
    assert adapted.dimension == base.dimension == 32
    assert adapted.has_adapter and not base.has_adapter
    # Documents: exactly the base model's, so an existing index stays valid.
    assert np.array_equal(np.array(adapted.embed_documents(TEXTS)), np.array(base.embed_documents(TEXTS)))
    assert adapted.document_identity == base.identity != adapted.identity
    # Queries: normalize(W q + b) with the saved weights.
    from safetensors.torch import load_file

    weights = load_file(str(adapter_dir / "adapter.safetensors"))
    q = np.array(base.embed_query(TEXTS[1]))
    expected = weights["linear.weight"].numpy() @ q + weights["linear.bias"].numpy()
    expected /= np.linalg.norm(expected)
    got = np.array(adapted.embed_query(TEXTS[1]))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert not np.allclose(got, q, atol=1e-3)
    np.testing.assert_allclose(np.array(adapted.embed_queries([TEXTS[1]]))[0], got, atol=1e-6)


def test_adapter_for_another_base_model_is_refused(tiny_model_dir, adapter_dir):
    # A shorter token limit changes the vectors of long texts: the adapter was not trained on them.
    # (normalize=True would not: this model ends in a Normalize module, so its vectors are equal.)
    with pytest.raises(InputError, match="trained on encoder"):
        EmbtuneEmbeddings(tiny_model_dir, adapter=adapter_dir, max_seq_length=16)


def test_async_methods_match_sync_and_do_not_block_the_loop(base, adapted):
    texts = [f"{t} (variant {i})" for i in range(12) for t in TEXTS]

    async def main():
        done = asyncio.Event()
        ticks = 0

        async def ticker():
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        async def work():
            try:
                return await asyncio.gather(base.aembed_documents(texts), adapted.aembed_query(TEXTS[2]))
            finally:
                done.set()

        (docs, query), _ = await asyncio.gather(work(), ticker())
        return docs, query, ticks

    docs, query, ticks = asyncio.run(main())
    np.testing.assert_allclose(np.array(docs), np.array(base.embed_documents(texts)), atol=1e-6)
    np.testing.assert_allclose(query, adapted.embed_query(TEXTS[2]), atol=1e-6)
    assert ticks > 10  # the loop kept running while the model computed in a thread


def _forbid_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "dump", refuse)
    monkeypatch.setattr(pickle, "dumps", refuse)


def test_faiss_store_build_save_load_query_without_pickle(base, tmp_path, monkeypatch):
    from langchain_core.documents import Document

    documents = [Document(page_content=t, metadata={"source": f"doc{i}.md", "page": i}, id=f"chunk-{i}")
                 for i, t in enumerate(TEXTS)]
    _forbid_pickle(monkeypatch)
    store = build_faiss_store(documents, base, use_gpu=None)
    assert store.index.ntotal == len(TEXTS) and store.index.d == base.dimension
    before = store.similarity_search_with_score(TEXTS[3], k=3)

    folder = save_faiss_store(store, tmp_path / "index")
    assert sorted(p.name for p in folder.iterdir()) == ["docstore.json", "index.faiss", MANIFEST]
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["dimension"] == 32 and manifest["count"] == len(TEXTS)
    assert manifest["distance_strategy"] == "MAX_INNER_PRODUCT"
    assert manifest["embeddings"]["document_identity"] == base.identity

    loaded = load_faiss_store(folder, base)
    after = loaded.similarity_search_with_score(TEXTS[3], k=3)
    assert [d.id for d, _ in after] == [d.id for d, _ in before]
    np.testing.assert_allclose([s for _, s in after], [s for _, s in before], atol=1e-6)
    top, score = after[0]
    assert top.id == "chunk-3" and top.page_content == TEXTS[3]
    assert top.metadata == {"source": "doc3.md", "page": 3}
    assert score == pytest.approx(1.0, abs=1e-5)  # the query is the document's own text

    hits = as_retriever(loaded, k=2).invoke(TEXTS[4])
    assert len(hits) == 2 and hits[0].id == "chunk-4"


def test_store_built_with_base_model_serves_the_adapted_retriever(base, adapted, tmp_path, tiny_model_dir):
    folder = save_faiss_store(build_faiss_store(TEXTS, base, ids=[f"c{i}" for i in range(6)]), tmp_path / "ix")
    store = load_faiss_store(folder, adapted)  # same document vectors: no re-indexing
    vector = np.array(adapted.embed_query(TEXTS[0]), dtype=np.float32)
    scores, _ = store.index.search(vector[None, :], 6)
    documents = np.array(base.embed_documents(TEXTS), dtype=np.float32)
    np.testing.assert_allclose(np.sort(scores[0]), np.sort(documents @ vector), atol=1e-5)
    assert len(as_retriever(store, k=3).invoke(TEXTS[0])) == 3

    other = EmbtuneEmbeddings(tiny_model_dir, max_seq_length=16)  # different document vectors
    with pytest.raises(InputError, match="indexed with"):
        load_faiss_store(folder, other)


def test_langchain_pickle_store_needs_explicit_opt_in(base, tmp_path):
    store = build_faiss_store(TEXTS, base)
    store.save_local(str(tmp_path / "lc"))  # LangChain's own format: index.faiss + index.pkl
    with pytest.raises(InputError) as error:
        load_faiss_store(tmp_path / "lc", base)
    message = str(error.value)
    assert "\n" not in message and "allow_dangerous_deserialization=True" in message and "pickle" in message

    loaded = load_faiss_store(tmp_path / "lc", base, allow_dangerous_deserialization=True)
    assert loaded.similarity_search(TEXTS[5], k=1)[0].page_content == TEXTS[5]
    # Converting it: re-saved in our format, it loads without the flag.
    save_faiss_store(loaded, tmp_path / "converted")
    assert load_faiss_store(tmp_path / "converted", base).index.ntotal == len(TEXTS)


def test_tampered_or_foreign_folders_are_refused(base, tmp_path):
    folder = save_faiss_store(build_faiss_store(TEXTS[:2], base), tmp_path / "ix")
    docstore = folder / "docstore.json"
    docstore.write_text(docstore.read_text().replace("Uber", "Lyft"))
    with pytest.raises(InputError, match="checksum"):
        load_faiss_store(folder, base)

    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    with pytest.raises(InputError, match="refusing to replace"):
        save_faiss_store(build_faiss_store(TEXTS[:2], base), foreign)
    assert (foreign / "keep.txt").read_text() == "precious"
    with pytest.raises(InputError, match="no manifest.json"):
        load_faiss_store(foreign, base)


def test_gpu_placement_follows_availability(base):
    store = build_faiss_store(TEXTS[:3], base, use_gpu=False)
    assert not is_on_gpu(store)
    if gpu_available():
        assert is_on_gpu(build_faiss_store(TEXTS[:3], base, use_gpu=True))
    else:
        with pytest.raises(InputError, match="GPU"):
            build_faiss_store(TEXTS[:3], base, use_gpu=True)


def test_example_script_compares_base_and_tuned_retrievers(tiny_model_dir, adapter_dir, tmp_path):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "langchain_retrieval.py"
    spec = importlib.util.spec_from_file_location("langchain_retrieval_example", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    report = tmp_path / "compare.json"
    code = example.main(["--base", tiny_model_dir, "--adapter", str(adapter_dir), "--model", tiny_model_dir,
                         "--k", "3", "--out", str(tmp_path / "work"), "--report", str(report)])
    assert code == 0
    figures = json.loads(report.read_text())
    assert figures["questions"] == 10 and figures["chunks"] == 10
    assert set(figures["results"]) == {"base", "base + adapter", "fine-tuned"}
    # The same model as "fine-tuned" must score exactly as the base retriever.
    assert figures["results"]["fine-tuned"] == figures["results"]["base"]
    for results in figures["results"].values():
        assert 0.0 <= results["mrr@3"] <= results["hit_rate@3"] <= 1.0


# --- LangChain's vector-store contract on every store embtune builds or loads (issue 16, fault 2) ---
def _stores(embeddings, strategy, tmp_path):
    """The same texts as a store just built, one saved and loaded, and a LangChain pickle store loaded."""
    built = build_faiss_store(TEXTS, embeddings, distance_strategy=strategy, ids=[f"c{i}" for i in range(6)],
                              metadatas=[{"topic": "science" if i in (1, 5) else "other"} for i in range(6)])
    built.save_local(str(tmp_path / "lc"))  # LangChain's format: index.pkl records no distance strategy
    return {"built": built,
            "loaded": load_faiss_store(save_faiss_store(built, tmp_path / "ix"), embeddings),
            "pickle": load_faiss_store(tmp_path / "lc", embeddings, allow_dangerous_deserialization=True)}


@pytest.mark.parametrize("strategy", ["max_inner_product", "euclidean"])
@pytest.mark.parametrize("kind", ["normalizing", "non-normalizing"])
def test_relevance_lies_in_0_1_and_rises_with_similarity(host_models, kind, strategy, tmp_path):
    embeddings = EmbtuneEmbeddings(host_models[kind])
    documents = np.array(embeddings.embed_documents(TEXTS))
    query = np.array(embeddings.embed_query(TEXTS[2]))
    # Similarity as the index measures it: inner product, or minus the squared L2 distance.
    similarity = documents @ query if strategy == "max_inner_product" else -((documents - query) ** 2).sum(axis=1)
    expected_order = [TEXTS[i] for i in np.argsort(-similarity)]
    for name, store in _stores(embeddings, strategy, tmp_path).items():
        results = store.similarity_search_with_relevance_scores(TEXTS[2], k=6)
        relevance = [score for _, score in results]
        assert all(0.0 <= r <= 1.0 for r in relevance), (name, relevance)
        assert [d.page_content for d, _ in results] == expected_order, name
        assert relevance == sorted(relevance, reverse=True), name  # more similar, more relevant
        if kind == "normalizing":  # unit vectors: relevance is the cosine (clipped at 0)
            cosines = np.clip(np.sort(documents @ query)[::-1], 0, 1)
            np.testing.assert_allclose(relevance, cosines, atol=1e-5, err_msg=name)


def test_threshold_retriever_keeps_the_relevant_chunk(minilm_path, tmp_path):
    embeddings = EmbtuneEmbeddings(minilm_path)
    question = "What is the capital of France?"
    cosines = np.array(embeddings.embed_documents(TEXTS)) @ np.array(embeddings.embed_query(question))
    assert cosines[2] > 0.7 and np.delete(cosines, 2).max() < 0.2  # Paris, then nothing related
    for strategy in ("max_inner_product", "euclidean"):
        for name, store in _stores(embeddings, strategy, tmp_path / strategy).items():
            retriever = as_retriever(store, k=4, search_type="similarity_score_threshold", score_threshold=0.5)
            assert [d.page_content for d in retriever.invoke(question)] == [TEXTS[2]], (strategy, name)


def test_k_filter_mmr_and_width_follow_langchains_contract(base, tmp_path):
    from langchain_core.documents import Document

    for name, store in _stores(base, "max_inner_product", tmp_path).items():
        assert len(store.similarity_search(TEXTS[0], k=3)) == 3
        science = store.similarity_search(TEXTS[0], k=6, filter={"topic": "science"})
        assert {d.page_content for d in science} == {TEXTS[1], TEXTS[5]}, name
        mmr = store.max_marginal_relevance_search(TEXTS[3], k=3, fetch_k=6)
        assert len(mmr) == 3 and mmr[0].page_content == TEXTS[3] and len({d.page_content for d in mmr}) == 3
        hits = as_retriever(store, k=2, search_type="mmr", fetch_k=6).invoke(TEXTS[4])
        assert len(hits) == 2 and hits[0].page_content == TEXTS[4]
        with pytest.raises(InputError, match="16-dimensional document vectors but the index holds 32"):
            store.add_embeddings([("too narrow", [0.1] * 16)])
        store.add_documents([Document(page_content="A new chunk about coral reefs.", id=f"{name}-new")])
        assert store.index.ntotal == len(TEXTS) + 1


# --- issue 27, fault 1: any Embeddings object, checked by what it returns ---------------------------------
class OwnEmbeddings:
    """A user's own LangChain Embeddings subclass, with none of embtune's attributes."""

    def __new__(cls, width: int):
        from langchain_core.embeddings import Embeddings

        class Own(Embeddings):
            def embed_documents(self, texts):
                return [[0.1] * width for _ in texts]

            def embed_query(self, text):
                return [0.1] * width

        return Own()


def _foreign(kind: str, host_models):
    from langchain_core.embeddings import DeterministicFakeEmbedding, FakeEmbeddings
    from langchain_huggingface import HuggingFaceEmbeddings

    return {"fake-16": lambda: FakeEmbeddings(size=16), "own-48": lambda: OwnEmbeddings(48),
            "deterministic-32": lambda: DeterministicFakeEmbedding(size=32),
            # Same width, same weights, other vectors: the model without its Normalize module.
            "hf-other-model": lambda: HuggingFaceEmbeddings(model_name=host_models["non-normalizing"]),
            "hf-same-model": lambda: HuggingFaceEmbeddings(model_name=host_models["normalizing"])}[kind]()


@pytest.mark.parametrize("kind, problem", [("fake-16", "16-dimensional"), ("own-48", "48-dimensional"),
                                           ("deterministic-32", "away from its stored vector"),
                                           ("hf-other-model", "away from its stored vector"), ("hf-same-model", None)])
@pytest.mark.parametrize("store_format", ["embtune", "pickle"])
def test_store_loaded_with_any_embeddings_is_checked_at_load(host_models, kind, problem, store_format, tmp_path):
    """Width (a probe through embed_query) and identity (the first document embedded again) are checked
    for any Embeddings, where faiss would fail with a bare AssertionError or search with wrong vectors."""
    from langchain_community.vectorstores import FAISS
    from langchain_huggingface import HuggingFaceEmbeddings

    folder = tmp_path / "store"
    if store_format == "embtune":
        save_faiss_store(build_faiss_store(TEXTS, EmbtuneEmbeddings(host_models["normalizing"])), folder)
    else:  # what DocsGPT and LangChain users save
        FAISS.from_texts(TEXTS, HuggingFaceEmbeddings(model_name=host_models["normalizing"])).save_local(str(folder))
    embeddings = _foreign(kind, host_models)
    if problem is None:
        store = load_faiss_store(folder, embeddings, allow_dangerous_deserialization=True)
        assert store.similarity_search(TEXTS[2], k=1)[0].page_content == TEXTS[2]
        return
    with pytest.raises(InputError) as error:
        load_faiss_store(folder, embeddings, allow_dangerous_deserialization=True)
    message = str(error.value)
    assert "\n" not in message and problem in message and "index.faiss" in message, message
    if "dimensional" in message:  # the width is checked even when the identity check is switched off
        with pytest.raises(InputError, match=problem):
            load_faiss_store(folder, embeddings, allow_dangerous_deserialization=True, check_embeddings=False)
    else:
        load_faiss_store(folder, embeddings, allow_dangerous_deserialization=True, check_embeddings=False)


def test_query_vectors_of_another_width_are_refused_at_search(base, tmp_path):
    from langchain_core.embeddings import FakeEmbeddings

    store = build_faiss_store(TEXTS, base)
    store.embedding_function = FakeEmbeddings(size=8)  # swapped after loading: only the query can tell
    for search in (lambda: store.similarity_search("reefs", k=2), lambda: store.max_marginal_relevance_search("reefs"),
                   lambda: asyncio.run(store.asimilarity_search("reefs")),
                   lambda: as_retriever(store, k=2, search_type="mmr").invoke("reefs")):
        with pytest.raises(InputError) as error:
            search()
        assert "FakeEmbeddings returned a query vector of 8 dimensions" in str(error.value)
        assert "\n" not in str(error.value)


def test_compressed_index_is_checked_by_width_and_says_so(base, tmp_path, caplog):
    """An index that keeps no exact vectors (LSH here) cannot give the stored vector back: said in one line."""
    import faiss
    from langchain_community.docstore.in_memory import InMemoryDocstore
    from langchain_core.documents import Document

    from embtune_integrations.faiss_store import check_store_embeddings, store_class

    vectors = np.asarray(base.embed_documents(TEXTS), dtype=np.float32)
    index = faiss.IndexLSH(32, 64)
    index.add(vectors)
    docs = {str(i): Document(page_content=t, id=str(i)) for i, t in enumerate(TEXTS)}
    store = store_class()(base, index, InMemoryDocstore(docs), {i: str(i) for i in range(len(TEXTS))})
    with caplog.at_level("WARNING"):
        check_store_embeddings(store, base, path="lsh/index.faiss")
    assert any("cannot read a stored vector back from IndexLSH" in r.getMessage() for r in caplog.records)
