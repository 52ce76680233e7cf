"""The quickstart from two different output folders: identical figures, its recommendation, its cost.

Runs `embtune quickstart --out A` and `embtune quickstart --out B/elsewhere` one after the other
(fresh folders, each with an empty embedding cache), each under `/usr/bin/time -v` when present (wall,
CPU seconds, peak RSS), then checks that both report.json files hold the same per-query scores for
every system and dimension and recommend the same system. It writes the recommendation's validation
figure against the base model and BM25 (paired randomisation test, Holm over those comparisons, as
the report states it) and lists, per tuned system and dimension, its NDCG@10 gain over the base with
p (also after Holm over all of them). The untuned systems (BM25, the tuned-fusion hybrid and the
sparse-dense vector of the base model) are listed apart, as the reference baselines they are.

    python bench/quickstart_twice.py           # writes bench/results/quickstart_twice.json (~10 min)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BASELINES = ("bm25", "hybrid-base", "sparse-dense-base")  # no model weights or vectors tuned

from embtune_core.runtime import atomic


def main() -> int:
    out = ROOT / "bench" / "results" / "quickstart_twice.json"
    with tempfile.TemporaryDirectory(prefix="embtune-qs-") as tmp:
        folders = [Path(tmp) / "a", Path(tmp) / "b" / "elsewhere"]
        runs = [_run(folder) for folder in folders]
        reports = [json.loads((f / "run" / "report.json").read_text()) for f in folders]
        identical = reports[0]["per_query"] == reports[1]["per_query"] and \
            reports[0]["query_ids"] == reports[1]["query_ids"]
        chosen = [r["recommendation"]["recommended"] for r in reports]
        table = (folders[0] / "run" / "report.md").read_text().split("## Headline metrics")[-1][:3000]
        shutil.rmtree(tmp, ignore_errors=True)
    significance, reference = {}, {}
    for system in reports[0]["systems"]:
        if system["name"] == "base":
            continue
        # BM25 and the base model's hybrid and sparse-dense vector tune nothing: their rows are not gains
        # of tuning, so they are listed apart from the tuned systems.
        into = reference if system["name"] in BASELINES else significance
        for dim, metrics in system["results"].items():
            versus = metrics["ndcg@10"]["vs_baseline"]
            into[f"{system['name']}@{dim}"] = {
                "difference": round(versus["difference"], 4), "p_randomization": versus["p_randomization"],
                "significant_gain": versus["difference"] > 0 and versus["p_randomization"] < 0.05}
    from embtune_core.reporting.report_verdict import holm

    adjusted = holm([v["p_randomization"] for v in significance.values()])
    for row, p_holm in zip(significance.values(), adjusted):
        row["p_holm"] = p_holm
    recommended = {"system": chosen[0]["system"], "dim": chosen[0]["dim"],
                   "same_in_both_folders": chosen[0]["system"] == chosen[1]["system"]}
    for metric, figures in chosen[0]["metrics"].items():  # as the report's opening sentence states them
        recommended[metric] = {"validation": round(figures["mean"], 4)}
        for versus in ("vs_base", "vs_bm25"):
            recommended[metric][versus] = {key: value if key.startswith("p") else round(value, 4)
                                           for key, value in figures[versus].items()}
    result = {"runs": runs, "identical_per_query_scores": identical, "recommended": recommended,
              "ndcg@10_vs_base": significance,
              "baselines_ndcg@10_vs_base": reference,
              "every_gain_significant": all(v["significant_gain"] for v in significance.values()),
              "every_gain_significant_after_holm": all(v["difference"] > 0 and v["p_holm"] < 0.05
                                                       for v in significance.values()),
              "headline_table": table, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic.write_json(out, result)
    print(json.dumps({k: v for k, v in result.items() if k != "headline_table"}, indent=2))
    return 0


def _run(folder: Path) -> dict:
    folder.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "embtune_core.cli", "quickstart", "--out", str(folder)]
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    # A cache of its own: embeddings left by earlier runs would make it look faster than a first run.
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "EMBTUNE_CACHE": str(folder.parent / f".cache-{folder.name}")}
    started = time.time()
    done = subprocess.run(timer + command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"quickstart failed in {folder}: {done.stderr[-2000:]}")
    figures = {"wall_seconds": round(time.time() - started, 1)}
    for label, key in (("User time (seconds)", "user"), ("System time (seconds)", "system"),
                       ("Maximum resident set size (kbytes)", "rss_kb")):
        found = re.search(re.escape(label) + r": ([\d.]+)", done.stderr)
        if found:
            figures[key] = float(found.group(1))
    if "user" in figures:
        figures["cpu_seconds"] = round(figures["user"] + figures.get("system", 0), 1)
    if "rss_kb" in figures:
        figures["peak_rss_gb"] = round(figures.pop("rss_kb") / 1024 ** 2, 2)
    return figures


if __name__ == "__main__":
    sys.exit(main())
