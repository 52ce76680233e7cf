"""The calibrated int8 export (outlier channels of the user's chunks in fp32) and the file an ONNX export
recommends (embtune_core.encoders.onnx_mixed_int8, embtune_core.encoders.onnx_choice)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embtune_core.cli import main

pytest.importorskip("onnxruntime", reason="ONNX export needs the onnx extra")
pytest.importorskip("onnx", reason="ONNX export needs the onnx extra")


def _chunks_and_questions(tmp_path, n: int = 24):
    from embtune_core.data.dataset import QADataset

    path = tmp_path / "calibration.json"
    QADataset({f"q{i}": f"what does chunk {i} say about topic{i}?" for i in range(n)},
              {f"c{i:02d}": f"Chunk {i} tells about topic{i}, subject{i % 5} and risk factors. " * (1 + i % 4)
               for i in range(n)},
              {f"q{i}": [f"c{i:02d}"] for i in range(n)}).save(path)
    return path


@pytest.fixture(scope="module")
def calibrated(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("calibrated")
    out = tmp / "tiny-onnx"
    assert main(["export", tiny_model_dir, "--format", "onnx", "--quantize", "int8", "--calibration",
                 str(_chunks_and_questions(tmp)), "--out", str(out)]) == 0
    return out


def test_splitting_the_outlier_channels_computes_exactly_what_the_graph_did(tiny_model_dir, calibrated, tmp_path):
    """The decomposition itself (before int8) is no approximation: the split fp32 graph's output equals
    the original's, with outliers found in several layers."""
    import onnx
    import onnxruntime as ort

    from embtune_core.encoders.onnx_mixed_int8 import split_outliers, weight_matmuls

    source = calibrated / "onnx" / "model_O2.onnx"
    model = onnx.load(str(source))
    rng = np.random.default_rng(0)
    # Maxima that make a few channels of every linear layer "outliers".
    maxima = {}
    for node in weight_matmuls(model.graph):
        width = next(i for i in model.graph.initializer if i.name == node.input[1]).dims[0]
        peak = rng.uniform(0, 1, width)
        peak[rng.choice(width, 3, replace=False)] = 10.0
        maxima[node.input[0]] = peak
    kept, outliers = split_outliers(model, maxima, threshold=6.0)
    assert len(kept) == len(outliers) == len(weight_matmuls(onnx.load(str(source)).graph))
    assert set(outliers.values()) == {3}
    split_path = tmp_path / "split.onnx"
    onnx.save(model, str(split_path))
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(calibrated), device="cpu")
    features = st.preprocess(["a short one", "Chunk 3 tells about topic3 and risk factors. " * 5])
    names = [i.name for i in ort.InferenceSession(str(source)).get_inputs()]
    feed = {n: features[n].numpy() for n in names}
    (original,) = ort.InferenceSession(str(source)).run(["last_hidden_state"], feed)
    (split,) = ort.InferenceSession(str(split_path)).run(["last_hidden_state"], feed)
    np.testing.assert_allclose(split, original, rtol=1e-4, atol=1e-5)


def test_a_calibrated_export_recommends_the_fastest_file_that_holds_quality(calibrated):
    from embtune_core.encoders.onnx_choice import NDCG_TOLERANCE
    from embtune_core.encoders.onnx_export import load_onnx_model

    manifest = json.loads((calibrated / "embtune_onnx.json").read_text())
    assert manifest["files"]["int8-mixed"] == "onnx/model_qint8_mixed.onnx"
    assert (calibrated / "onnx" / "model_qint8_mixed.onnx").is_file()
    assert not list((calibrated / "onnx").glob("*.split.onnx"))  # the intermediate graph is not left behind
    recommendation = manifest["recommendation"]
    table = recommendation["files"]
    assert set(table) == set(manifest["files"]) and recommendation["measured_on"]["questions"] > 0
    holding = {name for name, row in table.items() if row["ndcg@10_change"] >= -NDCG_TOLERANCE}
    assert {name for name, row in table.items() if row["holds_quality"]} == holding and "fp32" in holding
    fastest = max(holding, key=lambda name: table[name]["docs_per_second"])
    assert manifest["default"] == recommendation["chosen"] == fastest
    assert manifest["int8_mixed"]["calibration_chunks"] == 12  # every other chunk; the rest measured on
    # The default is what the onnx backend loads, and the calibrated file runs.
    vectors = load_onnx_model(calibrated, "int8-mixed").encode(["Chunk 1 tells about topic1"])
    assert vectors.shape == (1, 32) and np.isfinite(vectors).all()


def test_the_export_says_what_it_recommends(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["export", tiny_model_dir, "--format", "onnx", "--quantize", "int8", "--calibration",
                 str(_chunks_and_questions(tmp_path)), "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    chosen = json.loads((out / "embtune_onnx.json").read_text())["default"]
    assert any(line.strip().startswith(f"recommended: {chosen}, ") and "of your questions" in line for line in lines)


def test_calibration_needs_int8(tiny_model_dir, tmp_path, capsys):
    assert main(["export", tiny_model_dir, "--format", "onnx", "--calibration", str(_chunks_and_questions(tmp_path)),
                 "--out", str(tmp_path / "o")]) == 2
    assert "--calibration" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_choose_takes_the_fastest_that_holds_quality():
    from embtune_core.encoders.onnx_choice import choose

    table = {"fp32": {"docs_per_second": 10, "holds_quality": True},
             "int8": {"docs_per_second": 16, "holds_quality": True},
             "int8-mixed": {"docs_per_second": 21, "holds_quality": True},
             "lossy": {"docs_per_second": 30, "holds_quality": False}}
    assert choose(table) == "int8-mixed"
    table["int8-mixed"]["holds_quality"] = False
    assert choose(table) == "int8"


def test_onnx_runtime_leftovers_never_land_in_the_users_folder(tiny_model_dir, tmp_path, monkeypatch):
    """ONNX Runtime's symbolic shape inference saves sym_shape_infer_temp.onnx (+ a <uuid>.data file) into
    the current directory when inference is incomplete (onnxruntime/tools/symbolic_shape_infer.py); an
    export once left both in the user's folder. The spies do what that code does -- write into the cwd --
    before calling the real optimizer and quantiser: nothing may appear in the folder the user ran from."""
    from onnxruntime import quantization
    from onnxruntime.transformers import optimizer

    def leaving_leftovers(real):
        def spy(*args, **kwargs):
            Path("sym_shape_infer_temp.onnx").write_bytes(b"leftover")
            Path("01550854-f03c-11f1-96a0-02fc00000001.data").write_bytes(b"leftover")
            seen.append(Path.cwd())
            return real(*args, **kwargs)
        return spy

    seen: list[Path] = []
    monkeypatch.setattr(optimizer, "optimize_model", leaving_leftovers(optimizer.optimize_model))
    monkeypatch.setattr(quantization, "quantize_dynamic", leaving_leftovers(quantization.quantize_dynamic))
    user = tmp_path / "user"
    user.mkdir()
    data = _chunks_and_questions(tmp_path)
    monkeypatch.chdir(user)
    assert main(["export", tiny_model_dir, "--format", "onnx", "--quantize", "int8", "--calibration", str(data),
                 "--out", "relative-out"]) == 0  # a relative --out still lands beside the user, not in scratch
    assert sorted(p.name for p in user.iterdir()) == ["relative-out"]
    assert len(seen) == 3  # fuse, int8, int8-mixed
    assert all(folder != user and not folder.exists() for folder in seen)  # scratch folders, removed
    assert sorted(p.name for p in (user / "relative-out" / "onnx").iterdir()) == [
        "model.onnx", "model_O2.onnx", "model_qint8_avx512_vnni.onnx", "model_qint8_mixed.onnx"]


def test_scratch_cwd_restores_the_folder_even_when_the_step_fails(tmp_path, monkeypatch):
    from embtune_core.runtime.scratch_cwd import scratch_cwd

    monkeypatch.chdir(tmp_path)
    with pytest.raises(RuntimeError), scratch_cwd() as scratch:
        Path("left.onnx").write_bytes(b"x")
        raise RuntimeError("the step failed")
    assert Path.cwd() == tmp_path and not scratch.exists() and not list(tmp_path.iterdir())
