"""Issue 14: numbers that are never silently wrong. One test (or more) per fault, each asserting the
right value on a small input built here; tiny real models, real files, the real CLI."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from embtune_core.data.dataset import QADataset, load_split
from embtune_core.errors import DatasetError, InputError

WORDS = ["revenue", "riders", "drivers", "insurance", "autonomous", "vehicles", "marketplace", "bookings",
         "quarterly", "losses"]


def _long_text(i: int, words: int) -> str:
    return " ".join(f"{WORDS[(i + j) % len(WORDS)]}{i}" if j % 7 == 0 else WORDS[(i * 3 + j) % len(WORDS)]
                    for j in range(words))


def _qa(n: int = 6, words: int = 8) -> QADataset:
    corpus = {f"c{i}": f"Chunk {i}: " + _long_text(i, words) for i in range(n)}
    queries = {f"q{i}": f"what about {WORDS[i % len(WORDS)]}{i}?" for i in range(n)}
    return QADataset(queries, corpus, {f"q{i}": [f"c{i}"] for i in range(n)})


def _run(*argv: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", "embtune_core.cli", *argv], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=300, check=False)


# --- 1. truncation at the token limit is counted, warned once and recorded --------------------------
def test_truncation_is_warned_counted_and_recorded(tiny_model_dir, tmp_path, caplog):
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_core.reporting.report import report_html, report_json
    from embtune_core.scoring.evaluation import System, evaluate_systems

    dataset = _qa(6, words=300)  # ~300+ tokens each; the tiny model reads 128
    encoder = encoder_from_spec(f"st:{tiny_model_dir}")
    with caplog.at_level(logging.WARNING):
        evaluation = evaluate_systems([System("tiny", encoder)], dataset, progress_bar=False, n_resamples=50,
                                      n_permutations=50)
    assert any("6 of 6 corpus texts exceed 128 tokens" in r.getMessage() for r in caplog.records)
    data = report_json(evaluation)
    assert data["systems"][0]["token_limit"] == 128
    assert data["systems"][0]["truncation"]["document"] == {"over": 6, "total": 6}
    assert data["systems"][0]["truncation"]["query"]["over"] == 0
    assert "limit 128 tokens; cut: 0 of 6 queries, 6 of 6 corpus texts" in report_html(data)
    assert any("6 of 6 corpus texts" in n for n in data["notes"])


def test_truncation_shown_in_train_summary_and_model_card(tiny_model_dir, tmp_path, caplog):
    from embtune_core.finetuning.training import TrainSettings, train

    path = tmp_path / "train.json"
    _qa(8, words=200).save(path)
    with caplog.at_level(logging.WARNING):
        summary = train(TrainSettings(train=str(path), out=str(tmp_path / "m"), model=tiny_model_dir,
                                      batch_size=4, max_steps=1, save_steps=1))
    assert summary["max_seq_length"] == 128
    assert summary["truncation"]["document"] == {"over": 8, "total": 8}
    assert any("8 of 8 corpus texts exceed 128 tokens" in r.getMessage() for r in caplog.records)
    card = (tmp_path / "m" / "README.md").read_text()
    assert "| max_seq_length in training (tokens read of each text) | 128 (limit 128 tokens; cut: 0 of 8 queries, " \
           "8 of 8 corpus texts) |" in card


# --- 2. commands that train or mine read the train split -----------------------------------------
def _beir(folder: Path, splits: dict[str, list[int]]) -> Path:
    folder.mkdir()
    (folder / "qrels").mkdir()
    (folder / "corpus.jsonl").write_text("".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i} about {WORDS[i]}"}) + "\n" for i in range(10)))
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": f"q{i}", "text": f"where is {WORDS[i]}?"}) + "\n" for i in range(10)))
    for split, ids in splits.items():
        (folder / "qrels" / f"{split}.tsv").write_text(
            "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in ids))
    return folder


def test_train_split_by_default_and_folders_without_it_refused(tmp_path):
    folder = _beir(tmp_path / "beir", {"train": [0, 1, 2, 3, 4, 5], "test": [6, 7, 8, 9]})
    assert sorted(load_split(folder, split="train", field="train").queries) == ["q0", "q1", "q2", "q3", "q4", "q5"]
    no_train = _beir(tmp_path / "only-test", {"test": [6, 7, 8, 9]})
    with pytest.raises(DatasetError, match=r"no 'train' split \(qrels/train.tsv; this folder has: test\); "
                                           "pass --split to read another"):
        load_split(no_train, split="train", field="train")


def test_train_refuses_val_sharing_queries_and_beir_val_without_dev(tiny_model_dir, tmp_path):
    from embtune_core.finetuning.training import TrainSettings, train

    folder = _beir(tmp_path / "beir", {"train": [0, 1, 2, 3, 4, 5], "test": [6, 7, 8, 9]})
    with pytest.raises(DatasetError, match="no 'dev' split .* pass --val-split"):
        train(TrainSettings(train=str(folder), val=str(folder), out=str(tmp_path / "m"), model=tiny_model_dir))
    with pytest.raises(DatasetError, match="validation shares 6 query ids and 6 query texts with the training set"):
        train(TrainSettings(train=str(folder), val=str(folder), val_split="train", out=str(tmp_path / "m"),
                            model=tiny_model_dir))
    assert not (tmp_path / "m").exists()


def test_mine_reads_the_train_split_and_names_it(tiny_model_dir, tmp_path):
    folder = _beir(tmp_path / "beir", {"train": [0, 1, 2, 3, 4, 5], "test": [6, 7, 8, 9]})
    out = tmp_path / "mined.json"
    result = _run("mine", str(folder), "-o", str(out), "--encoder", tiny_model_dir, "--num-negatives", "1")
    assert result.returncode == 0, result.stderr
    assert sorted(QADataset.load(out).queries) == ["q0", "q1", "q2", "q3", "q4", "q5"]
    report = json.loads(Path(f"{out}.mine-report.json").read_text())
    assert report["source"] == str(folder / "qrels" / "train.tsv")


# --- 3. every pair is used; what is left out is said ----------------------------------------------
def test_every_pair_is_used_when_few_positives_limit_the_batch(tiny_model_dir, tmp_path, caplog):
    from embtune_core.finetuning.training import TrainSettings, train

    # 20 questions over 2 chunks, batch 8: a batch holds at most 2 pairs (never one chunk twice).
    corpus = {"c0": "Rides grew in the quarter.", "c1": "Insurance costs fell sharply."}
    queries = {f"q{i}": f"question number {i} about {'rides' if i % 2 else 'insurance'}" for i in range(20)}
    relevant = {f"q{i}": [f"c{i % 2}"] for i in range(20)}
    path = tmp_path / "train.json"
    QADataset(queries, corpus, relevant).save(path)
    with caplog.at_level(logging.WARNING):
        summary = train(TrainSettings(train=str(path), out=str(tmp_path / "m"), model=tiny_model_dir,
                                      batch_size=8, epochs=1))
    assert summary["global_step"] == 10  # 20 pairs / 2 per batch: all used (was 3 steps, 6 pairs)
    assert summary["data"]["batches"] == {"batch_size": 8, "per_epoch": 10, "mean_rows_per_batch": 2.0,
                                          "rows_used_per_epoch": 20, "limited_by_repeated_text": True}
    assert any("batch size 8 cannot be filled: 10 training rows share one text" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("seed", range(5))
def test_sampler_plan_uses_each_row_once_without_repeats(seed):
    from embtune_core.finetuning.sampler import batch_plan, plan_epoch

    rng = np.random.default_rng(seed)
    texts = [(f"q{i}", f"c{rng.integers(0, 7)}") for i in range(60)]
    batches, repeats = plan_epoch(texts, 16, seed)
    assert sorted(i for b in batches for i in b) == list(range(60))
    assert len(batches) == batch_plan(texts, 16).batches
    assert repeats == 0 and all(len({t for i in b for t in texts[i]}) == 2 * len(b) for b in batches)
    assert all(1 <= len(b) <= 16 for b in batches)


def test_queries_without_relevant_documents_are_counted(tmp_path, caplog):
    from embtune_core.scoring.evaluation import RetrievalTask, evaluate_embeddings

    dataset = QADataset({"q1": "a", "q2": "b", "q3": "c"}, {"c1": "x", "c2": "y"}, {"q1": ["c1"], "q2": [], "q3": []})
    task = RetrievalTask.from_dataset(dataset)
    assert task.skipped_queries == 2
    assert task.notes()[0].startswith("scoring: sentence-transformers' InformationRetrievalEvaluator conventions")
    assert task.notes()[1:] == [("2 of 3 queries have no relevant document in the corpus and are left out of every "
                                 "metric (as sentence-transformers does)")]
    assert len(evaluate_embeddings(np.eye(1, 2), np.eye(2), task)[2].per_query["mrr@10"]) == 1


def test_lopsided_split_by_source_is_warned(caplog):
    from embtune_core.data.splitting import split_by_source

    queries = {f"q{i}": f"question {i}" for i in range(50)}
    corpus = {f"c{i}": f"chunk {i}" for i in range(50)}
    metadata = {f"c{i}": {"source": "huge.pdf" if i < 49 else "small.pdf"} for i in range(50)}
    dataset = QADataset(queries, corpus, {f"q{i}": [f"c{i}"] for i in range(50)},
                        extras={"corpus_metadata": metadata})
    with caplog.at_level(logging.WARNING):
        for seed in range(4):
            split_by_source(dataset, val_fraction=0.2, seed=seed)
    assert any("not the 20% asked for" in r.getMessage() for r in caplog.records)


# --- 4. exact duplicate texts are one document ---------------------------------------------------
def test_duplicate_texts_count_as_one_document():
    from embtune_core.scoring.evaluation import RetrievalTask, evaluate_embeddings

    corpus = {"a": "boilerplate forward-looking statements", "b": "boilerplate forward-looking statements",
              "c": "revenue grew"}
    dataset = QADataset({"q1": "forward-looking?", "q2": "revenue?"}, corpus, {"q1": ["b"], "q2": ["c"]})
    corpus_emb = np.array([[1, 0, 0], [1, 0, 0], [0, 1, 0]], dtype=np.float32)  # same text, same vector
    query_emb = np.array([[1, 0.1, 0], [0, 1, 0]], dtype=np.float32)
    task = RetrievalTask.from_dataset(dataset)
    means = evaluate_embeddings(query_emb, corpus_emb, task)[3].means()
    assert means["accuracy@1"] == 1.0 and means["mrr@10"] == 1.0 and means["recall@1"] == 1.0
    assert task.notes()[1:] == [("1 corpus entries repeat the exact text of another; copies count as one document "
                                 "(a hit on any copy of a relevant text is a hit; later copies are misses)")]
    off = RetrievalTask.from_dataset(dataset, same_text_is_same_document=False)
    assert evaluate_embeddings(query_emb, corpus_emb, off)[3].per_query["mrr@10"][0] == 0.5


def test_validate_reports_duplicate_texts(tmp_path):
    path = tmp_path / "d.json"
    QADataset({"q1": "x?"}, {"a": "same", "b": "same"}, {"q1": ["b"]}).save(path)
    result = _run("validate", str(path))
    assert result.returncode == 0
    assert f"{path}: note: 1 corpus entries repeat the exact text of another" in result.stdout


# --- 5. assumptions about the model and adapters ----------------------------------------------------
@pytest.fixture
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from embtune_core.adapters.adapter_training import AdapterTrainingConfig, train_adapter
    from embtune_core.encoders.embedding_cache import EmbeddingCache
    from embtune_core.encoders.encoding import encoder_from_spec

    out = tmp_path_factory.mktemp("adapter") / "ad"
    train_adapter(encoder_from_spec(f"st:{tiny_model_dir}"), _qa(12), None,
                  config=AdapterTrainingConfig(adapter="linear", epochs=1, val_fraction=0.25),
                  cache=EmbeddingCache(tmp_path_factory.mktemp("cache")), output_dir=out)
    return out


def test_adapter_accepted_for_the_same_model_in_memory_and_at_its_own_limit(tiny_model_dir, adapter_dir):
    from sentence_transformers import SentenceTransformer

    from embtune_core.adapters.adapter_io import load_adapter
    from embtune_core.encoders.encoding import AdaptedEncoder, encoder_from_spec
    from embtune_integrations.langchain import EmbtuneEmbeddings

    in_memory = EmbtuneEmbeddings(SentenceTransformer(tiny_model_dir), adapter=adapter_dir)
    by_folder = EmbtuneEmbeddings(tiny_model_dir, adapter=adapter_dir)
    np.testing.assert_allclose(in_memory.embed_query("revenue"), by_folder.embed_query("revenue"), atol=1e-6)
    # The model's own limit (128) changes nothing, so the identity and the adapter check agree.
    AdaptedEncoder(encoder_from_spec(f"st:{tiny_model_dir}", max_seq_length=128), load_adapter(adapter_dir))
    with pytest.raises(InputError, match="adapter was trained on query vectors of 128 tokens per text.*reads 64"):
        AdaptedEncoder(encoder_from_spec(f"st:{tiny_model_dir}", max_seq_length=64), load_adapter(adapter_dir))
    other = SentenceTransformer(tiny_model_dir)
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    with pytest.raises(InputError, match="adapter was trained on encoder"):
        EmbtuneEmbeddings(other, adapter=adapter_dir)


def test_bare_module_of_the_wrong_width_is_refused_in_one_line(tiny_model_dir):
    from embtune_core.encoders.encoding import AdaptedEncoder, encoder_from_spec

    with pytest.raises(InputError, match="does not accept 32-dimensional query vectors"):
        AdaptedEncoder(encoder_from_spec(f"st:{tiny_model_dir}"), torch.nn.Linear(16, 16))


def test_train_adapter_takes_max_seq_length_and_evaluate_accepts_it(tiny_model_dir, tmp_path):
    data = tmp_path / "train.json"
    _qa(12, words=200).save(data)
    out = tmp_path / "ad"
    result = _run("train-adapter", "--train", str(data), "--model", tiny_model_dir, "--max-seq-length", "64",
                  "--epochs", "1", "--out", str(out), env={"EMBTUNE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 0, result.stderr
    assert "token limit set to 64 (the model's own is 128)" in result.stderr
    assert "12 of 12 corpus texts exceed 64 tokens" in result.stderr
    spec = f"model:{tiny_model_dir}+adapter:{out}"
    ok = _run("evaluate", str(data), "--system", spec, "--max-seq-length", "64",
              env={"EMBTUNE_CACHE": str(tmp_path / "cache")})
    assert ok.returncode == 0, ok.stderr
    refused = _run("evaluate", str(data), "--system", spec, env={"EMBTUNE_CACHE": str(tmp_path / "cache")})
    assert refused.returncode == 3 and "adapter was trained on query vectors of 64 tokens per text" in refused.stderr


def test_plain_hugging_face_folder_says_pooling_is_assumed(tiny_model_dir, caplog):
    from embtune_core.encoders.models import load_sentence_transformer

    with caplog.at_level(logging.WARNING):
        load_sentence_transformer(str(Path(tiny_model_dir).parent / "hf"))
    assert any("no sentence-transformers configuration (modules.json): loading it with mean pooling"
               in r.getMessage() for r in caplog.records)


# --- 6. a mined negative never has the positive's text ----------------------------------------------
def test_mined_negative_never_repeats_the_positive_text(tiny_model_dir):
    from embtune_core.plugins import get_registry

    dataset = _qa(10)
    for i in range(0, 10, 3):  # copies of some positives under other ids, as boilerplate repeats
        dataset.corpus[f"copy{i}"] = dataset.corpus[f"c{i}"]
    miner = get_registry().create("negative_miners", "embedding-rank", num_negatives=3, relative_margin=0.0,
                                  use_cache=False)
    mined = miner.mine(dataset, tiny_model_dir)
    for qid, negatives in mined.negatives.items():
        positive_texts = {dataset.corpus[c] for c in dataset.relevant_docs[qid]}
        texts = [dataset.corpus[c] for c in negatives]
        assert not positive_texts & set(texts) and len(set(texts)) == len(texts)
    assert miner.last_report["skipped_same_text"] >= 4


# --- 7. odd text ----------------------------------------------------------------------------------
def test_invisible_only_text_is_empty(tmp_path):
    path = tmp_path / "zw.json"
    path.write_text(json.dumps({"queries": {"q1": "x?"}, "corpus": {"c1": "\u200b\u200c\ufeff \u2060"},
                                "relevant_docs": {"q1": ["c1"]}}))
    with pytest.raises(DatasetError, match=r"corpus\.c1: empty text"):
        QADataset.load(path)
    doc = tmp_path / "zw.txt"
    doc.write_text("\u200b\u200b\n\u200d")
    result = _run("build-dataset", str(doc), "-o", str(tmp_path / "out"), "--generator", "ict")
    assert result.returncode == 3 and "empty file (only white space or invisible characters)" in result.stderr


def test_cjk_sentences_and_korean_words(minilm_path):
    from embtune_core.data.documents import Chunk, Document
    from embtune_core.plugins import get_registry
    from embtune_plugins.chunkers import SentenceChunker

    zh = "".join(f"第{i}季度的收入增长了百分之{i}十，司机人数也增加了很多。" for i in range(1, 7))
    chunks = [Chunk(f"c{i}", zh, {"source": f"{i}.txt"}) for i in range(6)]
    generator = get_registry().create("question_generators", "ict", questions_per_chunk=1, seed=0)
    assert len(generator.generate(chunks).queries) == 6  # was 0: no sentence ends, no words
    korean = " ".join(["자율주행차량의"] * 300)  # one over-long sentence of Korean words
    chunker = SentenceChunker(chunk_size=50, model=minilm_path)
    pieces = chunker.chunk([Document(korean, {"source": "ko.txt"})])
    assert len(pieces) > 1 and all(set(p.text.split()) == {"자율주행차량의"} for p in pieces)


def test_zero_page_pdf_is_named_as_such(tmp_path):
    from pypdf import PdfWriter

    from embtune_plugins.loaders import load_pdf

    path = tmp_path / "empty.pdf"
    with open(path, "wb") as f:
        PdfWriter().write(f)
    with pytest.raises(InputError, match="the PDF has no pages"):
        load_pdf(path)


def test_an_id_with_a_newline_keeps_the_error_on_one_line(tmp_path):
    path = tmp_path / "nl.json"
    path.write_text(json.dumps({"queries": {"q\n1": "x?"}, "corpus": {"c1": "text"},
                                "relevant_docs": {"q\n1": ["c9"]}}))
    result = _run("validate", str(path))
    assert result.returncode == 3
    assert result.stderr.count("\n") == 1 and "relevant_docs.q\\n1: dangling relevant id 'c9'" in result.stderr


def test_integer_relevant_ids_name_string_keys(tmp_path):
    path = tmp_path / "int.json"
    path.write_text(json.dumps({"queries": {"q1": "x?"}, "corpus": {"1": "text", "2": "other"},
                                "relevant_docs": {"q1": [1]}, "negatives": {"q1": [2]}}))
    ds = QADataset.load(path)
    assert ds.relevant_docs == {"q1": ["1"]} and ds.negatives == {"q1": ["2"]}


# --- 8. no trainer log dicts on stdout ---------------------------------------------------------------
def test_the_cli_leaves_the_callers_environment_as_it_was(tmp_path, monkeypatch):
    """The CLI silences library bars through TQDM_DISABLE / HF_HUB_DISABLE_PROGRESS_BARS; called in
    process (as from Python or a test), it must not leave them set for what the caller runs next."""
    from embtune_core.cli import main

    monkeypatch.setenv("EMBTUNE_NO_PROGRESS", "1")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    assert main(["validate", str(tmp_path / "missing.json")]) == 3
    assert "TQDM_DISABLE" not in os.environ and "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ


def test_train_prints_no_log_dicts_without_progress_bars(tiny_model_dir, tmp_path):
    path = tmp_path / "train.json"
    _qa(8).save(path)
    result = _run("train", "--train", str(path), "--model", tiny_model_dir, "--max-steps", "2",
                  "--batch-size", "4", "--out", str(tmp_path / "m"))
    assert result.returncode == 0, result.stderr
    assert "{'loss'" not in result.stdout and "'train_runtime'" not in result.stdout
    assert result.stdout.startswith("model written to")
    assert json.loads((tmp_path / "m.checkpoints" / "loss_log.jsonl").read_text().splitlines()[0])
    # EMBTUNE_NO_PROGRESS also silences the libraries' own bars, and sentence-transformers' INFO
    # lines that repeat what embtune says once stay quiet at the default level.
    library_noise = ("Loading weights", "Computing widget examples", "No device provided")
    assert not [noise for noise in library_noise if noise in result.stderr], result.stderr
    # With progress bars on, the bar stays and the dicts still go (neither stream gets them).
    with_bars = _run("train", "--train", str(path), "--model", tiny_model_dir, "--max-steps", "2",
                     "--batch-size", "4", "--out", str(tmp_path / "m2"), env={"EMBTUNE_NO_PROGRESS": "0"})
    assert with_bars.returncode == 0, with_bars.stderr
    assert "Loading weights" in with_bars.stderr  # the bars the first run silenced are real
    for stream in (with_bars.stdout, with_bars.stderr):
        assert "{'loss'" not in stream and "'train_runtime'" not in stream


def test_in_memory_model_at_another_limit_is_checked_by_number(tiny_model_dir, adapter_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from embtune_core.adapters.adapter_training import AdapterTrainingConfig, train_adapter
    from embtune_core.encoders.embedding_cache import EmbeddingCache
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_integrations.langchain import EmbtuneEmbeddings

    at_64 = SentenceTransformer(tiny_model_dir)
    at_64.max_seq_length = 64
    with pytest.raises(InputError, match="trained on query vectors of 128 tokens per text.*this encoder reads 64"):
        EmbtuneEmbeddings(at_64, adapter=adapter_dir)  # trained at the model's own 128
    adapter_64 = tmp_path / "ad64"
    train_adapter(encoder_from_spec(f"st:{tiny_model_dir}", max_seq_length=64), _qa(12), None,
                  config=AdapterTrainingConfig(adapter="linear", epochs=1, val_fraction=0.25),
                  cache=EmbeddingCache(tmp_path / "cache"), output_dir=adapter_64)
    EmbtuneEmbeddings(at_64, adapter=adapter_64)  # the same model at the same limit: accepted


def test_limit_hint_stays_within_the_model_and_beyond_it_is_refused(tiny_model_dir, tmp_path):
    data = tmp_path / "long.json"
    _qa(4, words=300).save(data)
    ok = _run("evaluate", str(data), "--system", f"model:{tiny_model_dir}", env={"EMBTUNE_CACHE": str(tmp_path / "c")})
    assert ("they are cut (pass --max-seq-length 256 to keep more of them; --document-windows mean reads them "
            "whole)") in ok.stderr  # 256 positions
    too_long = _run("evaluate", str(data), "--system", f"model:{tiny_model_dir}", "--max-seq-length", "512",
                    env={"EMBTUNE_CACHE": str(tmp_path / "c")})
    assert too_long.returncode == 3 and too_long.stderr.count("\n") == 1
    assert "--max-seq-length: 512 tokens is more than" in too_long.stderr and "(256, its position embeddings)" \
        in too_long.stderr
