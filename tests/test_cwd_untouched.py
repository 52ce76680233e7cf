"""embtune writes what it was asked to write and nothing in the folder it is run from.

Libraries it calls sometimes drop files into the current directory: ONNX Runtime's symbolic shape
inference (sym_shape_infer_temp.onnx + <uuid>.data, tests/test_onnx_choice.py), transformers' Trainer
(runs/, tmp_trainer/ without an output_dir), trackers (wandb/, mlruns/). One end-to-end pass of the
commands that run those libraries -- train with validation, evaluate, export to ONNX with int8 -- from an
empty folder, every output named by an absolute path elsewhere: the folder must stay empty.
"""

from __future__ import annotations

import pytest
from test_losses import _one_torch_thread, make_qa  # noqa: F401 - one torch thread here too

from embtune_core.cli import main


def test_train_evaluate_and_export_leave_the_current_folder_empty(tiny_model_dir, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime", reason="ONNX export needs the onnx extra")
    monkeypatch.setenv("EMBTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("EMBTUNE_NO_PROGRESS", "1")
    data, val_path = tmp_path / "qa.json", tmp_path / "val.json"
    make_qa().save(data)
    val = make_qa(negatives=False)  # the same chunks, other questions (validation shares no query)
    val.queries = {"v" + q: "tell me " + t for q, t in val.queries.items()}
    val.relevant_docs = {"v" + q: ids for q, ids in val.relevant_docs.items()}
    val.save(val_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    model = tmp_path / "model"
    assert main(["train", "--train", str(data), "--val", str(val_path), "--model", tiny_model_dir, "--max-steps", "2",
                 "--batch-size", "4", "--no-recommend", "--out", str(model)]) == 0
    assert main(["evaluate", str(data), "--system", f"model:{model}", "--out", str(tmp_path / "report")]) == 0
    assert main(["export", str(model), "--format", "onnx", "--quantize", "int8", "--out", str(tmp_path / "onnx")]) == 0
    assert sorted(p.name for p in cwd.iterdir()) == []
    assert (tmp_path / "onnx" / "onnx" / "model_qint8_avx512_vnni.onnx").is_file()
