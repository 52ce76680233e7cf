"""Issue 28 benchmark: what `embtune run` recommends on the shared Lyft -> Uber split, against BM25.

One `embtune run` (subprocess, timed with wait4) of a config that names the two datasets and every
technique: a full fine-tune (defaults, `document_windows = "best"`), a two-layer query adapter with
index pseudo-queries, document-side tuning (NUDGE-N) of the base, adapter and fine-tune vectors, and
(added by the recommendation) BM25, tuned hybrids, sparse-dense single vectors and windows. The run
chooses on held-out *Lyft* documents (its dev split: Lyft questions never trained on); the Uber
questions and labels are read only by the final report. Index-aware methods read the Uber chunk
*texts* (LLM-free pseudo-queries: inverse cloze and crops); they are evaluated with the Uber questions
gpt-3.5 wrote (LlamaIndex's set), another generator, so no system is scored on the kind of query it
trained on.

Writes bench/results/recommend_10k.json: every candidate's dev figures and costs, the validation
table, the recommended and best single-index systems against BM25 and the base (paired 95% CIs,
randomisation p), and NUDGE against the base, the adapter and both together (paired 95% CIs).

Run (about an hour on 2 idle cores; the run folder is reused when it exists)::

    python bench/recommend_10k.py [--run-dir /tmp/recommend-10k]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa"
sys.path.insert(0, str(ROOT))

CONFIG = """
[run]
name = "recommend-10k"
seed = 42

[data]
train = "{train}"
val = "{val}"

[train]
enabled = true
document_windows = "best"

[adapter]
type = "two-layer"
index_pseudo_queries = true

[index_tuning]
enabled = true

[evaluate]
dims = [384]
"""

PAIRS = [("index-tuned", "base"), ("index-tuned", "adapter"), ("adapter-index-tuned", "index-tuned"),
         ("adapter-index-tuned", "adapter"), ("adapter-index-tuned", "base"), ("fine-tuned-index-tuned", "fine-tuned")]


def paired(report: dict, a: str, b: str, metric: str) -> dict | None:
    """Mean of ``a`` minus ``b`` on the same queries, its 95% bootstrap CI and the randomisation p."""
    import numpy as np

    from embtune_core.scoring import stats

    per_query = report["per_query"]
    if a not in per_query or b not in per_query:
        return None
    dim_a, dim_b = max(per_query[a], key=int), max(per_query[b], key=int)
    x, y = np.array(per_query[a][dim_a][metric]), np.array(per_query[b][dim_b][metric])
    result = stats.compare(y, x, n_resamples=2000, n_permutations=10000, seed=0)
    return {"a": a, "b": b, "metric": metric, "a_mean": float(x.mean()), "b_mean": float(y.mean()),
            "difference": float(result["difference"]), "ci_low": float(result["ci_low"]),
            "ci_high": float(result["ci_high"]), "p": float(result["p_randomization"])}


def stage_costs(run: Path) -> dict:
    """Wall and CPU seconds of every stage of the run (as each recorded when it ran), summed, and the peak."""
    stages = {}
    for done in sorted(run.glob("stages/*/_done.json")):
        record = json.loads(done.read_text())
        cost = (record.get("outputs") or {}).get("cost") or {}
        stages[done.parent.name] = cost
    return {"wall_seconds": round(sum(c.get("wall_seconds", 0) for c in stages.values()), 1),
            "cpu_seconds": round(sum(c.get("cpu_seconds", 0) for c in stages.values()), 1),
            "peak_rss_gb": max((c.get("peak_rss_gb") or 0 for c in stages.values()), default=None),
            "stages": stages}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="/tmp/recommend-10k")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "recommend_10k.json"))
    args = parser.parse_args()
    if not DATA.is_dir():
        print(f"skipped: {DATA} not found")
        return 0
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    config = run_dir / "recommend-10k.toml"
    config.write_text(CONFIG.format(train=(DATA / "train_dataset.json").as_posix(),
                                    val=(DATA / "val_dataset.json").as_posix()))
    started = time.time()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, "-m", "embtune_core.cli", "run", str(config), "--run-dir",
                           str(run_dir / "run")], env=dict(os.environ, EMBTUNE_NO_PROGRESS="1"), check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        return proc.returncode
    report = json.loads((run_dir / "run" / "report.json").read_text())
    recommendation = report["recommendation"]
    comparisons = {}
    for metric in ("ndcg@10", "hit_rate@5"):
        comparisons[metric] = [c for c in (paired(report, a, b, metric) for a, b in PAIRS) if c is not None]
        for name in {recommendation["recommended"]["system"],
                     (recommendation.get("best_single_index") or recommendation["recommended"])["system"]}:
            comparisons[metric] += [c for c in (paired(report, name, "bm25", metric),
                                                paired(report, name, "base", metric)) if c is not None]
    table = {s["name"]: {m: s["results"][max(s["results"], key=int)][m]["mean"] for m in ("ndcg@10", "hit_rate@5")}
             for s in report["systems"]}
    result = {
        "command": f"python bench/recommend_10k.py --run-dir {args.run_dir}",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        # Each stage records what it cost when it ran (a re-run reuses finished stages): their sum is the run's.
        "cost": stage_costs(run_dir / "run"),
        "this_invocation": {"wall_seconds": round(time.time() - started, 1),
                            "cpu_seconds": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1)},
        "recommendation": recommendation,
        "validation": table,
        "paired": comparisons,
        "independence": ("choices on held-out Lyft documents (dev); Uber questions and labels read only by the report; "
                         "index-aware methods trained on ICT and crop pseudo-queries of the Uber chunk texts, "
                         "evaluated with the Uber questions gpt-3.5 wrote (another generator)"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"recommended": recommendation["recommended"], "validation": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
