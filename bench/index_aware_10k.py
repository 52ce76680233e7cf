"""Quality benchmark for issue 17: fine-tune the packaged MiniLM on the Lyft 10-K questions, evaluate on Uber.

Variants (each one `embtune train` run, then one `embtune evaluate` of base vs tuned on the Uber
questions with paired 95% confidence intervals, at the model's own 256 tokens and at 512):

* ``defaults``: `embtune train --train LYFT --out DIR` and nothing else (3 epochs, batch 64, lr 5e-5;
  no --val, so no checkpoint is chosen on anything: the Uber questions stay unseen);
* ``index-aware``: the same plus ``--index-corpus UBER`` (pseudo-queries from the Uber chunk texts,
  never its questions or labels: the index a deployment would hold), ``--index-ratio`` 1;
* ``windows``: defaults plus ``--document-windows best`` (a positive longer than 256 tokens trains as
  its window the base model ranks first; embtune_core.encoders.long_documents);
* ``index-aware-windows``: index-aware plus ``--document-windows best``.

Each model is evaluated with documents cut at the limit (``256``, ``512``: the model's own behaviour)
and read whole as windows (``256/mean``, ``256/max``, ``512/mean``, ``512/max``: ``embtune evaluate
--document-windows``); the median Uber chunk is 769 MiniLM tokens. ``--evaluate-only`` re-evaluates
a model an earlier run trained (its training cost is kept).

Training cost (wall and CPU seconds of the training process, its peak RSS) is recorded per variant.

Run (each variant is ~10-30 minutes of training plus ~8 of evaluation on 2 idle CPU cores)::

    python bench/index_aware_10k.py --variant index-aware      # writes bench/results/index_aware_10k.json
    python bench/index_aware_10k.py --variant defaults
    python bench/index_aware_10k.py --variant windows
    python bench/index_aware_10k.py --variant defaults --evaluate-only   # new evaluations, same model

Results of earlier variants in the output file are kept; ../shared/data must exist (else it skips).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa"
sys.path.insert(0, str(ROOT))

from embtune_core.runtime import atomic

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
ADA_002_HIT5 = 0.871  # OpenAI ada-002 on the same Uber questions (LlamaIndex's finetune_embedding guide)
VARIANTS = {  # extra `embtune train` options of each variant (UBER: the Uber dataset, chunk texts only)
    "defaults": [],
    "index-aware": ["--index-corpus", "UBER"],
    "windows": ["--document-windows", "best"],
    "index-aware-windows": ["--index-corpus", "UBER", "--document-windows", "best"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", choices=tuple(VARIANTS), required=True)
    parser.add_argument("--evaluate-only", action="store_true", help="re-evaluate the model an earlier run trained")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--work", default=str(ROOT / "runs" / "index_aware_10k"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "index_aware_10k.json"))
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                        help="more `embtune train` options (recorded), e.g. --extra --index-hard-negatives 1")
    opts = parser.parse_args()
    data, work = Path(opts.data), Path(opts.work) / opts.variant
    if not (data / "train_dataset.json").is_file():
        print(f"bench/index_aware_10k.py: no data at {data}; skipping", file=sys.stderr)
        return 0
    model_dir = work / "model"
    train = ["train", "--train", str(data / "train_dataset.json"), "--model", MODEL, "--out", str(model_dir),
             "--checkpoint-dir", str(work / "checkpoints")]
    for option in VARIANTS[opts.variant]:
        train += [option.replace("UBER", str(data / "val_dataset.json"))]
    train += opts.extra
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": os.environ.get("EMBTUNE_NO_PROGRESS", "1"),
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    results = json.loads(Path(opts.out).read_text()) if Path(opts.out).is_file() else {}
    earlier = results.get("variants", {}).get(opts.variant, {})
    if opts.evaluate_only:
        if not (model_dir / "embtune_train.json").is_file():
            print(f"bench/index_aware_10k.py: no trained model at {model_dir}; run without --evaluate-only",
                  file=sys.stderr)
            return 2
        cost = earlier.get("training_cost")
    else:
        cost = _timed([sys.executable, "-m", "embtune_core.cli", *train], env)
    summary = json.loads((model_dir / "embtune_train.json").read_text(encoding="utf-8"))

    figures = {}
    for limit in ("256", "512"):
        for windows in ("off", "mean", "max"):
            key = limit if windows == "off" else f"{limit}/{windows}"
            out = work / f"evaluate_{key.replace('/', '_')}"
            evaluate = ["evaluate", str(data / "val_dataset.json"), "--system", f"base=model:{MODEL}",
                        "--system", f"tuned=model:{model_dir}", "--max-seq-length", limit, "--out", str(out)]
            if windows != "off":
                evaluate += ["--document-windows", windows]
            started = time.time()
            subprocess.run([sys.executable, "-m", "embtune_core.cli", *evaluate], check=True, env=env, cwd=ROOT)
            figures[key] = {"command": "embtune " + " ".join(shlex.quote(p) for p in evaluate),
                            "evaluate_wall_seconds": round(time.time() - started, 1),
                            **_paired(json.loads((out / "report.json").read_text(encoding="utf-8")))}

    results.setdefault("variants", {})[opts.variant] = {
        "train_command": "embtune " + " ".join(shlex.quote(p) for p in train),
        "training_cost": cost,
        "index_aware": summary.get("index_aware"),
        "document_windows": summary.get("document_windows"),
        "train_queries": summary["data"]["train"]["queries"], "global_step": summary["global_step"],
        "exported": summary.get("exported"), "max_seq_length": summary.get("max_seq_length"),
        "figures": figures,
        "beats_ada_002_hit5": {k: v["tuned"]["hit@5"] >= ADA_002_HIT5 for k, v in figures.items()},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    results["benchmark"] = ("packaged all-MiniLM-L6-v2 fine-tuned on the Lyft 10-K questions, evaluated on "
                            "the Uber ones (LlamaIndex 10-K QA); ada-002 hit@5 0.871 for reference")
    atomic.write_json(opts.out, results)
    print(json.dumps(results["variants"][opts.variant]["figures"], indent=2))
    return 0


def _timed(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall and CPU seconds and peak RSS (MiB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    subprocess.run(command, check=True, env=env, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_seconds": round(time.time() - started, 1),
            "cpu_seconds": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
            "peak_rss_mib": round(after.ru_maxrss / 1024, 1)}


def _paired(report: dict) -> dict:
    """Means of base and tuned and tuned's paired difference with its 95% CI, per headline metric."""
    systems = {s["name"]: next(iter(s["results"].values())) for s in report["systems"]}
    keys = {"hit@5": "hit_rate@5", "mrr@10": "mrr@10", "ndcg@10": "ndcg@10"}
    out: dict = {"base": {}, "tuned": {}, "difference": {}}
    for short, key in keys.items():
        out["base"][short] = round(systems["base"][key]["mean"], 4)
        out["tuned"][short] = round(systems["tuned"][key]["mean"], 4)
        versus = systems["tuned"][key]["vs_baseline"]
        out["difference"][short] = {"mean": round(versus["difference"], 4), "ci95": [round(versus["ci_low"], 4),
                                    round(versus["ci_high"], 4)], "p_randomization": versus["p_randomization"]}
    return out


if __name__ == "__main__":
    sys.exit(main())
