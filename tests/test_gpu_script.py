"""bench/gpu/run.sh --smoke: every part of the GPU script runs on the CPU at tiny sizes and records its figures,
so the script that only a GPU machine runs in full never rots."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_smoke_mode_records_every_part(tmp_path):
    out = tmp_path / "gpu.json"
    env = dict(os.environ, PYTHON=sys.executable, CUDA_VISIBLE_DEVICES="")
    env.pop("OUT", None)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu" / "run.sh"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=420, env=env, check=False)
    assert out.exists(), proc.stdout + proc.stderr
    data = json.loads(out.read_text())
    parts = data["parts"]
    assert proc.returncode == 0, json.dumps(parts, indent=1)[-6000:]
    assert data["mode"] == "smoke" and set(parts) == {"search", "matryoshka", "cli", "ddp"}
    assert all(p["ok"] and p["seconds"] > 0 for p in parts.values())

    search = parts["search"]
    assert search["torch_backend"] == "torch on cpu"
    assert search["identical_ids"] and search["identical_scores"] and search["rows_differing"] == 0
    assert search["queries_with_ties_in_top_k"] > 0  # the tie rule was exercised
    assert search["torch_s"] > 0 and search["reference_s"] > 0
    if "faiss" in search:  # FAISS installed here (embtune[cpu]): it agrees too
        assert search["faiss"]["identical_ids"] and search["faiss"]["identical_scores"]

    matryoshka = parts["matryoshka"]
    assert matryoshka["optimizer_steps"] > 0 and matryoshka["wall_s"] > 0 and matryoshka["samples_per_s"] > 0
    assert matryoshka["device"] == "cpu" and matryoshka["precision"] == "fp32"
    # The locally built tokenizer took its BERT-size vocabulary: one token per word, so lengths are real.
    assert matryoshka["vocabulary"] == 30_522 and matryoshka["parameters"] > 30_522 * 32
    assert 8 + 2 <= matryoshka["mean_tokens"]["question"] <= 30 + 2
    assert 30 + 2 <= matryoshka["mean_tokens"]["passage"] <= 200 + 2

    cli = parts["cli"]
    assert cli["train"]["rc"] == 0 and (cli["train"]["device"], cli["train"]["precision"]) == ("cpu", "fp32")
    assert "cpu, fp32" in cli["train"]["report_line"][0]
    assert cli["evaluate"]["rc"] == 0 and cli["evaluate"]["search_line"]
    assert all("device cpu, precision fp32" in line for line in cli["evaluate"]["device_precision_lines"])
    assert len(cli["evaluate"]["device_precision_lines"]) == 2  # base and fine-tuned model

    ddp = parts["ddp"]
    assert ddp["nproc_per_node_used"] == 2  # two gloo processes on CPU: the DDP code path
    last = ddp["attempts"][-1]
    assert last["world_size"] == 2 and [r["saved_model"] for r in last["ranks"]] == [True, False]
