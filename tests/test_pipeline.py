"""`embtune run`: interrupted by SIGINT during question generation and again during training, it
resumes and finishes with the same dataset and metrics as an uninterrupted run, paying no call twice,
and no output of the run contains the API key."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from corpora import topic_corpus
from openai_server import OpenAIServer

PLANTED_KEY = "sk-embtune-planted-secret-0123456789"


def _config(path: Path, corpus: Path, base_url: str, model: str) -> Path:
    path.write_text(f"""
[run]
name = "t"
seed = 7
[data]
inputs = ["{corpus.as_posix()}"]
[chunk]
chunker = "recursive"
chunk_size = 200
chunk_overlap = 0
[generate]
generator = "openai"
base_url = "{base_url}"
model = "test-model"
api_key = "env:EMBTUNE_TEST_KEY"
questions_per_chunk = 2
concurrency = 1
initial_backoff = 0.05
[split]
val_fraction = 0.3
[train]
model = "{model}"
loss = "mnrl"
epochs = 3
batch_size = 4
save_steps = 1
lr = 1e-3
[adapter]
type = "linear"
epochs = 3
index_pseudo_queries = {{ crop = 1 }}
[evaluate]
k = [1, 5]
""")
    return path


def interruptible_cli(*argv: str) -> list[str]:
    """The command line of ``embtune ARGV`` that a SIGINT interrupts even under a background pytest.

    A shell that runs pytest in the background (`cmd &`) hands its children SIGINT ignored, and
    embtune then (rightly, as a background job) leaves it ignored: restore it, as a terminal's Ctrl-C expects."""
    restore_sigint = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                      "sys.argv[0] = 'embtune'; runpy.run_module('embtune_core.cli', run_name='__main__')")
    return [sys.executable, "-c", restore_sigint, *argv]


def _start(config: Path, run_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, EMBTUNE_TEST_KEY=PLANTED_KEY, PYTHONUNBUFFERED="1")
    return subprocess.Popen(interruptible_cli("run", str(config), "--run-dir", str(run_dir)),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _interrupt_when(proc: subprocess.Popen, ready, timeout: float = 240) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"run ended before it could be interrupted:\n{proc.stdout.read()}")
        if ready():
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=120)
            return out
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the interruption point was never reached")


def _finish(config: Path, run_dir: Path) -> str:
    proc = _start(config, run_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    return out


def _journal_lines(run_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in run_dir.glob("stages/generate-*/work/**/*.jsonl"))


def _checkpoints(run_dir: Path) -> list[Path]:
    return list(run_dir.glob("stages/train-*/work/checkpoints/checkpoint-*/trainer_state.json"))


def _results(run_dir: Path) -> tuple[dict, dict]:
    """The generated dataset, and each system's per-query scores (paths and timings differ by run)."""
    dataset = json.loads(next(run_dir.glob("stages/generate-*/dataset.json")).read_text())
    report = json.loads(next(run_dir.glob("stages/evaluate-*/report.json")).read_text())
    return dataset, {"query_ids": report["query_ids"], "per_query": report["per_query"]}


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_result(tmp_path, tiny_model_dir):
    corpus = topic_corpus(tmp_path / "corpus")
    with OpenAIServer(latency=0.15) as server:
        config = _config(tmp_path / "run.toml", corpus, server.base_url, tiny_model_dir)

        reference = tmp_path / "reference"
        _finish(config, reference)
        calls_uninterrupted = server.count("/chat/completions")
        assert calls_uninterrupted > 4

        resumed = tmp_path / "resumed"
        out = _interrupt_when(_start(config, resumed), lambda: _journal_lines(resumed) >= 3)
        assert "interrupted" in out
        assert not list(resumed.glob("stages/generate-*/_done.json"))
        out = _interrupt_when(_start(config, resumed), lambda: len(_checkpoints(resumed)) >= 1)
        assert "interrupted" in out
        assert list(resumed.glob("stages/generate-*/_done.json"))
        assert not list(resumed.glob("stages/train-*/_done.json"))
        _finish(config, resumed)
        calls_resumed = server.count("/chat/completions") - calls_uninterrupted

    # Completed calls are journaled and never repeated; the one call in flight when SIGINT landed
    # (concurrency = 1) had no answer yet and is the only one that may be sent again.
    assert calls_uninterrupted <= calls_resumed <= calls_uninterrupted + 1, "a completed LLM call was paid twice"
    ref_dataset, ref_report = _results(reference)
    new_dataset, new_report = _results(resumed)
    assert new_dataset == ref_dataset
    assert set(new_report["per_query"]) == {"base", "fine-tuned", "adapter", "bm25", "hybrid-base", "hybrid-fine-tuned",
                                            "hybrid-adapter", "sparse-dense-base", "sparse-dense-fine-tuned",
                                            "sparse-dense-adapter"}
    assert new_report == ref_report
    # The adapter also trained on one crop pseudo-query per chunk of the index (train and val chunks).
    training = json.loads(next(resumed.glob("stages/adapter-*/adapter/adapter_config.json")).read_text())["training"]
    chunks = sum(len(json.loads(next(resumed.glob(f"stages/split-*/{name}.json")).read_text())["corpus"])
                 for name in ("train", "val"))
    assert 0 < training["augment_queries"] <= chunks

    # The key was used (the server saw it) but no file the run wrote contains it.
    for path in list(reference.rglob("*")) + list(resumed.rglob("*")):
        if path.is_file():
            assert PLANTED_KEY.encode() not in path.read_bytes(), f"API key leaked into {path}"


def test_bad_config_fails_before_creating_anything(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[run]\nname = "x"\n[data]\ninputs = ["missing-folder"]\n[train]\nepochs = -1\n')
    result = subprocess.run([sys.executable, "-m", "embtune_core.cli", "run", str(config)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 3
    assert result.stderr.strip() == (f"embtune: error: {config}: data.inputs: no such file or folder: "
                                     f"{tmp_path / 'missing-folder'}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml"]

    (tmp_path / "docs").mkdir()
    config.write_text('[data]\ninputs = ["docs"]\n[train]\nepochs = -1\n')
    result = subprocess.run([sys.executable, "-m", "embtune_core.cli", "run", str(config)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 3 and "train.epochs: must be a positive number" in result.stderr
    config.write_text('[data]\ninputs = ["docs"]\n[adapter]\nindex_pseudo_queries = "yes"\n')
    result = subprocess.run([sys.executable, "-m", "embtune_core.cli", "run", str(config)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 3 and "adapter.index_pseudo_queries: must be true, false or a table" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.toml", "docs"]


def test_named_validation_sources_split_without_leaking_repeated_questions():
    from embtune_core.data.dataset import QADataset
    from embtune_core.data.splitting import leakage
    from embtune_core.workflow.pipeline import split_by_named_sources

    ds = QADataset(
        queries={"q1": "revenue?", "q2": "auditor opinion?", "q3": "auditor opinion?", "q4": "drivers?"},
        corpus={"a1": "lyft revenue", "a2": "lyft audit", "b1": "uber audit", "b2": "uber drivers"},
        relevant_docs={"q1": ["a1"], "q2": ["a2"], "q3": ["b1"], "q4": ["b2"]},
        extras={"corpus_metadata": {"a1": {"source": "lyft.pdf"}, "a2": {"source": "lyft.pdf"},
                                    "b1": {"source": "uber.pdf"}, "b2": {"source": "uber.pdf"}}})
    train, val = split_by_named_sources(ds, {"uber.pdf"})
    assert set(train.corpus) == {"a1", "a2"} and set(val.corpus) == {"b1", "b2"}
    assert set(val.queries) == {"q4"}  # q3 repeats a training question's text
    assert not any(leakage(train, val).values())


def test_an_encoder_spec_names_the_same_evaluate_system_with_or_without_st_prefix(tmp_path):
    """`[adapter] encoder = "st:DIR"` is the model in DIR, as a bare DIR is: the evaluate stage once
    looked for a folder literally called "st:DIR" (FileNotFoundError, exit 1)."""
    from embtune_core.workflow.pipeline import _system_spec

    folder = (tmp_path / "model").as_posix()
    assert _system_spec(f"st:{folder}") == _system_spec(folder) == f"model:{folder}"
    assert _system_spec("openai:text-embedding-3-small@http://127.0.0.1:9/v1") == \
        "openai:text-embedding-3-small@http://127.0.0.1:9/v1"
