"""Without any FAISS build a whole `embtune run` (mine, train, adapter, evaluate) finishes on torch search;
with FAISS installed, a CLI run prints none of FAISS's loader noise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from corpora import topic_corpus

from embtune_core.retrieval.search import faiss_module

# Runs the CLI in a child where `import faiss` fails exactly as when no FAISS build is installed
# (a None entry in sys.modules makes the import statement raise ImportError).
NO_FAISS = ("import runpy, sys; sys.modules['faiss'] = None; sys.argv[0] = 'embtune'; "
            "runpy.run_module('embtune_core.cli', run_name='__main__')")


def _config(path: Path, corpus: Path, model: str) -> Path:
    path.write_text(f"""
[run]
name = "nofaiss"
seed = 3
[data]
inputs = ["{corpus.as_posix()}"]
[chunk]
chunker = "recursive"
chunk_size = 200
chunk_overlap = 0
[generate]
generator = "ict"
questions_per_chunk = 1
[split]
val_fraction = 0.3
[mine]
encoder = "{model}"
[train]
model = "{model}"
loss = "mnrl"
max_steps = 2
batch_size = 4
lr = 1e-3
[adapter]
type = "linear"
epochs = 2
[evaluate]
k = [1, 5]
[export]
zip = false
""")
    return path


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", EMBTUNE_NO_PROGRESS="1", CUDA_VISIBLE_DEVICES="")
    env.pop("EMBTUNE_SEARCH_BACKEND", None)
    return env


def test_pipeline_without_faiss_runs_to_the_end_on_torch_search(tmp_path, tiny_model_dir):
    config = _config(tmp_path / "run.toml", topic_corpus(tmp_path / "docs"), tiny_model_dir)
    proc = subprocess.run([sys.executable, "-c", NO_FAISS, "run", str(config), "--run-dir", str(tmp_path / "run")],
                          check=False, capture_output=True, text=True, timeout=600, env=_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    # One line names the backend, once for the whole run (mining, adapter training and evaluation search).
    assert out.count("exact search: torch on cpu") == 1, out[-4000:]
    assert "ModuleNotFoundError" not in out and "Traceback" not in out, out[-4000:]
    reports = list((tmp_path / "run").glob("stages/evaluate-*/report.json"))
    assert len(reports) == 1
    assert len(json.loads(reports[0].read_text())["systems"]) >= 2


@pytest.mark.skipif(faiss_module() is None, reason="needs a FAISS build (embtune[cpu])")
def test_cli_run_with_faiss_prints_no_loader_noise_and_keeps_its_own_info_lines(tmp_path, tiny_model_dir):
    from embtune_core.data.dataset import QADataset

    data = tmp_path / "qa.json"
    QADataset(queries={"q1": "volcano feature", "q2": "glacier feature"},
              corpus={"d1": "The volcano has a feature.", "d2": "The glacier has a feature.", "d3": "A reef."},
              relevant_docs={"q1": ["d1"], "q2": ["d2"]}).save(data)
    env = dict(_env(), EMBTUNE_SEARCH_BACKEND="faiss")
    # `embtune mine` searches through FAISS and, unlike `evaluate`, never quieted FAISS's loader itself.
    proc = subprocess.run([sys.executable, "-m", "embtune_core.cli", "mine", str(data), "-o", str(tmp_path / "m.json"),
                           "--encoder", tiny_model_dir, "--num-negatives", "1", "--no-cache"],
                          check=False, capture_output=True, text=True, timeout=300, env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "swigfaiss" not in out and "ModuleNotFoundError" not in out and "faiss.loader" not in out, out
    assert "INFO embtune_core.retrieval.search: exact search: faiss on cpu" in out, out  # embtune's own INFO lines stay


def test_langchain_faiss_store_without_faiss_is_a_one_line_input_error(monkeypatch):
    pytest.importorskip("langchain_community")
    from embtune_core.errors import InputError
    from embtune_integrations.faiss_store import build_faiss_store

    monkeypatch.setitem(sys.modules, "faiss", None)  # what `import faiss` sees with no FAISS build installed
    with pytest.raises(InputError, match=r"^FAISS is not installed; install embtune\[cpu\]") as info:
        build_faiss_store(["a chunk"], embeddings=None)
    assert "\n" not in str(info.value)
