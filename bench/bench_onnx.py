"""CPU inference benchmark: the packaged MiniLM in torch fp32 vs every file of its ONNX export, and the one
the export recommends.

One process, one export (``embtune export --format onnx --quantize int8 --calibration LYFT``: fp32, fused O2,
int8, and int8 with the outlier channels of the calibration chunks in fp32 (embtune_core.encoders.onnx_mixed_int8);
the export measures them on Lyft chunks calibration did not use, with the Lyft questions about them, and
makes the fastest that holds quality its default (embtune_core.encoders.onnx_choice)). The Lyft set
(train_dataset.json) stands for the user's own chunks and questions; the Uber set (val_dataset.json),
which the export never sees, is what is measured here: documents/s embedding the Uber corpus, timed in
alternating rounds (torch, onnx, int8, ..., int8, onnx, torch, ...) so drifting machine load hits all
alike, median per backend; then NDCG@10 / hit@5 / MRR@10 of each on Uber through ``embtune evaluate``'s
own evaluation (``evaluate_systems`` + ``report_json``). Target: the recommended file >= 2x the
documents/s of torch fp32 at NDCG@10 within 0.005 of it.

Run (a few minutes on 2 cores; wrap it in the heavy-job lock on a shared machine)::

    flock /tmp/heavy.lock python bench/bench_onnx.py        # writes bench/results/onnx.json

Token limit: the model's own (256 for the packaged MiniLM), batch size 32, the same thread count for
torch and ONNX Runtime (--threads). The machine's CPU flags are recorded: int8 gains most with AVX-512
VNNI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa" / "val_dataset.json"
CALIBRATION = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa" / "train_dataset.json"
sys.path.insert(0, str(ROOT))

from embtune_core.runtime import atomic

BACKENDS = {"torch fp32": "torch", "onnx fp32": "onnx-fp32", "onnx O2": "onnx-o2", "onnx int8": "onnx-int8",
            "onnx int8-mixed": "onnx-int8-mixed"}
VARIANTS = {"onnx fp32": "fp32", "onnx O2": "O2", "onnx int8": "int8", "onnx int8-mixed": "int8-mixed"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--calibration", default=str(CALIBRATION), help="the user's chunks and questions")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the corpus per backend")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch and ONNX Runtime threads")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "onnx.json"))
    opts = parser.parse_args()
    if not Path(opts.data).is_file():
        print(f"bench/bench_onnx.py: no data at {opts.data}; skipping", file=sys.stderr)
        return 0
    os.environ.setdefault("EMBTUNE_NO_PROGRESS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import numpy as np
    import torch

    torch.set_num_threads(opts.threads)
    from embtune_core.commands.evaluate import build_system, parse_system
    from embtune_core.data.dataset import QADataset
    from embtune_core.encoders.models import resolve
    from embtune_core.encoders.onnx_export import export_onnx, load_onnx_model
    from embtune_core.reporting.report import report_json
    from embtune_core.scoring.evaluation import evaluate_systems

    dataset = QADataset.load(opts.data)
    docs = list(dataset.corpus.values())
    minilm = resolve("sentence-transformers/all-MiniLM-L6-v2").target
    with tempfile.TemporaryDirectory(prefix="bench-onnx-") as tmp:
        os.environ["EMBTUNE_CACHE"] = str(Path(tmp) / "cache")  # every vector computed in this run
        folder = Path(tmp) / "minilm-onnx"
        started = time.perf_counter()
        manifest = export_onnx(minilm, folder, quantize="int8", calibration=QADataset.load(opts.calibration))
        export_seconds = time.perf_counter() - started
        recommended = "onnx " + manifest["default"]
        print(manifest["recommendation"]["line"], flush=True)
        from embtune_core.encoders.models import load_sentence_transformer

        models = {"torch fp32": load_sentence_transformer(str(folder))}
        models.update({name: load_onnx_model(folder, variant, threads=opts.threads) for name, variant in VARIANTS.items()})
        for model in models.values():  # warm-up (first-call allocations, graph optimisation)
            model.encode(docs[:64], batch_size=opts.batch_size)
        times: dict[str, list[float]] = {name: [] for name in models}
        order = list(models)
        vectors = {}
        for r in range(opts.rounds):
            for name in (order if r % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                vectors[name] = models[name].encode(docs, batch_size=opts.batch_size, convert_to_numpy=True)
                times[name].append(time.perf_counter() - t0)
        speed = {name: {"docs_per_second": round(len(docs) / statistics.median(t), 2),
                        "seconds_median": round(statistics.median(t), 3), "seconds": [round(x, 3) for x in t]}
                 for name, t in times.items()}
        reference = vectors["torch fp32"]

        def cosine(a, b):
            return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)

        agreement = {name: {"min_cosine_to_torch": round(float(cosine(reference, v).min()), 6),
                            "mean_cosine_to_torch": round(float(cosine(reference, v).mean()), 6)}
                     for name, v in vectors.items() if name != "torch fp32"}
        del models, vectors
        print("speed", json.dumps(speed), flush=True)  # kept in the log should the evaluation fail
        label = {name.replace(" ", "-"): name for name in BACKENDS}  # system names take no spaces
        systems = [build_system(parse_system(f"{name.replace(' ', '-')}=model:{folder}"),
                                encoder_options={"backend": backend})
                   for name, backend in BACKENDS.items()]
        evaluation = evaluate_systems(systems, dataset, dataset_name="uber val_dataset.json", seed=0,
                                      progress_bar=False)
        report = report_json(evaluation)
    quality = {}
    for system in report["systems"]:
        results = next(iter(system["results"].values()))
        quality[label[system["name"]]] = {
            metric: {k: round(v, 4) for k, v in results[metric].items() if isinstance(v, float)}
            for metric in ("ndcg@10", "hit_rate@5", "mrr@10") if metric in results}
    base = speed["torch fp32"]["docs_per_second"]
    ndcg0 = quality["torch fp32"]["ndcg@10"]["mean"]
    figures = {name: {"docs_per_second": speed[name]["docs_per_second"],
                      "speedup_vs_torch": round(speed[name]["docs_per_second"] / base, 2),
                      "ndcg@10": quality[name]["ndcg@10"]["mean"],
                      "ndcg@10_minus_torch": round(quality[name]["ndcg@10"]["mean"] - ndcg0, 4),
                      "hit@5": quality[name].get("hit_rate@5", {}).get("mean")} for name in speed}
    chosen = figures[recommended]
    result = {
        "benchmark": "packaged all-MiniLM-L6-v2 on the Uber corpus: torch fp32 vs each ONNX file (CPU)",
        "command": "flock /tmp/heavy.lock python bench/bench_onnx.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "export_command": "embtune export <minilm> --format onnx --quantize int8 --calibration LYFT --out <folder>",
        "recommended": recommended,
        "export_recommendation": manifest["recommendation"],
        "figures": figures,
        "target": "the recommended file >= 2x torch fp32 documents/s at NDCG@10 within 0.005",
        "target_met": chosen["speedup_vs_torch"] >= 2 and abs(chosen["ndcg@10_minus_torch"]) <= 0.005,
        "speed": speed, "agreement": agreement, "quality": quality,
        "documents": len(docs), "queries": len(dataset.queries), "batch_size": opts.batch_size,
        "threads": opts.threads, "rounds": opts.rounds, "export_seconds": round(export_seconds, 1),
        "export": manifest, "max_seq_length": 256,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "cpu_flags": _cpu_flags()},
    }
    atomic.write_json(opts.out, result)

    print(json.dumps({"figures": figures, "agreement": agreement, "target_met": result["target_met"]}, indent=2))
    print(f"written to {opts.out}")
    return 0


def _cpu_flags() -> list[str]:
    """The SIMD flags int8 and bf16 kernels depend on (Linux /proc/cpuinfo)."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
    return [f for f in wanted if f in flags.split()]


if __name__ == "__main__":
    sys.exit(main())
