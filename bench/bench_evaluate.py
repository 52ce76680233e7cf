"""Benchmark: ``embtune`` evaluation against sentence-transformers' InformationRetrievalEvaluator.

Measures, in one run, on the same model and data:

* ``ours_cold / st`` -- our full evaluation (embed through an empty cache, exact FAISS search,
  IR metrics, bootstrap CIs) against ``InformationRetrievalEvaluator`` (target <= 1.0x);
* ``ours_cold / ours_warm`` -- a repeated evaluation of the same model, in a fresh
  ``EmbeddingCache`` over the same folder with a fresh encoder (as a new ``embtune evaluate`` run
  would be), served from the cache (target >= 20x faster);
* agreement of every metric with sentence-transformers (max absolute difference).

Both sides have the model loaded before timing starts; the two are run alternately
``--repeats`` times and the medians compared. It uses the shared val set
(``../shared/data/llamaindex-10k-qa/val_dataset.json``) with the packaged MiniLM when present, else a
generated dataset. Writes ``bench/results/evaluate.json``; with Debian chromium installed it also
renders the HTML report of the run and saves ``bench/results/report_screenshot.png``.

Usage::

    python bench/bench_evaluate.py [--dataset PATH] [--model NAME] [--repeats 2] [--dims 384,256,128,64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("EMBTUNE_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_VAL = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa" / "val_dataset.json"
RESULTS = ROOT / "bench" / "results"
CHROMIUM = "/usr/bin/chromium"


def generated_dataset(n_docs: int = 400, seed: int = 0):
    """A synthetic dataset: documents of random vocabulary, two queries per document made of its words."""
    import random

    from embtune_core.data.dataset import QADataset

    rng = random.Random(seed)
    words = [f"{a}{b}" for a in ("rev", "cost", "risk", "tax", "loan", "fleet", "user", "fee") for b in
             ("enue", "ing", "ed", "ation", "ity", "ment", "ance", "ure", "al", "ist")]
    corpus, queries, relevant = {}, {}, {}
    for d in range(n_docs):
        text = " ".join(rng.choice(words) for _ in range(120))
        corpus[f"d{d}"] = text
        for j in range(2):
            queries[f"q{d}_{j}"] = "what about " + " ".join(rng.sample(text.split(), 8))
            relevant[f"q{d}_{j}"] = [f"d{d}"]
    return QADataset(queries, corpus, relevant)


def time_st(model, dataset) -> tuple[float, dict[str, float]]:
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    start = time.perf_counter()
    evaluator = InformationRetrievalEvaluator(dataset.queries, dataset.corpus,
                                              {q: set(v) for q, v in dataset.relevant_docs.items()},
                                              write_csv=False)
    results = evaluator(model)
    return time.perf_counter() - start, {k.removeprefix("cosine_"): v for k, v in results.items()}


def time_ours(spec: str, dataset, cache_root: Path, dims, *, preload: bool, name: str = "<dataset>"):
    from embtune_core.encoders.embedding_cache import EmbeddingCache
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_core.scoring.evaluation import System, evaluate_systems

    if preload:  # cold run: the model is loaded outside the timing, as for sentence-transformers
        encoder = encoder_from_spec(spec)
        _ = encoder.model
        start = time.perf_counter()
    else:  # repeated run: a new process would build the encoder (identity) but never load the model
        start = time.perf_counter()
        encoder = encoder_from_spec(spec)
    evaluation = evaluate_systems([System("base", encoder, spec=spec)], dataset, dims=dims, dataset_name=name,
                                  cache=EmbeddingCache(cache_root), progress_bar=False)
    return time.perf_counter() - start, evaluation


def screenshot(html_path: Path, out_png: Path) -> bool:
    if not Path(CHROMIUM).exists():
        return False
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                        f"--user-data-dir={profile}", "--window-size=1400,1700", f"--screenshot={out_png}",
                        html_path.as_uri()], check=True, capture_output=True, timeout=180)
    return out_png.is_file()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default=str(SHARED_VAL) if SHARED_VAL.is_file() else None)
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--dims", default=None, help="extra Matryoshka dims for the report, e.g. 384,256,128,64")
    parser.add_argument("--out", default=str(RESULTS / "evaluate.json"))
    args = parser.parse_args(argv)

    import numpy as np
    import torch

    from embtune_core.data.dataset import QADataset
    from embtune_core.encoders.models import load_sentence_transformer
    from embtune_core.reporting.report import write_reports
    from embtune_core.runtime import atomic

    dataset = QADataset.load(args.dataset) if args.dataset else generated_dataset()
    dataset_name = args.dataset or "generated (400 documents, 800 queries)"
    model = load_sentence_transformer(args.model, device="cpu")
    spec = f"st:{args.model}"
    full_dim = model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension") else \
        model.get_sentence_embedding_dimension()
    dims = [full_dim]
    work = Path(tempfile.mkdtemp(prefix="bench-evaluate-"))
    st_times, cold_times, warm_times = [], [], []
    try:
        time_st(model, dataset.subset(list(dataset.queries)[:16]))  # warm up kernels and tokenizer once
        st_metrics = ours_metrics = None
        cold_eval = None
        for repeat in range(args.repeats):
            seconds, st_metrics = time_st(model, dataset)
            st_times.append(seconds)
            cache_root = work / f"cache{repeat}"
            seconds, cold_eval = time_ours(spec, dataset, cache_root, dims, preload=True)
            cold_times.append(seconds)
            seconds, warm_eval = time_ours(spec, dataset, cache_root, dims, preload=False)
            warm_times.append(seconds)
            assert warm_eval.summary == cold_eval.summary, "cached evaluation differs from the cold one"
            print(f"repeat {repeat}: st {st_times[-1]:.2f}s, ours cold {cold_times[-1]:.2f}s, "
                  f"ours warm {warm_times[-1]:.3f}s", flush=True)
        ours_metrics = cold_eval.systems[0].dims[full_dim].means()
        differences = {k: abs(ours_metrics[k] - v) for k, v in st_metrics.items()}

        report_eval = cold_eval
        if args.dims:
            _, report_eval = time_ours(spec, dataset, work / "cache0", [int(d) for d in args.dims.split(",")],
                                       preload=False, name=dataset_name)
        paths = write_reports(report_eval, work / "report")
        shot = screenshot(paths["html"], RESULTS / "report_screenshot.png")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    st_median, cold_median, warm_median = (statistics.median(t) for t in (st_times, cold_times, warm_times))
    result = {
        "benchmark": "evaluate",
        "dataset": dataset_name,
        "queries": len(dataset.queries),
        "corpus": len(dataset.corpus),
        "model": args.model,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(),
                    "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "note": "shared machine; timings are medians of alternating runs"},
        "seconds": {"sentence_transformers_ir_evaluator": st_times, "ours_cold_cache": cold_times,
                    "ours_warm_cache": warm_times},
        "median_seconds": {"sentence_transformers_ir_evaluator": st_median, "ours_cold_cache": cold_median,
                           "ours_warm_cache": warm_median},
        "ratios": {
            "ours_cold_over_st": cold_median / st_median,
            "target_ours_cold_over_st": "<= 1.0",
            "cold_over_warm_speedup": cold_median / warm_median,
            "st_over_warm_speedup": st_median / warm_median,
            "target_warm_speedup": ">= 20",
        },
        "metrics": {"ours": ours_metrics, "sentence_transformers": st_metrics,
                    "max_abs_difference": max(differences.values()),
                    "abs_difference": differences},
        "screenshot": str((RESULTS / "report_screenshot.png").relative_to(ROOT)) if shot else None,
    }
    atomic.write_json(args.out, json.loads(json.dumps(result, default=lambda o: float(np.asarray(o)))))
    print(json.dumps({k: result[k] for k in ("median_seconds", "ratios")}, indent=2))
    print(f"max |ours - sentence-transformers| over {len(differences)} metrics: {result['metrics']['max_abs_difference']:.2e}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
