"""Kind 8 of issue 26: a config's relative paths are read from the config's folder wherever the command
runs, and nothing embtune exports records a machine's absolute path."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from embtune_core.config_paths import resolve_encoder, resolve_table
from embtune_core.data.dataset import QADataset
from embtune_core.publishing.portable import portable


def _data(n: int = 8) -> QADataset:
    corpus = {f"c{i}": f"Chunk {i} tells about topic{i} and subject{i} in detail." for i in range(n)}
    return QADataset({f"q{i}": f"what about topic{i}?" for i in range(n)}, corpus, {f"q{i}": [f"c{i}"] for i in range(n)})


def _embtune(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "embtune_core.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=600, check=False)


def test_table_values_resolve_from_the_config_folder(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    config = tmp_path / "conf" / "x.toml"
    table = resolve_table({"train": "data/t.json", "model": "model", "encoder": "st:model", "inputs": ["docs"],
                           "loss": "mnrl"}, config)
    conf = tmp_path / "conf"
    assert table == {"train": str(conf / "data/t.json"), "model": str(conf / "model"),
                     "encoder": f"st:{conf / 'model'}", "inputs": [str(conf / "docs")], "loss": "mnrl"}
    # names that are no path beside the config stay names: the hub, packaged copies, API models
    assert resolve_table({"model": "sentence-transformers/all-MiniLM-L6-v2"}, config)["model"] == \
        "sentence-transformers/all-MiniLM-L6-v2"
    assert resolve_encoder("openai:text-embedding-3-small@http://127.0.0.1:9/v1", conf).startswith("openai:")
    assert resolve_table({"model": "./missing"}, config)["model"] == str(conf / "missing")  # written as a path


def test_run_reads_a_relative_model_from_the_config_folder_from_anywhere(tmp_path, tiny_model_dir):
    project = tmp_path / "project"
    project.mkdir()
    shutil.copytree(tiny_model_dir, project / "model")
    _data().save(project / "train.json")
    (project / "run.toml").write_text('[data]\ntrain = "train.json"\n[split]\nval_fraction = 0.5\nsplit_by = "chunk"\n'
                                      '[train]\nenabled = false\nmodel = "model"\n[evaluate]\nk = [1]\n'
                                      'resamples = 20\npermutations = 20\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # before: the model was looked up as "model" in the working directory, then on the hub (exit 1)
    result = _embtune("run", str(project / "run.toml"), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    report = json.loads((project / "runs" / "run" / "report.json").read_text())
    assert report["systems"][0]["name"] == "base"


def test_train_config_paths_and_an_export_without_absolute_paths(tmp_path, tiny_model_dir):
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    shutil.copytree(tiny_model_dir, project / "model")
    _data().save(project / "data" / "train.json")
    _data(12).subset([f"q{i}" for i in range(8, 12)]).save(project / "data" / "val.json")
    (project / "train.toml").write_text('[train]\ntrain = "data/train.json"\nval = "data/val.json"\nmodel = "model"\n'
                                        'out = "out/model"\nmax_steps = 2\nbatch_size = 4\nkeep_if_worse = true\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = _embtune("train", "--config", str(project / "train.toml"), cwd=elsewhere)
    assert result.returncode == 0, result.stderr
    exported = project / "out" / "model"
    for name in ("embtune_train.json", "README.md"):
        text = (exported / name).read_text()
        assert str(tmp_path) not in text, name  # before: train, val, out, model... as absolute paths
    summary = json.loads((exported / "embtune_train.json").read_text())
    assert summary["settings"]["train"] == "train.json" and summary["base_model"] == "model"


def test_adapter_config_and_portable_values():
    assert portable({"a": "/tmp/x/fit.json", "b": "org/name", "c": ["st:/tmp/y/model", "http://h:1/v1"],
                     "d": "relative/path", "e": "llamaindex:/tmp/ad"}) == \
        {"a": "fit.json", "b": "org/name", "c": ["st:model", "http://h:1/v1"], "d": "relative/path",
         "e": "llamaindex:ad"}


def test_saved_adapter_names_no_absolute_path(tmp_path):
    from embtune_core.adapters.adapter_io import AdapterConfig, save_adapter
    from embtune_plugins.adapter_modules import LinearAdapter

    config = AdapterConfig("linear", 8, {}, base_encoder_name=str(tmp_path / "models" / "base"),
                           imported_from=f"llamaindex:{tmp_path / 'old'}")
    folder = save_adapter(tmp_path / "ad", LinearAdapter(8), config)
    text = (folder / "adapter_config.json").read_text()
    assert str(tmp_path) not in text and '"name": "base"' in text
