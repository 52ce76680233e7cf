"""Speed benchmark: `embtune train` against a plain sentence-transformers script doing the same training.

Both variants fine-tune the same model on the same (query, chunk) pairs with MultipleNegativesRankingLoss,
no-duplicates batches, the same batch size, number of steps, learning rate and seed, one checkpoint at the
end and the final model written to disk. Each run is a child process; its wall time is measured around
it and its peak memory (max RSS) comes from ``os.wait4`` for that child alone. The variants alternate
(A B B A ...) so drifting machine load hits both alike; medians are compared. Target: ratio <= 1.05.

Run::

    python bench/bench_train.py                 # writes bench/results/train.json (a few minutes on 2 cores)
    python bench/bench_train.py --rounds 3 --steps 12

Data: the first ``--pairs`` queries of ../shared/data/llamaindex-10k-qa/train_dataset.json when present,
else a generated dataset; model: the packaged all-MiniLM-L6-v2.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa" / "train_dataset.json"
sys.path.insert(0, str(ROOT))

LR, SEED, WARMUP = 2e-5, 42, 0.1


def plain_sentence_transformers(data: str, model_name: str, out: str, batch_size: int, steps: int,
                                max_seq_length: int) -> None:
    """The reference: what a user would write with sentence-transformers alone."""
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.base.sampler import BatchSamplers
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import set_seed

    from embtune_core.encoders.models import resolve

    set_seed(SEED)
    qa = json.loads(Path(data).read_text(encoding="utf-8"))
    pairs = [(qa["queries"][q], qa["corpus"][c]) for q, cs in qa["relevant_docs"].items() for c in cs]
    rows = Dataset.from_dict({"anchor": [p[0] for p in pairs], "positive": [p[1] for p in pairs]})
    model = SentenceTransformer(resolve(model_name).target)
    model.max_seq_length = max_seq_length
    args = SentenceTransformerTrainingArguments(
        output_dir=out + ".checkpoints",
        max_steps=steps,
        per_device_train_batch_size=batch_size,
        learning_rate=LR,
        warmup_steps=WARMUP,
        seed=SEED,
        data_seed=SEED,
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        save_strategy="steps",
        save_steps=steps,
        logging_steps=10,
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
    )
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=rows, loss=MultipleNegativesRankingLoss(model)
    )
    trainer.train()
    model.save(out)


def make_data(path: Path, pairs: int) -> None:
    """The first ``pairs`` queries of the 10-K training set with their chunks, or generated text."""
    if DATA.is_file():
        qa = json.loads(DATA.read_text(encoding="utf-8"))
        qids = list(qa["relevant_docs"])[:pairs]
        cids = {c for q in qids for c in qa["relevant_docs"][q]}
        subset = {
            "queries": {q: qa["queries"][q] for q in qids},
            "corpus": {c: qa["corpus"][c] for c in cids},
            "relevant_docs": {q: qa["relevant_docs"][q] for q in qids},
            "mode": "text",
        }
    else:
        words = [
            "revenue",
            "risk",
            "growth",
            "driver",
            "rider",
            "market",
            "cost",
            "regulation",
            "insurance",
            "vehicle",
            "network",
            "city",
        ]
        corpus = {
            f"c{i}": " ".join(words[(i + k) % len(words)] for k in range(200)) + f" item {i}"
            for i in range(pairs)
        }
        subset = {
            "queries": {
                f"q{i}": f"what is said about {words[i % len(words)]} in item {i}?" for i in range(pairs)
            },
            "corpus": corpus,
            "relevant_docs": {f"q{i}": [f"c{i}"] for i in range(pairs)},
            "mode": "text",
        }
    path.write_text(json.dumps(subset), encoding="utf-8")


def measure(command: list[str], env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    stderr = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"benchmark child failed: {' '.join(command)}\n{stderr[-3000:]}")
    # ru_maxrss is in KiB on Linux
    return {
        "wall_seconds": round(wall, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each variant (alternating)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of each run (OMP_NUM_THREADS); 1 is steadiest on a shared CPU")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "train.json"))
    parser.add_argument("--plain-child", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.plain_child:
        plain_sentence_transformers(
            opts.plain_child[0],
            opts.model,
            opts.plain_child[1],
            opts.batch_size,
            opts.steps,
            opts.max_seq_length,
        )
        return 0

    from embtune_core.runtime import atomic

    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": str(opts.threads), "MKL_NUM_THREADS": str(opts.threads)}
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        data = Path(tmp) / "train.json"
        make_data(data, opts.pairs)
        common = ["--model", opts.model, "--batch-size", str(opts.batch_size)]

        def embtune_cmd(out: str) -> list[str]:
            return [
                sys.executable,
                "-m",
                "embtune_core.cli",
                "train",
                "--train",
                str(data),
                *common,
                "--loss",
                "mnrl",
                "--max-steps",
                str(opts.steps),
                "--save-steps",
                str(opts.steps),
                "--lr",
                str(LR),
                "--warmup-ratio",
                str(WARMUP),
                "--seed",
                str(SEED),
                "--max-seq-length",
                str(opts.max_seq_length),
                "--out",
                out,
            ]

        def plain_cmd(out: str) -> list[str]:
            return [
                sys.executable,
                str(Path(__file__).resolve()),
                *common,
                "--steps",
                str(opts.steps),
                "--max-seq-length",
                str(opts.max_seq_length),
                "--plain-child",
                str(data),
                out,
            ]

        runs: dict[str, list[dict[str, float]]] = {"embtune": [], "plain": []}
        order = []
        for r in range(opts.rounds):
            order += ["embtune", "plain"] if r % 2 == 0 else ["plain", "embtune"]
        for i, variant in enumerate(order):
            out = str(Path(tmp) / f"{variant}-{i}")
            result = measure(embtune_cmd(out) if variant == "embtune" else plain_cmd(out), env)
            runs[variant].append(result)
            print(f"{variant:8s} {result}", flush=True)

    median = {v: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for v, rs in runs.items()}
    ratios = {
        k: round(median["embtune"][k] / median["plain"][k], 3)
        for k in ("wall_seconds", "peak_rss_mib", "cpu_seconds")
    }
    report = {
        "benchmark": "embtune train vs plain sentence-transformers script, same training",
        "workload": {
            "model": opts.model,
            "data": str(DATA) if DATA.is_file() else "generated",
            "pairs": opts.pairs,
            "batch_size": opts.batch_size,
            "steps": opts.steps,
            "lr": LR,
            "seed": SEED,
            "max_seq_length": opts.max_seq_length,
            "loss": "MultipleNegativesRankingLoss",
            "batch_sampler": "no_duplicates",
            "device": "cpu",
            "threads": opts.threads,
        },
        "command": "python bench/bench_train.py " + " ".join(sys.argv[1:]),
        "order": order,
        "runs": runs,
        "median": median,
        "ratio_embtune_over_plain": ratios,
        "target": "ratio <= 1.05 for wall time and peak memory (CPU seconds: steadier on a shared machine)",
        "target_met": ratios["wall_seconds"] <= 1.05 and ratios["peak_rss_mib"] <= 1.05,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
    }
    atomic.write_json(opts.out, report)
    print(json.dumps({"median": median, "ratio": ratios}, indent=2))
    print(f"written to {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
