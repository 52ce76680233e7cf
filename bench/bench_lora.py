"""Training-mode comparison on the shared Lyft -> Uber split: full fine-tuning vs LoRA vs a query adapter.

All three start from the packaged MiniLM, train on ../shared/data/llamaindex-10k-qa/train_dataset.json
(Lyft) for the SAME number of epochs (--epochs, default 1: CPU time is scarce, a 3-epoch full fine-tune
at 256 tokens took ~1400 s on an idle 2-core machine) at 256 tokens (MiniLM's own limit), and are then
evaluated together on val_dataset.json (Uber) by one `embtune evaluate` run: hit@5 and NDCG@10 of the
base model and of each trained system, with the paired difference to the base and its bootstrap CI
(the report's vs_baseline). Each training is a child process; wall time is measured around it, CPU
seconds and peak RSS come from os.wait4 for that child. Trainable parameters come from the run's own
summary (LoRA: peft's count; full: every parameter; adapter: the adapter's tensors); size on disk is
the output folder's bytes (the LoRA folder holds only the adapter weights and needs the base model).

Settings: full fine-tuning as bench/train_10k.py (MNRL, batch 64, lr 5e-5, warm-up 0.1, seed 42);
LoRA the same but lr 5e-4 (LoRA's usual ~10x learning rate), r=8, alpha=16, dropout 0.1 on every
linear layer of the encoder (query,key,value,dense); the linear query adapter with embtune's
defaults and --epochs equal to the others. No validation set during training (no checkpoint selection),
so each method is scored once, on Uber only.

Run (about 20-30 minutes on 2 cores; wrap it in the heavy-job lock on a shared machine)::

    flock /work/heavy.lock python bench/bench_lora.py        # writes bench/results/lora.json
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
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa"
MODEL = "sentence-transformers/all-MiniLM-L6-v2"
sys.path.insert(0, str(ROOT))

from embtune_core.runtime import atomic


def measure(command: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run ``command`` as a child (output to ``log``); its wall time, CPU seconds and peak RSS."""
    started = time.perf_counter()
    with open(log, "wb") as handle:
        child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{log.read_text(errors='replace')[-3000:]}")
    # ru_maxrss is in KiB on Linux
    return {"wall_seconds": round(wall, 1), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
            "peak_rss_mib": round(usage.ru_maxrss / 1024, 1)}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--work", default=str(ROOT / "runs" / "bench_lora"))
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--max-seq-length", default="256")
    parser.add_argument("--only", action="append", choices=("full", "lora", "adapter"),
                        help="train only these (the others' folders from an earlier run are reused)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "lora.json"))
    opts = parser.parse_args()
    data, work = Path(opts.data), Path(opts.work)
    if not (data / "train_dataset.json").is_file():
        print(f"bench/bench_lora.py: no data at {data}; skipping", file=sys.stderr)
        return 0
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "EMBTUNE_CACHE": str(work / "cache")}
    train = str(data / "train_dataset.json")
    common = ["--train", train, "--model", MODEL, "--loss", "mnrl", "--epochs", opts.epochs, "--batch-size", "64",
              "--warmup-ratio", "0.1", "--seed", "42", "--max-seq-length", opts.max_seq_length]
    commands = {
        "full": ["embtune", "train", *common, "--lr", "5e-5", "--checkpoint-dir", str(work / "full.ckpt"),
                 "--out", str(work / "full")],
        "lora": ["embtune", "train", *common, "--lr", "5e-4", "--lora", "--lora-rank", "8", "--lora-alpha", "16",
                 "--lora-target-modules", "query,key,value,dense", "--checkpoint-dir", str(work / "lora.ckpt"),
                 "--out", str(work / "lora")],
        "adapter": ["embtune", "train-adapter", "--train", train, "--model", MODEL, "--epochs", opts.epochs,
                    "--max-seq-length", opts.max_seq_length, "--seed", "42", "--cache-dir", str(work / "adapter.cache"),
                    "--out", str(work / "adapter")],
    }
    previous = json.loads(Path(opts.out).read_text()) if Path(opts.out).is_file() else {}
    runs = {}
    for name, command in commands.items():
        if opts.only and name not in opts.only:
            runs[name] = previous.get("runs", {}).get(name)
            continue
        for path in (work / name, work / f"{name}.ckpt", work / f"{name}.cache"):
            shutil.rmtree(path, ignore_errors=True)
        print(f"training {name}: {' '.join(command)}", flush=True)
        runs[name] = {"command": " ".join(shlex.quote(c) for c in command),
                      **measure([sys.executable, "-m", "embtune_core.cli", *command[1:]], env, work / f"{name}.log")}
        print(json.dumps(runs[name]), flush=True)

    from safetensors import safe_open

    full_summary = json.loads((work / "full" / "embtune_train.json").read_text())
    lora_summary = json.loads((work / "lora" / "embtune_train.json").read_text())
    with safe_open(str(work / "adapter" / "adapter.safetensors"), "pt") as handle:
        adapter_params = sum(handle.get_tensor(k).numel() for k in handle.keys())  # noqa: SIM118 - safe_open is no dict
    from sentence_transformers import SentenceTransformer

    from embtune_core.encoders.models import resolve

    total = sum(p.numel() for p in SentenceTransformer(resolve(MODEL).target).parameters())
    params = {"full": total, "lora": lora_summary["lora"]["trainable_parameters"], "adapter": adapter_params}
    sizes = {name: folder_bytes(work / name) for name in commands}

    evaluate = ["embtune", "evaluate", str(data / "val_dataset.json"), "--system", f"base=model:{MODEL}",
                "--system", f"full=model:{work / 'full'}", "--system", f"lora=model:{work / 'lora'}",
                "--system", f"adapter=model:{MODEL}+adapter:{work / 'adapter'}",
                "--max-seq-length", opts.max_seq_length, "--out", str(work / "evaluate")]
    print(f"evaluating: {' '.join(evaluate)}", flush=True)
    evaluation_cost = measure([sys.executable, "-m", "embtune_core.cli", *evaluate[1:]], env, work / "evaluate.log")
    report = json.loads((work / "evaluate" / "report.json").read_text())
    quality = {}
    for system in report["systems"]:
        results = next(iter(system["results"].values()))
        entry = {}
        for metric in ("hit_rate@5", "ndcg@10", "mrr@10"):
            r = results.get(metric, {})
            entry[metric] = {"mean": round(r.get("mean", float("nan")), 4)}
            vs = r.get("vs_baseline")
            if vs:
                entry[metric].update({k: round(v, 4) for k, v in vs.items() if isinstance(v, float)})
        quality[system["name"]] = entry
    table = []
    for name in ("full", "lora", "adapter"):
        q, b = quality[name], quality["base"]
        table.append({
            "method": name,
            "hit@5": f"{b['hit_rate@5']['mean']:.4f} -> {q['hit_rate@5']['mean']:.4f}",
            "hit@5 diff [CI]": _diff(q["hit_rate@5"]),
            "ndcg@10": f"{b['ndcg@10']['mean']:.4f} -> {q['ndcg@10']['mean']:.4f}",
            "ndcg@10 diff [CI]": _diff(q["ndcg@10"]),
            "trainable parameters": params[name],
            "wall s": runs[name]["wall_seconds"] if runs.get(name) else None,
            "CPU s": runs[name]["cpu_seconds"] if runs.get(name) else None,
            "peak RSS MiB": runs[name]["peak_rss_mib"] if runs.get(name) else None,
            "size on disk bytes": sizes[name],
        })
    result = {
        "benchmark": "full fine-tune vs LoRA vs linear query adapter, packaged MiniLM, train Lyft, evaluate Uber",
        "command": "flock /work/heavy.lock python bench/bench_lora.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "epochs": opts.epochs, "max_seq_length": opts.max_seq_length,
        "evaluate_command": " ".join(shlex.quote(c) for c in evaluate),
        "table": table, "quality": quality, "runs": runs, "evaluation_cost": evaluation_cost,
        "trainable_parameters": params, "size_on_disk_bytes": sizes, "total_parameters": total,
        "train_steps": {"full": full_summary["global_step"], "lora": lora_summary["global_step"]},
        "train_loss": {"full": full_summary["train_loss"], "lora": lora_summary["train_loss"]},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    atomic.write_json(opts.out, result)
    print(json.dumps(table, indent=2))
    print(f"written to {opts.out}")
    return 0


def _diff(entry: dict) -> str:
    if "difference" not in entry:
        return ""
    return f"{entry['difference']:+.4f} [{entry.get('ci_low', float('nan')):+.4f}, {entry.get('ci_high', float('nan')):+.4f}]"


if __name__ == "__main__":
    sys.exit(main())
