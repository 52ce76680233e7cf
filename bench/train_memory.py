"""The default fine-tune before and after memory-aware training, side by side in one run: peak memory,
CPU time, and NDCG@10 on Uber.

Both runs are ``embtune train`` on the shared Lyft set (../shared/data/llamaindex-10k-qa/train_dataset.json,
668 questions over 334 chunks) with ``--val`` the Uber set (val_dataset.json, which picks the best
checkpoint, as bench/train_10k.py does) and every other setting at its default (packaged MiniLM, MNRL,
3 epochs, batch 64, lr 5e-5, the model's 256 tokens):

* ``before``: ``--loss-option mini_batch_size=64``, the whole batch of 64 rows embedded at once -- what
  ``embtune train`` did by default before embtune_core.finetuning.memory_plan (the same computation: plain
  MultipleNegativesRankingLoss);
* ``after``: no flag: the mini-batch embtune chooses from the memory available (GradCache, the same loss
  over the same 64 in-batch negatives), and the line it says about it.

Each run is a child process: its peak memory is its own max RSS and its CPU time its user + system
seconds (``os.wait4``), its wall time is measured around it. The two models are then evaluated on Uber
through ``embtune evaluate``'s own evaluation (``evaluate_systems``: NDCG@10 with its 95% bootstrap CI,
and the paired difference after - before with its CI). Targets: after's peak RSS <= 3 GB, its NDCG@10
inside before's CI, its CPU time <= 1.2x before's. The recommendation stage of ``embtune train --val``
is left out (``--no-recommend``): it is not the fine-tune.

Run (about 30 minutes on 2 cores; under the heavy-job lock on a shared machine)::

    flock /tmp/heavy.lock python bench/train_memory.py      # writes bench/results/train_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa"
sys.path.insert(0, str(ROOT))

GB = 1 << 30
VARIANTS = {"before": ["--loss-option", "mini_batch_size=64"], "after": []}


def run_train(data: Path, work: Path, name: str, extra: list[str]) -> dict:
    out = work / name
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(work / f"{name}.checkpoints", ignore_errors=True)
    command = ["embtune", "train", "--train", str(data / "train_dataset.json"), "--val",
               str(data / "val_dataset.json"), "--out", str(out), "--no-recommend", *extra]
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "embtune_core.cli", *command[1:]], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{name}: embtune train failed\n{output[-3000:]}")
    summary = json.loads((out / "embtune_train.json").read_text(encoding="utf-8"))
    return {"command": shlex.join(command), "peak_rss_gb": round(usage.ru_maxrss * 1024 / GB, 3),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1), "wall_seconds": round(wall, 1),
            "train_seconds": summary["train_seconds"], "global_step": summary["global_step"],
            "memory": summary.get("memory"), "loss": summary["loss"],
            "val_ndcg@10_after_training": summary["metrics_after"].get("ndcg@10"),
            "memory_line": [line for line in output.splitlines() if "memory: " in line],
            "model": str(out)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--work", default=None, help="where the two models go (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_memory.json"))
    opts = parser.parse_args()
    data = Path(opts.data)
    if not (data / "train_dataset.json").is_file():
        print(f"bench/train_memory.py: no data at {data}; skipping", file=sys.stderr)
        return 0
    temporary = tempfile.TemporaryDirectory(prefix="bench-train-memory-") if opts.work is None else None
    work = Path(opts.work or temporary.name)
    work.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name, extra in VARIANTS.items():
        runs[name] = run_train(data, work, name, extra)
        print(name, json.dumps({k: v for k, v in runs[name].items() if k not in ("loss",)}), flush=True)

    os.environ.setdefault("EMBTUNE_NO_PROGRESS", "1")
    os.environ["EMBTUNE_CACHE"] = str(work / "cache")  # every vector computed in this run
    from embtune_core.commands.evaluate import build_system, parse_system
    from embtune_core.data.dataset import QADataset
    from embtune_core.reporting.report import report_json
    from embtune_core.scoring.evaluation import evaluate_systems

    uber = QADataset.load(data / "val_dataset.json")
    systems = [build_system(parse_system(f"{name}=model:{runs[name]['model']}")) for name in VARIANTS]
    report = report_json(evaluate_systems(systems, uber, dataset_name="uber val_dataset.json", seed=0,
                                          progress_bar=False))
    quality = {}
    for system in report["systems"]:
        ndcg = next(iter(system["results"].values()))["ndcg@10"]
        quality[system["name"]] = {"ndcg@10": round(ndcg["mean"], 4), "ci": [round(ndcg["ci_low"], 4),
                                                                            round(ndcg["ci_high"], 4)],
                                   "vs_before": ({k: round(v, 4) for k, v in ndcg["vs_baseline"].items()}
                                                 if ndcg.get("vs_baseline") else None)}
    before, after = runs["before"], runs["after"]
    cpu_ratio = round(after["cpu_seconds"] / before["cpu_seconds"], 3)
    low, high = quality["before"]["ci"]
    result = {
        "benchmark": "embtune train defaults on Lyft (--val Uber): whole batch at once (before) vs memory-aware (after)",
        "command": "flock /tmp/heavy.lock python bench/train_memory.py " + shlex.join(sys.argv[1:]),
        "figures": {
            "peak_rss_gb": {"before": before["peak_rss_gb"], "after": after["peak_rss_gb"]},
            "cpu_seconds": {"before": before["cpu_seconds"], "after": after["cpu_seconds"], "ratio": cpu_ratio},
            "wall_seconds": {"before": before["wall_seconds"], "after": after["wall_seconds"]},
            "ndcg@10_uber": quality,
        },
        "targets": {"peak_rss_gb_after <= 3": after["peak_rss_gb"] <= 3.0,
                    "ndcg@10 after inside before's 95% CI": low <= quality["after"]["ndcg@10"] <= high,
                    "cpu_seconds after <= 1.2x before": cpu_ratio <= 1.2},
        "runs": {name: {k: v for k, v in run.items() if k != "model"} for name, run in runs.items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    result["targets_met"] = all(result["targets"].values())
    from embtune_core.runtime import atomic

    atomic.write_json(opts.out, result)
    print(json.dumps({"figures": result["figures"], "targets": result["targets"]}, indent=2))
    print(f"written to {opts.out}")
    if temporary is not None:
        temporary.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
