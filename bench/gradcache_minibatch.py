"""Memory and CPU time of one MNRL training step at batch 64, embedded at once or with GradCache mini-batches.

Each variant is a child process that loads the packaged MiniLM, takes the first 64 (question, chunk)
pairs of distinct chunks of the shared Lyft set (../shared/data/llamaindex-10k-qa/train_dataset.json,
every chunk at the model's 256 tokens) and runs ``--steps`` optimisation steps (forward, backward, AdamW)
with sentence-transformers' MultipleNegativesRankingLoss (the whole batch at once) or
CachedMultipleNegativesRankingLoss with mini-batches of 4, 8, 16 and 32. Peak memory is the child's own
max RSS (``os.wait4``); CPU seconds per step are the median of the steps after the first (warm-up).
The growth of peak memory per text (least squares over the cached variants) is what
embtune_core.finetuning.memory_plan's estimate is checked against (tests/test_memory_plan.py), and the CPU seconds
per step show where a larger mini-batch stops paying on CPU (its 1 GiB cap).

Run (about 10 minutes on 2 cores; under the heavy-job lock on a shared machine)::

    flock /tmp/heavy.lock python bench/gradcache_minibatch.py   # writes bench/results/gradcache_minibatch.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa" / "train_dataset.json"
sys.path.insert(0, str(ROOT))

VARIANTS = {"at once": 0, "mini 4": 4, "mini 8": 8, "mini 16": 16, "mini 32": 32}


def child(data: str, mini: int, steps: int, threads: int) -> None:
    import resource
    import time

    import torch

    torch.set_num_threads(threads)
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
        MultipleNegativesRankingLoss,
    )

    from embtune_core.encoders.models import load_sentence_transformer

    qa = json.loads(Path(data).read_text(encoding="utf-8"))
    pairs, seen = [], set()
    for qid, chunks in qa["relevant_docs"].items():
        if chunks[0] not in seen:
            seen.add(chunks[0])
            pairs.append((qa["queries"][qid], qa["corpus"][chunks[0]]))
        if len(pairs) == 64:
            break
    torch.manual_seed(0)
    model = load_sentence_transformer("sentence-transformers/all-MiniLM-L6-v2")
    model.train()
    loss = (CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini) if mini
            else MultipleNegativesRankingLoss(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    features = [model.preprocess([p[0] for p in pairs]), model.preprocess([p[1] for p in pairs])]
    loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    cpu = []
    for _ in range(steps):
        t0 = time.process_time()
        loss([dict(f) for f in features], None).backward()
        optimizer.step()
        optimizer.zero_grad()
        cpu.append(time.process_time() - t0)
    print(json.dumps({"cpu_seconds_per_step": cpu, "rss_after_loading_bytes": loaded,
                      "tokens": list(features[1]["input_ids"].shape)}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gradcache_minibatch.json"))
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child is not None:
        child(opts.data, opts.child, opts.steps, opts.threads)
        return 0
    if not Path(opts.data).is_file():
        print(f"bench/gradcache_minibatch.py: no data at {opts.data}; skipping", file=sys.stderr)
        return 0
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "EMBTUNE_NO_PROGRESS": "1"}
    runs = {}
    for name, mini in VARIANTS.items():
        proc = subprocess.Popen([sys.executable, __file__, "--child", str(mini), "--data", opts.data,
                                 "--steps", str(opts.steps), "--threads", str(opts.threads)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT)
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if status != 0:
            raise SystemExit(f"variant {name} failed (status {status})")
        figures = json.loads(out.strip().splitlines()[-1])
        runs[name] = {"mini_batch_size": mini or 64, "gradient_cache": bool(mini),
                      "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
                      "cpu_seconds_per_step_median": round(statistics.median(figures["cpu_seconds_per_step"][1:]), 2),
                      "cpu_seconds_per_step": [round(x, 2) for x in figures["cpu_seconds_per_step"]],
                      "rss_after_loading_mib": round(figures["rss_after_loading_bytes"] / 2**20, 1),
                      "batch_tokens": figures["tokens"]}
        print(name, json.dumps(runs[name]), flush=True)
    cached = [r for r in runs.values() if r["gradient_cache"]]
    xs = [r["mini_batch_size"] for r in cached]
    ys = [r["peak_rss_mib"] * 2**20 for r in cached]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)
    base = runs["at once"]["cpu_seconds_per_step_median"]
    result = {
        "benchmark": "one MNRL step, batch 64 x 256 tokens, packaged MiniLM, CPU: at once vs GradCache mini-batches",
        "command": "flock /tmp/heavy.lock python bench/gradcache_minibatch.py " + shlex.join(sys.argv[1:]),
        "runs": runs,
        "cpu_time_vs_at_once": {name: round(r["cpu_seconds_per_step_median"] / base, 2) for name, r in runs.items()},
        "measured_bytes_per_text": int(slope),
        "tokens": runs["at once"]["batch_tokens"][1],
        "steps": opts.steps, "threads": opts.threads,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    from embtune_core.runtime import atomic

    atomic.write_json(opts.out, result)
    print(json.dumps({k: result[k] for k in ("cpu_time_vs_at_once", "measured_bytes_per_text")}, indent=2))
    print(f"written to {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
