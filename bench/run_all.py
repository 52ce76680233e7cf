"""Run every benchmark of the project, then write bench/RESULTS.md from bench/results/*.json.

    python bench/run_all.py             # run them all (about two hours on 2 CPU cores), then summarise
    python bench/run_all.py --only qgen evaluate
    python bench/run_all.py --summarise # only rebuild RESULTS.md from the figures already there

Each benchmark compares embtune with a reference run side by side in the same process tree and
writes its own JSON; this script only runs them in turn and tabulates the ratios.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"

# name -> (script, result file); quality runs need ../shared/data and skip without it.
BENCHMARKS = {
    "qgen": ("bench_qgen.py", "qgen.json"),
    "evaluate": ("bench_evaluate.py", "evaluate.json"),
    "adapter": ("bench_adapter.py", "adapter.json"),
    "train": ("bench_train.py", "train.json"),
    "adapter_10k": ("adapter_10k.py", "adapter_10k.json"),
    "train_10k": ("train_10k.py", "train_10k.json"),
    "onnx": ("bench_onnx.py", "onnx.json"),
    "train_memory": ("train_memory.py", "train_memory.json"),
    "gradcache_minibatch": ("gradcache_minibatch.py", "gradcache_minibatch.json"),
    "long_chunk": ("long_chunk.py", "long_chunk.json"),
    "lora": ("bench_lora.py", "lora.json"),
    "index_aware_10k": ("index_aware_10k.py", "index_aware_10k.json"),
    "adapter_dims_10k": ("adapter_dims_10k.py", "adapter_dims_10k.json"),
    "adapter_dims_10k_t01": ("adapter_dims_10k.py", "adapter_dims_10k_t01.json"),
    "quickstart_twice": ("quickstart_twice.py", "quickstart_twice.json"),
    "qgen_vs_ict": ("qgen_vs_ict.py", "qgen_vs_ict.json"),
    "docsgpt_host_metric": ("docsgpt_host_metric.py", "docsgpt_host_metric.json"),
}
# Scripts that take arguments run once per argument list.
ARGUMENTS = {"index_aware_10k": [["--variant", "defaults"], ["--variant", "index-aware"], ["--variant", "windows"],
                                  ["--variant", "index-aware-windows"]],
             "adapter_dims_10k_t01": [["--temperature", "0.1", "--out", str(RESULTS / "adapter_dims_10k_t01.json")]]}


def _load(name: str) -> dict | None:
    path = RESULTS / BENCHMARKS[name][1]
    return json.loads(path.read_text()) if path.is_file() else None


def _get(data: dict | None, *keys, default=None):
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def _fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))


def summarise() -> str:
    versions = {}
    for name in ("embtune", "torch", "sentence-transformers", "transformers", "faiss-cpu", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    rows = []
    qgen = _load("qgen")
    rows.append(("question generation, concurrency 16 vs sequential (300 ms/call)", "throughput ratio",
                 _fmt(_get(qgen, "throughput_ratio"), 2) + "x", ">= 8x"))
    evaluate = _load("evaluate")
    rows.append(("evaluation vs sentence-transformers InformationRetrievalEvaluator", "time ratio (ours / ST)",
                 _fmt(_get(evaluate, "ratios", "ours_cold_over_st"), 2), "<= 1.0"))
    rows.append(("repeated evaluation from the embedding cache", "speed-up",
                 _fmt(_get(evaluate, "ratios", "cold_over_warm_speedup"), 0) + "x", ">= 20x"))
    adapter = _load("adapter")
    rows.append(("adapter training, 12 epochs, vs re-embedding every batch (LlamaIndex loop)", "speed-up",
                 _fmt(_get(adapter, "speedup_vs_reference"), 1) + "x", ">= 20x"))
    rows.append(("adapter training, extra time over one embedding pass", "overhead",
                 _fmt(_get(adapter, "overhead_vs_one_embedding_pass"), 3), "< 0.05"))
    train = _load("train")
    rows.append(("embtune train vs plain sentence-transformers script", "wall-time ratio",
                 _fmt(_get(train, "ratio_embtune_over_plain", "wall_seconds")), "<= 1.05"))
    rows.append(("embtune train vs plain sentence-transformers script", "peak-memory ratio",
                 _fmt(_get(train, "ratio_embtune_over_plain", "peak_rss_mib")), "<= 1.05"))
    t10 = _load("train_10k")
    for label, key in (("at 512 tokens (chunks are ~770)", "figures"),
                       ("at 256 tokens (as packaged)", "figures_at_training_length")):
        hit = _get(t10, key, "hit@5") or {}
        rows.append((f"full fine-tune MiniLM, Lyft -> Uber, hit@5 {label}", "before -> after (points)",
                     f"{_fmt(hit.get('before'), 4)} -> {_fmt(hit.get('after'), 4)} ({_fmt(hit.get('change_points'), 2)})",
                     "> +5.7"))
    a10 = _load("adapter_10k")
    for kind, label in (("linear", "linear adapter"), ("two-layer", "two-layer adapter"),
                        ("two-layer + index pseudo-queries",
                         "two-layer adapter + pseudo-queries from the Uber chunk texts (transductive)")):
        gain = _get(a10, "adapters", kind, "gain_mean") or {}
        hit5, mrr = gain.get("hit_rate@5"), gain.get("mrr@10")
        rows.append((f"{label} on frozen MiniLM, Lyft -> Uber (mean of seeds)", "hit@5 / MRR@10 gain",
                     f"{_fmt(hit5 * 100 if hit5 is not None else None, 2)} pts / {_fmt(mrr, 4)}",
                     "> +1.2 pts / > +0.019"))
    onnx = _load("onnx")
    recommended = _get(onnx, "recommended")
    for name in ("onnx fp32", "onnx int8", "onnx int8-mixed"):
        fig = _get(onnx, "figures", name) or {}
        if not fig:
            continue
        chosen = " (recommended by the export)" if name == recommended else ""
        rows.append((f"MiniLM on the Uber corpus, {name}{chosen} vs torch fp32 (CPU)", "docs/s speed-up, NDCG@10 change",
                     f"{_fmt(fig.get('speedup_vs_torch'), 2)}x, {_fmt(fig.get('ndcg@10_minus_torch'), 4)}",
                     ">= 2x within 0.005 (the recommended file)"))
    memory = _load("train_memory")
    if memory:
        fig = memory["figures"]
        ndcg = fig["ndcg@10_uber"]
        rows.append(("`embtune train` defaults on Lyft, memory-aware (GradCache) vs the whole batch at once",
                     "peak RSS; CPU-s ratio; NDCG@10 on Uber [before's 95% CI]",
                     (f"{fig['peak_rss_gb']['before']} -> {fig['peak_rss_gb']['after']} GB; "
                      f"{_fmt(fig['cpu_seconds']['ratio'], 3)}; {ndcg['before']['ndcg@10']} -> {ndcg['after']['ndcg@10']} "
                      f"[{ndcg['before']['ci'][0]}, {ndcg['before']['ci'][1]}]"),
                     "<= 3 GB; <= 1.2; inside the CI"))
    sweep = _load("gradcache_minibatch")
    if sweep:
        rows.append(("one MNRL step, batch 64 x 256 tokens, GradCache mini-batches vs at once",
                     "CPU time ratio by mini-batch (peak RSS MiB)",
                     ", ".join(f"{name} {sweep['cpu_time_vs_at_once'][name]} ({run['peak_rss_mib']:.0f})"
                               for name, run in sweep["runs"].items()), "comparison"))
    long_chunk = _load("long_chunk")
    if long_chunk:
        fig = long_chunk["figures"]
        rows.append(("`embtune evaluate` with one 20 MB chunk among 21: before, after, reading only what is kept",
                     "CPU-s / peak GB", ", ".join(f"{name} {f['cpu_seconds']} / {f['peak_rss_gb']}"
                                                   for name, f in fig.items()),
                     "after ~ kept only"))
    lora = _load("lora")
    for entry in _get(lora, "table", default=[]) or []:
        rows.append((f"{entry['method']} ({_get(lora, 'epochs')} epoch, 256 tokens), Lyft -> Uber", "NDCG@10, hit@5",
                     f"{entry['ndcg@10']}, {entry['hit@5']}", "comparison"))
    idx = _load("index_aware_10k")
    for variant, fig in sorted((_get(idx, "variants") or {}).items()):
        for limit, target in (("256", ">= 0.80"), ("512", ">= 0.85"), ("256/mean", ">= 0.871"),
                              ("256/max", ">= 0.871"), ("512/mean", ">= 0.871"), ("512/max", ">= 0.871")):
            f = _get(fig, "figures", limit) or {}
            if not f:
                continue
            d = _get(f, "difference", "hit@5") or {}
            tokens, _, windows = limit.partition("/")
            how = f"{tokens}-token windows, {windows} (--document-windows {windows})" if windows else f"{tokens} tokens"
            rows.append((f"`embtune train` {variant}, MiniLM Lyft -> Uber, hit@5 at {how}",
                         "before -> after [95% CI of the gain]",
                         (f"{_fmt(_get(f, 'base', 'hit@5'), 4)} -> {_fmt(_get(f, 'tuned', 'hit@5'), 4)} "
                         f"[{_fmt((d.get('ci95') or [None])[0], 4)}, {_fmt((d.get('ci95') or [None, None])[1], 4)}]"),
                         f"{target} (ada-002: 0.871)"))
    for name in ("adapter_dims_10k", "adapter_dims_10k_t01"):
        dims = _load(name)
        for variant_name, variant in (_get(dims, "variants") or {}).items():
            gains, worst = variant["gain_mean"], variant["worst_seed_gain"]
            rows.append((f"adapter {variant_name}, temperature {dims.get('temperature', 0.05)}, Lyft -> Uber, "
                         "NDCG@10 gain at " + "/".join(gains),
                         f"mean over {dims.get('seeds')} seeds (worst seed)",
                         ", ".join(f"{g['ndcg@10']:+.4f} ({worst[d]['ndcg@10']:+.4f})" for d, g in gains.items()),
                         ">= 0 at every width"))
    quick = _load("quickstart_twice")
    if quick:
        runs = quick["runs"]
        chosen = quick.get("recommended") or {}
        ndcg = chosen.get("ndcg@10") or {}
        versus = " / ".join(f"{ndcg[k]['difference']:+.3f} (p {ndcg[k]['p_holm']:.4f})" for k in ("vs_base", "vs_bm25")
                            if k in ndcg)
        rows.append(("`embtune quickstart`, two output folders",
                     ("identical scores and recommendation; the recommended system's NDCG@10 gain over the base / "
                      "BM25 on validation (Holm); cost of each run"),
                     (f"{quick['identical_per_query_scores']} ({chosen.get('system')}, same: "
                      f"{chosen.get('same_in_both_folders')}); {versus}; "
                      + "; ".join(f"{run.get('wall_seconds')} s wall, {run.get('cpu_seconds')} CPU-s, "
                                  f"{run.get('peak_rss_gb')} GB" for run in runs)),
                     "true; > 0, p < 0.05; <= 300 CPU-s"))
    rows += _qgen_vs_ict_rows(_load("qgen_vs_ict"))
    rows += _docsgpt_rows(_load("docsgpt_host_metric"))
    lines = [
        "# Benchmark results",
        "",
        (f"Written by `python bench/run_all.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; each "
        "figure comes from the JSON file its benchmark wrote under `bench/results/` (see its `command` field)."),
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + ". No GPU.",
        "",
        ("Figures recorded in this repository were taken on a 2-core machine shared with other jobs; wall times "
        "are noisy there, which is why every speed target is a ratio of runs interleaved in one process tree."),
        "",
        "| benchmark | measure | result | target |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
        *_details(onnx, lora),
    ]
    return "\n".join(lines)


def _docsgpt_rows(data: dict | None) -> list[tuple[str, str, str, str]]:
    """Adapters (--host-vectors) against an index built as DocsGPT builds it (L2), per base model."""
    rows = []
    for kind, entry in ((data or {}).get("bases") or {}).items():
        p = entry["paired"]
        rows.append(((f"`train-adapter --host-vectors` served through the DocsGPT hook, {kind} MiniLM, Uber index "
                     "built as DocsGPT builds it (FAISS.from_documents, L2)"),
                     "hit@1 base -> adapted [95% paired CI of the difference]; McNemar p",
                     (f"{_fmt(entry['hit@1']['base'], 4)} -> {_fmt(entry['hit@1']['adapted'], 4)} "
                     f"[{_fmt(p['ci95'][0], 4)}, {_fmt(p['ci95'][1], 4)}]; {_fmt(p['mcnemar_exact_p'], 3)}"),
                     "not below the base beyond noise (CI high >= 0)"))
        old = entry.get("inner_product_adapter")
        if old:
            rows.append(((f"the same with the adapter of issue 27 (inner product, unit-length output), {kind} MiniLM, "
                         "applied by hand (the hook refuses it)"), "hit@1 base -> adapted [95% paired CI]",
                         (f"{_fmt(entry['hit@1']['base'], 4)} -> {_fmt(old['hit@1'], 4)} "
                         f"[{_fmt(old['paired']['ci95'][0], 4)}, {_fmt(old['paired']['ci95'][1], 4)}]"),
                         "refused in one line"))
    return rows


def _qgen_vs_ict_rows(data: dict | None) -> list[tuple[str, str, str, str]]:
    """LLM questions (embtune's default prompt, local server) vs ICT on a Lyft slice, tuned MiniLM on Uber."""
    if not data:
        return []
    rows = []
    size = _get(data, "slice", "chunks")
    base = _get(data, "figures", "vs_base", "base") or {}
    for name, info in (_get(data, "sets") or {}).items():
        if info.get("trained_on") is False:
            rows.append((f"{name}: SmolLM2-135M with {info.get('prompt')} on {info.get('chunks_asked')} Lyft chunks",
                         "usable questions", (f"{info.get('questions')} ({info.get('chunks_failed')} chunks with broken "
                         f"JSON, {sum((info.get('questions_dropped') or {}).values())} questions dropped by the "
                         "filter); not trained on"), "LLM prompt vs ICT"))
            continue
        fig = _get(data, "figures", "vs_base", name) or {}
        cells = []
        for metric in ("hit@5", "ndcg@10"):
            ci = _get(fig, f"{metric} difference", "ci95") or [None, None]
            cells.append(f"{metric} {_fmt(base.get(metric), 4)} -> {_fmt(fig.get(metric), 4)} "
                         f"[{_fmt(ci[0], 4)}, {_fmt(ci[1], 4)}]")
        what = (f"{info.get('questions')} {name} questions" if info.get("generator") == "ict" else
                f"{info.get('questions')} {name} questions (SmolLM2-135M, {info.get('prompt')}; "
                f"{info.get('questions_made')} made, {sum((info.get('questions_dropped') or {}).values())} "
                f"dropped by the filter)")
        rows.append((f"`embtune train` on {what} for {size} Lyft 10-K chunks, MiniLM -> Uber at 256 tokens",
                     "before -> after [95% CI of the gain]", "; ".join(cells), "LLM prompt vs ICT"))
    for name, fig in (_get(data, "figures", "vs_ict") or {}).items():
        diff = fig.get("hit@5 difference") if isinstance(fig, dict) else None
        if diff:
            rows.append((f"{name} questions vs ICT questions (tuned MiniLM, Uber, 256 tokens)",
                         "hit@5 difference [95% CI]",
                         f"{diff['mean']:+.4f} [{diff['ci95'][0]:+.4f}, {diff['ci95'][1]:+.4f}]", "comparison"))
    return rows


def _details(onnx: dict | None, lora: dict | None) -> list[str]:
    """The ONNX and LoRA benchmarks' own tables, each with the command that produced it."""
    lines: list[str] = []
    if onnx:
        lines += ["## CPU inference: torch vs ONNX Runtime (packaged MiniLM, Uber corpus)", "",
                  (f"`{onnx['command']}` ({onnx['documents']} documents, batch {onnx['batch_size']}, "
                  f"{onnx['threads']} threads, max_seq_length {onnx['max_seq_length']}, median of {onnx['rounds']} "
                  "alternating passes; NDCG@10 and hit@5 over the 790 Uber questions)"), "",
                  "| backend | docs/s | speed-up | NDCG@10 | change | hit@5 | min / mean cosine to torch |",
                  "|---|---|---|---|---|---|---|"]
        for name, fig in onnx["figures"].items():
            agree = onnx.get("agreement", {}).get(name)
            cos = f"{agree['min_cosine_to_torch']:.4f} / {agree['mean_cosine_to_torch']:.4f}" if agree else "-"
            shown = f"{name} (recommended)" if name == onnx.get("recommended") else name
            lines.append(f"| {shown} | {fig['docs_per_second']} | {fig['speedup_vs_torch']}x | {fig['ndcg@10']:.4f} | "
                         f"{fig['ndcg@10_minus_torch']:+.4f} | {_fmt(fig.get('hit@5'), 4)} | {cos} |")
        lines += ["", f"Target ({onnx['target']}) met: {onnx['target_met']}.", ""]
    if lora:
        lines += ["## Training modes on Lyft -> Uber at equal epochs", "",
                  (f"`{lora['command']}` ({lora['epochs']} epoch, {lora['max_seq_length']} tokens; evaluated together "
                  f"by `{lora['evaluate_command']}`; differences are paired against the base model with "
                  "bootstrap CIs, as `embtune evaluate` reports them)"), "",
                  ("| method | hit@5 | hit@5 diff [CI] | NDCG@10 | NDCG@10 diff [CI] | trainable params | wall s | "
                  "CPU s | peak RSS MiB | size on disk |"), "|---|---|---|---|---|---|---|---|---|---|"]
        for row in lora["table"]:
            lines.append(f"| {row['method']} | {row['hit@5']} | {row['hit@5 diff [CI]']} | {row['ndcg@10']} | "
                         f"{row['ndcg@10 diff [CI]']} | {row['trainable parameters']:,} | {row['wall s']} | "
                         f"{row['CPU s']} | {row['peak RSS MiB']} | {row['size on disk bytes'] / 1e6:.1f} MB |")
        lines.append("")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    parser.add_argument("--summarise", action="store_true", help="do not run anything; rebuild RESULTS.md")
    args = parser.parse_args()
    if not args.summarise:
        for name in args.only or BENCHMARKS:
            script = BENCH / BENCHMARKS[name][0]
            for arguments in ARGUMENTS.get(name, [[]]):
                print(f"== {name}: {script.name} {' '.join(arguments)}", flush=True)
                result = subprocess.run([sys.executable, str(script), *arguments], check=False)
                if result.returncode != 0:
                    print(f"   {name} exited with {result.returncode}; its old figures (if any) are kept", flush=True)
    sys.path.insert(0, str(BENCH.parent))
    from embtune_core.runtime import atomic

    atomic.write_text(BENCH / "RESULTS.md", summarise())
    print(f"wrote {BENCH / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
