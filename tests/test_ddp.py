"""DDP: `embtune train` under a 2-process CPU torchrun (gloo) trains on both ranks and saves one model."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_losses import make_qa


def test_torchrun_two_cpu_processes_train_and_only_rank_0_saves(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    data = tmp_path / "train.json"
    make_qa().save(data)
    out, work = tmp_path / "model", tmp_path / "work"
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "EMBTUNE_NO_PROGRESS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "embtune_core.cli",
            "train",
            "--train",
            str(data),
            "--model",
            tiny_model_dir,
            "--loss",
            "mnrl",
            "--batch-size",
            "4",
            "--max-steps",
            "3",
            "--lr",
            "1e-3",
            "--checkpoint-dir",
            str(work),
            "--out",
            str(out),
        ],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        env={**env, "CUDA_VISIBLE_DEVICES": ""},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = sorted(
        (json.loads(p.read_text()) for p in (work / "ranks").glob("rank-*.json")), key=lambda r: r["rank"]
    )
    assert [r["rank"] for r in reports] == [0, 1]
    assert all(r["world_size"] == 2 and r["steps"] == 3 and r["global_step"] == 3 for r in reports)
    assert [r["saved_model"] for r in reports] == [True, False]
    assert proc.stdout.count("model written to") == 1
    summary = json.loads((out / "embtune_train.json").read_text())
    assert summary["world_size"] == 2
    assert (summary["device"], summary["precision"]) == ("cpu", "fp32")  # what it ran on, stated
    assert all(r["device"] == "cpu" for r in reports)
    # exactly one model directory next to the output, no leftover staging directories
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "train.json", "work"]
    assert SentenceTransformer(str(out)).encode(["q"]).shape == (1, 32)
