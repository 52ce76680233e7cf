"""Documents longer than the token limit read whole as windows (embtune_core.encoders.long_documents)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embtune_core.data.dataset import QADataset

WORDS = ["revenue", "riders", "drivers", "insurance", "autonomous", "vehicles", "marketplace", "bookings",
         "quarterly", "losses", "unbelievably", "counterparty", "2021", "$1.2", "U.S.", "re-insurance"]


def _long_qa(n: int = 6, words: int = 400) -> QADataset:
    """Documents of ``words`` words whose distinctive word (what the query asks for) sits near the end,
    past any 128-token cut."""
    import random

    # Each document its own random word order (seeded): no two windows of the corpus are equal texts.
    corpus = {f"c{i}": " ".join(random.Random(i).choices(WORDS[:10], k=words)) + f" zeppelin{i} harbour{i}"
              for i in range(n)}
    queries = {f"q{i}": f"zeppelin{i} harbour{i}" for i in range(n)}
    return QADataset(queries, corpus, {f"q{i}": [f"c{i}"] for i in range(n)})


def _run(*argv: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "embtune_core.cli", *argv], capture_output=True, text=True,
                          env=full_env, timeout=300, check=False)


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from embtune_core.encoders.models import load_sentence_transformer

    return load_sentence_transformer(tiny_model_dir)


# --- splitting ---------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(words=st.lists(st.sampled_from(WORDS), min_size=0, max_size=400), limit=st.integers(16, 128),
       prompt=st.sampled_from(["", "passage: "]))
def test_windows_fit_the_limit_and_cover_the_text_in_order(tiny_model, words, limit, prompt):
    from embtune_core.encoders.long_documents import split, window_budget

    tiny_model.max_seq_length = limit
    text = " ".join(words)
    windows = split(tiny_model, [text], prompt=prompt)
    budget = window_budget(tiny_model, prompt)
    tokenizer = tiny_model.tokenizer
    for window in windows.texts:  # each window, tokenized again on its own, fits
        assert len(tokenizer(window, add_special_tokens=False)["input_ids"]) <= budget
    assert " ".join(windows.texts).split() == text.split()  # nothing lost, nothing repeated, same order
    assert np.all(windows.owner == 0) and windows.tokens.sum() == max(1, len(tokenizer(text, add_special_tokens=False)
                                                                              ["input_ids"]))
    if len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= budget:
        assert windows.texts == [text]  # fits: the unchanged text, so the plain vector


def test_windows_of_several_documents_are_owned_and_counted(tiny_model):
    from embtune_core.encoders.long_documents import split

    tiny_model.max_seq_length = 32
    windows = split(tiny_model, ["short one", " ".join(WORDS * 10), "another short"])
    assert windows.owner[0] == 0 and windows.owner[-1] == 2 and set(windows.owner) == {0, 1, 2}
    assert windows.split == 1 and windows.n_documents == 3
    assert list(windows.owner) == sorted(windows.owner)  # a document's windows are consecutive


# --- pooling and MaxP search --------------------------------------------------------------------------
def test_mean_pool_weights_windows_by_tokens():
    from embtune_core.encoders.long_documents import Windows, mean_pool

    vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], dtype=np.float32)
    windows = Windows(["a", "b", "c"], np.array([0, 0, 1]), np.array([3.0, 1.0, 5.0]), 2)
    raw = mean_pool(vectors, windows, unit=False)
    assert np.allclose(raw, [[0.75, 0.25], [0.6, 0.8]])
    unit = mean_pool(vectors, windows, unit=True)
    assert np.allclose(unit[0], np.array([0.75, 0.25]) / np.hypot(0.75, 0.25)) and np.allclose(unit[1], [0.6, 0.8])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n_docs=st.integers(1, 12), depth=st.integers(1, 15))
def test_max_pooled_search_equals_brute_force_maxp(seed, n_docs, depth):
    from embtune_core.scoring.evaluation import dense_search

    rng = np.random.default_rng(seed)
    owner = np.sort(np.concatenate([np.arange(n_docs), rng.integers(0, n_docs, rng.integers(0, 20))]))
    windows = rng.normal(size=(len(owner), 8)).astype(np.float32)
    queries = rng.normal(size=(5, 8)).astype(np.float32)
    scores, indices = dense_search(queries, windows, 8, depth, owner=owner, use_gpu=False)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)
    window_scores = unit(queries) @ unit(windows).T
    best = np.stack([window_scores[:, owner == d].max(axis=1) for d in range(n_docs)], axis=1)
    expected = np.argsort(-best, axis=1, kind="stable")[:, :min(depth, n_docs)]
    assert indices.shape == expected.shape
    assert np.allclose(np.take_along_axis(best, indices, axis=1), np.take_along_axis(best, expected, axis=1),
                       atol=1e-5)
    assert np.allclose(scores, np.take_along_axis(best, indices, axis=1), atol=1e-5)


# --- encoders ------------------------------------------------------------------------------------------
def test_windowed_encoder_reads_the_whole_document_and_leaves_short_ones_alone(tiny_model_dir):
    from embtune_core.encoders.encoding import encoder_from_spec

    plain = encoder_from_spec(f"st:{tiny_model_dir}")
    mean = encoder_from_spec(f"st:{tiny_model_dir}", document_windows="mean")
    assert mean.identity == plain.identity + " document_windows=mean"
    short, long_text = "riders and drivers", _long_qa(1).corpus["c0"]
    assert np.allclose(mean.encode_documents([short]), plain.encode_documents([short]), atol=1e-6)
    assert np.allclose(mean.encode_queries([short]), plain.encode_queries([short]), atol=1e-6)
    windows = mean.windows([long_text])
    expected = (plain.encode_documents(windows.texts) * windows.tokens[:, None]).sum(axis=0)
    assert np.allclose(mean.encode_documents([long_text])[0], expected / np.linalg.norm(expected), atol=1e-5)
    assert not np.allclose(mean.encode_documents([long_text]), plain.encode_documents([long_text]), atol=1e-3)


def test_max_and_non_local_encoders_are_refused_where_one_vector_is_needed(tiny_model_dir, monkeypatch):
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_core.errors import UsageError
    from embtune_integrations.langchain import EmbtuneEmbeddings

    with pytest.raises(UsageError, match="document_windows: 'max' keeps several vectors"):
        encoder_from_spec(f"st:{tiny_model_dir}", document_windows="max").encode_documents(["x"])
    with pytest.raises(UsageError, match="document_windows: 'max' keeps several vectors"):
        EmbtuneEmbeddings(tiny_model_dir, document_windows="max")
    with pytest.raises(UsageError, match="document_windows: must be one of off, mean, max"):
        encoder_from_spec(f"st:{tiny_model_dir}", document_windows="sum")
    # An encoder that cannot count its tokens (any LangChain Embeddings) cannot split documents; an
    # OpenAI-compatible one can (issue 27: tests/test_openai_limits.py).
    from langchain_core.embeddings import FakeEmbeddings

    from embtune_core.encoders.long_documents import wrap
    from embtune_core.plugins import get_registry

    with pytest.raises(UsageError, match="encoders that count their tokens"):
        wrap(get_registry().create("encoders", "langchain", embeddings=FakeEmbeddings(size=8)), "mean")
    monkeypatch.setenv("OPENAI_API_KEY", "not-a-key")  # never sent: nothing is embedded here
    encoder_from_spec("openai:text-embedding-3-small@http://127.0.0.1:9/v1", document_windows="mean")


def test_langchain_embeddings_with_mean_windows(tiny_model_dir):
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_integrations.langchain import EmbtuneEmbeddings

    text = _long_qa(1).corpus["c0"]
    embeddings = EmbtuneEmbeddings(tiny_model_dir, document_windows="mean", normalize=True, prompts=True)
    direct = encoder_from_spec(f"st:{tiny_model_dir}", document_windows="mean").encode_documents([text])
    assert np.allclose(embeddings.embed_documents([text]), direct, atol=1e-6)
    assert embeddings.document_identity.endswith("document_windows=mean")


def test_langchain_window_retriever_ranks_as_evaluate_maxp(tiny_model_dir, tmp_path):
    pytest.importorskip("langchain_classic")
    pytest.importorskip("faiss")
    from langchain_core.documents import Document

    from embtune_core.encoders.embedding_cache import EmbeddingCache
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_core.errors import UsageError
    from embtune_core.scoring.evaluation import System, evaluate_systems
    from embtune_integrations.langchain import EmbtuneEmbeddings
    from embtune_integrations.multi_vector import window_retriever

    data = _long_qa(6)
    evaluation = evaluate_systems([System("max", encoder_from_spec(f"st:{tiny_model_dir}", document_windows="max"))],
                                  data, progress_bar=False, n_resamples=20, n_permutations=20,
                                  cache=EmbeddingCache(tmp_path / "cache"))
    ranking = evaluation.systems[0].dims[max(evaluation.systems[0].dims)].ranking
    ids = list(data.corpus)
    docs = [Document(page_content=text, metadata={"source": cid}, id=cid) for cid, text in data.corpus.items()]
    retriever = window_retriever(docs, EmbtuneEmbeddings(tiny_model_dir, normalize=True, prompts=True), k=3,
                                 use_gpu=False)
    for row, question in enumerate(data.queries.values()):
        found = retriever.invoke(question)
        assert [d.id for d in found] == [ids[i] for i in ranking.indices[row, :3]]
        assert found[0].page_content in data.corpus.values()  # the whole document, not a window
    with pytest.raises(UsageError, match="embeddings: needs EmbtuneEmbeddings over a local"):
        window_retriever(docs, EmbtuneEmbeddings(tiny_model_dir, document_windows="mean"))


# --- evaluation ----------------------------------------------------------------------------------------
def test_evaluation_with_windows_reports_them_and_max_matches_brute_force(tiny_model_dir, tmp_path):
    from embtune_core.encoders.embedding_cache import EmbeddingCache
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_core.scoring.evaluation import System, evaluate_systems

    data = _long_qa(6)
    cache = EmbeddingCache(tmp_path / "cache")
    systems = [System(mode, encoder_from_spec(f"st:{tiny_model_dir}", document_windows=mode))
               for mode in ("off", "mean", "max")]
    evaluation = evaluate_systems(systems, data, progress_bar=False, n_resamples=50, n_permutations=50, cache=cache)
    notes = " | ".join(evaluation.notes)
    assert "system 'off': limit 128 tokens; cut: 0 of 6 queries, 6 of 6 corpus texts" in notes
    assert "system 'max': 6 of 6 corpus texts longer than 128 tokens read whole as" in notes
    assert "(best window per document (MaxP))" in notes and "(token-weighted mean of windows)" in notes
    by_name = {r.name: r for r in evaluation.systems}
    assert by_name["mean"].truncation["document"]["over"] == 0  # read whole, not cut

    plain = encoder_from_spec(f"st:{tiny_model_dir}")
    windows = systems[2].encoder.windows(list(data.corpus.values()))
    window_vectors = plain.encode_documents(windows.texts)
    queries = plain.encode_queries(list(data.queries.values()))
    best = np.stack([(queries @ window_vectors.T)[:, windows.owner == d].max(axis=1) for d in range(6)], axis=1)
    expected_first = np.argmax(best, axis=1)
    ranking = by_name["max"].dims[max(by_name["max"].dims)].ranking
    assert list(ranking.indices[:, 0]) == list(expected_first)


def test_cli_evaluate_windows_and_refusals(tiny_model_dir, tmp_path):
    data = tmp_path / "long.json"
    _long_qa(4).save(data)
    env = {"EMBTUNE_CACHE": str(tmp_path / "c")}
    out = tmp_path / "ev"
    ok = _run("evaluate", str(data), "--system", f"model:{tiny_model_dir}", "--document-windows", "max",
              "--out", str(out), env=env)
    assert ok.returncode == 0, ok.stderr
    report = json.loads((out / "report.json").read_text())
    assert "document_windows=max" in report["systems"][0]["identity"]
    assert any("read whole as" in note for note in report["notes"])
    refused = _run("train-adapter", "--train", str(data), "--encoder", f"st:{tiny_model_dir}",
                   "--document-windows", "max", "--out", str(tmp_path / "ad"), env=env)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "--document-windows: 'max' keeps several vectors per document" in refused.stderr


def test_pipeline_table_refuses_max_outside_evaluate(tmp_path):
    from embtune_core.encoders.encoder_options import pop_from_table
    from embtune_core.errors import ConfigError

    assert pop_from_table({"document_windows": "max"}, tmp_path / "c.toml", "evaluate") == {"document_windows": "max"}
    with pytest.raises(ConfigError, match=r"c.toml: adapter.document_windows: 'max' keeps several vectors"):
        pop_from_table({"document_windows": "max"}, tmp_path / "c.toml", "adapter")
    with pytest.raises(ConfigError, match=r"mine.document_windows: must be one of off, mean, max"):
        pop_from_table({"document_windows": "all"}, tmp_path / "c.toml", "mine")


def test_adapter_fits_its_base_with_or_without_windows(tiny_model_dir, tmp_path):
    from embtune_core.adapters.adapter_training import AdapterTrainingConfig, train_adapter
    from embtune_core.encoders.embedding_cache import EmbeddingCache
    from embtune_core.encoders.encoding import AdaptedEncoder, encoder_from_spec

    out = tmp_path / "ad"
    train_adapter(encoder_from_spec(f"st:{tiny_model_dir}", document_windows="mean"), _long_qa(12), None,
                  config=AdapterTrainingConfig(adapter="linear", epochs=1, val_fraction=0.25),
                  cache=EmbeddingCache(tmp_path / "cache"), output_dir=out)
    from embtune_core.adapters.adapter_io import load_adapter

    adapter = load_adapter(out)
    for mode in ("off", "mean", "max"):  # queries are never split: the adapter's input is the same
        AdaptedEncoder(encoder_from_spec(f"st:{tiny_model_dir}", document_windows=mode), adapter)


def test_docsgpt_setting_is_checked(tiny_model_dir, monkeypatch):
    from embtune_core.errors import InputError
    from embtune_integrations.docsgpt import embeddings_from_name

    monkeypatch.setenv("EMBTUNE_DOCUMENT_WINDOWS", "max")
    with pytest.raises(InputError, match="EMBTUNE_DOCUMENT_WINDOWS: must be off or mean, got 'max'"):
        embeddings_from_name(f"embtune:{tiny_model_dir}")
    monkeypatch.setenv("EMBTUNE_DOCUMENT_WINDOWS", "mean")
    assert embeddings_from_name(f"embtune:{tiny_model_dir}").document_identity.endswith("document_windows=mean")


def test_shared_10k_chunks_are_mostly_longer_than_minilm_reads(shared_data):
    """The reason for all this: most LlamaIndex 10-K chunks exceed MiniLM's 256 tokens."""
    from embtune_core.encoders.long_documents import split
    from embtune_core.encoders.models import load_sentence_transformer

    corpus = json.loads((Path(shared_data) / "llamaindex-10k-qa" / "val_dataset.json").read_text())["corpus"]
    windows = split(load_sentence_transformer(), list(corpus.values())[:40])
    assert windows.split > 20 and len(windows.texts) > 80


# --- training ------------------------------------------------------------------------------------------
def test_best_window_positives_pick_the_window_that_holds_the_answer(minilm_path):
    from embtune_core.encoders.long_documents import best_window_positives
    from embtune_core.encoders.models import load_sentence_transformer

    model = load_sentence_transformer(minilm_path)
    model.max_seq_length = 64
    data = _long_qa(4, words=150)
    moved, record, groups = best_window_positives(data, model)
    assert record["long_positives"] == 4 and record["pairs_moved"] == 4 and record["windows"] >= 8
    for i in range(4):
        (window_id,) = moved.relevant_docs[f"q{i}"]
        assert window_id.startswith(f"c{i}#w") and f"zeppelin{i} harbour{i}" in moved.corpus[window_id]
        assert groups[moved.corpus[window_id]] == f"c{i}"
    assert moved.corpus["c0"] == data.corpus["c0"]  # the chunk itself is untouched


def test_windows_of_one_chunk_never_share_a_batch():
    from embtune_core.finetuning.sampler import batch_plan, plan_epoch

    texts = [(f"q{i}", f"chunk{i % 3} window{i}") for i in range(12)]
    groups = {f"chunk{i % 3} window{i}": f"chunk{i % 3}" for i in range(12)}
    grouped = [(q, groups[d]) for q, d in texts]
    assert batch_plan(grouped, 8).batches == 4  # 4 windows of each chunk: 4 batches, not ceil(12 / 8)
    batches, repeats = plan_epoch(grouped, 8, seed=3)
    assert repeats == 0
    for batch in batches:
        assert len({grouped[i][1] for i in batch}) == len(batch)


def test_training_with_best_windows_records_what_it_did(tiny_model_dir, tmp_path):
    from embtune_core.finetuning.training import TrainSettings, train

    data = tmp_path / "long.json"
    _long_qa(8, words=200).save(data)
    result = train(TrainSettings(train=str(data), out=str(tmp_path / "m"), model=tiny_model_dir, epochs=1,
                                 batch_size=4, max_seq_length=48, document_windows="best"))
    assert result.document_windows["long_positives"] == 8 and result.document_windows["pairs_moved"] == 8
    assert result.truncation["document"]["over"] == 0  # trained on windows that fit
    saved = json.loads((tmp_path / "m" / "embtune_train.json").read_text())
    assert saved["document_windows"]["mode"] == "best" and saved["settings"]["document_windows"] == "best"


def test_windows_on_short_documents_say_they_change_nothing(tiny_model_dir):
    from embtune_core.encoders.encoding import encoder_from_spec

    encoder = encoder_from_spec(f"st:{tiny_model_dir}", document_windows="max")
    line = encoder.describe(encoder.windows(["riders", "drivers and insurance"]))
    assert line == "none of 2 corpus texts is longer than 128 tokens: document_windows=max changes nothing"
