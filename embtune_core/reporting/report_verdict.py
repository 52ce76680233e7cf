"""The report's first screen: the verdict in plain words, the context that produced it, and which
metrics are the same number on this data.

Everything here reads the report JSON (:func:`embtune_core.reporting.report.report_json`), so the HTML and
the Markdown say the same thing.

* **Verdict.** The best system on the primary metric (``ndcg@10``) and its difference from the
  baseline (the first system) at the same dimension, with the paired bootstrap CI. Whether a
  difference is significant is decided after a multiple-comparison correction: Holm's step-down
  Bonferroni method (Holm, "A simple sequentially rejective multiple test procedure", Scand. J.
  Statist. 6, 1979) over every comparison made on the primary metric (each non-baseline system
  against the baseline at each dimension), at level ``1 - confidence``, on the paired randomisation
  test's p-values. Holm controls the family-wise error rate under any dependence between the tests
  (ours are strongly dependent: the same queries at nested dimensions), which is why it is used
  rather than a method that assumes independence.
* **Equal metrics.** Metrics whose per-query scores are identical for every system and dimension
  are shown once. With exactly one relevant document per query this is expected: accuracy@k =
  hit_rate@k = recall@k (the one document is found or not) and mrr@1 = accuracy@1; the report
  checks it on the data rather than assuming it.
* **Context.** Dataset and source, split, corpus searched, question generator, chunker, each
  system's model, token limit and training, the date and embtune's version.
"""

from __future__ import annotations

import math
from typing import Any

CORRECTION = "Holm–Bonferroni"


def holm(pvalues: list[float]) -> list[float]:
    """Holm-adjusted p-values (same order as given): ``max over j <= i of (m - j) * p_(j)``, capped at 1.

    A comparison is significant at level alpha after correction exactly when its adjusted p <= alpha.
    """
    m = len(pvalues)
    order = sorted(range(m), key=lambda i: pvalues[i])
    adjusted = [1.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        adjusted[i] = running
    return adjusted


def _dims(system: dict[str, Any]) -> list[str]:
    return sorted(system["results"], key=int, reverse=True)


def comparisons(data: dict[str, Any], metric: str) -> list[dict[str, Any]]:
    """Every non-baseline system against the baseline on ``metric`` at each shared dimension, with the
    Holm-adjusted p-value over exactly these comparisons and the decision at ``1 - confidence``."""
    alpha = 1.0 - data["settings"]["confidence"]
    rows = []
    for system in data["systems"][1:]:
        for dim in _dims(system):
            versus = (system["results"][dim].get(metric) or {}).get("vs_baseline")
            if versus is None or versus.get("p_randomization") is None:
                continue
            rows.append({"system": system["name"], "dim": dim, "difference": versus["difference"],
                         "ci_low": versus["ci_low"], "ci_high": versus["ci_high"],
                         "p": versus["p_randomization"]})
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = adjusted
        row["significant"] = adjusted <= alpha
    return rows


def _best(data: dict[str, Any], metric: str) -> tuple[dict[str, Any], str, float] | None:
    best = None
    for system in data["systems"]:  # ties: the earlier system, then the wider dimension
        for dim in _dims(system):
            mean = (system["results"][dim].get(metric) or {}).get("mean")
            if mean is not None and (best is None or mean > best[2] + 1e-12):
                best = (system, dim, mean)
    return best


def _dim_list(dims: list[str]) -> str:
    return ", ".join(dims) + " dims"


def verdict(data: dict[str, Any], *, code: str = "`") -> list[str]:
    """The verdict as short plain sentences (``code`` quotes names: a backtick for Markdown); a run's
    recommendation (:mod:`embtune_core.workflow.recommend`) comes first."""
    if data.get("recommendation"):
        return [recommendation_sentence(data["recommendation"], code=code), *_verdict(data, code=code)]
    return _verdict(data, code=code)


def _verdict(data: dict[str, Any], *, code: str = "`") -> list[str]:
    metric = data.get("primary_metric", "ndcg@10")
    if not data["systems"]:
        return ["No system was evaluated."]
    q = lambda name: f"{code}{name}{code}"
    baseline = data["systems"][0]["name"]
    conf = round(data["settings"]["confidence"] * 100)
    alpha = 1.0 - data["settings"]["confidence"]
    rows = comparisons(data, metric)
    best = _best(data, metric)
    lines = []
    if best is None:
        return [f"No system has a {metric} score."]
    system, dim, mean = best
    if system["name"] == baseline or len(data["systems"]) == 1:
        lines.append(f"The baseline {q(baseline)} is best on {metric} ({mean:.4f} at {dim} dims); "
                     "no other system scores higher at any dimension." if len(data["systems"]) > 1 else
                     f"{q(baseline)} scores {mean:.4f} on {metric} at {dim} dims (nothing to compare with).")
    else:
        row = next((r for r in rows if r["system"] == system["name"] and r["dim"] == dim), None)
        where = (f"at {dim} dims" if system.get("dimension") else
                 f"(no embeddings: paired with the baseline at its {dim} dims)")
        text = f"{q(system['name'])} is best on {metric}: {mean:.4f} {where}"
        if row is not None:
            text += (f", {row['difference']:+.4f} over the baseline {q(baseline)} at the same dimension "
                     f"({conf}% CI {row['ci_low']:+.4f} to {row['ci_high']:+.4f}); this difference is "
                     f"{'significant' if row['significant'] else 'not significant'} after {CORRECTION} "
                     f"correction over the {len(rows)} comparisons made on {metric} "
                     f"(adjusted p = {_p(row['p_holm'])}, α = {alpha:.2f}).")
        else:
            text += f"; it shares no dimension with the baseline {q(baseline)}, so they were not compared."
        lines.append(text)
    better = [r for r in rows if r["significant"] and r["difference"] > 0]
    if rows and not better:
        lines.append(f"No system is significantly better than the baseline {q(baseline)} on {metric} at any "
                     f"dimension after {CORRECTION} correction.")
    for name in dict.fromkeys(r["system"] for r in rows):
        mine = [r for r in rows if r["system"] == name]
        up = [r["dim"] for r in mine if r["significant"] and r["difference"] > 0]
        down = [r["dim"] for r in mine if r["significant"] and r["difference"] < 0]
        same = [r["dim"] for r in mine if not r["significant"]]
        parts = []
        if up:
            parts.append(f"significantly better than {q(baseline)} at {_dim_list(up)}")
        if down:
            parts.append(f"significantly worse at {_dim_list(down)}")
        if same:
            parts.append(f"not significantly different at {_dim_list(same)}")
        lines.append(f"{q(name)}: " + "; ".join(parts) + ".")
    raw = sum(1 for r in rows if r["p"] < alpha)
    if rows:
        lines.append(f"{raw} of {len(rows)} comparisons on {metric} have an uncorrected p < {alpha:.2f} "
                     f"(paired randomisation test); {sum(r['significant'] for r in rows)} remain significant "
                     f"after {CORRECTION} correction.")
    return lines


def _p(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


# --- metrics that are the same number on this data ----------------------------------------------------
def equal_metric_groups(data: dict[str, Any]) -> list[list[str]]:
    """Groups (of two or more) of metrics whose per-query scores are identical for every system and dim."""
    per_query = data.get("per_query") or {}
    names: list[str] = []
    for system in data["systems"]:
        for results in system["results"].values():
            names = list(results)
            break
        break
    columns = []
    for system in data["systems"]:
        for dim, scores in sorted((per_query.get(system["name"]) or {}).items()):
            columns.append(scores)
    if not columns:
        return []
    groups: dict[tuple, list[str]] = {}
    for name in names:
        key = tuple(tuple(column.get(name) or ()) for column in columns)
        groups.setdefault(key, []).append(name)
    return [g for g in groups.values() if len(g) > 1]


def equal_metrics_reason(group: list[str], data: dict[str, Any]) -> str:
    relevant = (data.get("dataset") or {}).get("relevant_per_query") or {}
    if relevant.get("max") == 1:
        return ("every query has exactly one relevant document, so finding it in the top k is the whole "
                "of recall@k, accuracy@k and hit rate@k, and at k = 1 the reciprocal rank is 1 or 0")
    return "they coincide query by query on this data"


# --- context ------------------------------------------------------------------------------------------
def context_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) lines: what produced these numbers, most important first."""
    from embtune_core.encoders.token_limits import describe

    dataset, context = data["dataset"], dict(data.get("context") or {})
    rows = [("dataset", str(context.pop("dataset", dataset["name"])))]
    if dataset.get("split"):
        rows.append(("split", str(dataset["split"])))
    rows.append(("queries", f"{dataset['evaluated_queries']} evaluated"
                 + (f" ({dataset['skipped_queries']} without a relevant document left out)"
                    if dataset.get("skipped_queries") else "")))
    rows.append(("corpus searched", str(dataset.get("corpus_searched") or f"{dataset['corpus']} documents")))
    for label in ("source", "query generator", "chunker", "split rule"):
        if label in context:
            rows.append((label, str(context.pop(label))))
    for system in data["systems"]:
        text = system["spec"] or system["identity"]
        if system.get("dimension"):
            text += f"; {system['dimension']} dims"
        from embtune_core.reporting.report_backend import backend_text

        if backend_text(system):
            text += f"; {backend_text(system)}"
        limit = describe(system.get("truncation"))
        if limit:
            text += f"; token {limit}"
        for detail in system.get("details") or []:
            text += f"; {detail}"
        rows.append((f"system {system['name']}", text))
    run_date = context.pop("run date", None)
    rows += [(label, str(value)) for label, value in context.items()]
    if run_date:
        rows.append(("run date", str(run_date)))
    rows.append(("embtune", str(data.get("embtune_version", "?"))))
    return rows


def command_context(dataset: Any, *, split: str | None = None, index: list[str] | None = None) -> dict[str, str]:
    """Context for ``embtune evaluate``: where the dataset came from and when the report was made."""
    import time

    out = {"dataset": str(dataset), "run date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if index:
        out["index datasets"] = ", ".join(str(p) for p in index)
    return out


def recommendation_sentence(summary: dict[str, Any], *, code: str = "") -> str:
    """The report's opening sentence: what to deploy, its validation figure against the base and BM25."""
    rec = summary["recommended"]
    q = lambda name: f"{code}{name}{code}"
    parts = []
    ndcg = rec["metrics"].get("ndcg@10", {})
    for other, label in (("vs_base", "the base model"), ("vs_bm25", "BM25")):
        entry = ndcg.get(other)
        if entry:
            verdict = "significant" if entry.get("p_holm", 1.0) <= summary["alpha"] else "not significant"
            parts.append(f"{label} {entry['mean']:.4f} ({entry['difference']:+.4f}, {round(100 * (1 - summary['alpha']))}% "
                         f"CI {entry['ci_low']:+.4f} to "
                         f"{entry['ci_high']:+.4f}, p = {entry['p']:.4f}, {verdict} after Holm)")
    hit = rec["metrics"].get("hit_rate@5", {})
    hit_text = (f"; hit@5 {hit['mean']:.4f} against " + ", ".join(
        f"{label} {hit[o]['mean']:.4f}" for o, label in (("vs_base", "the base"), ("vs_bm25", "BM25")) if o in hit)
        if hit else "")
    where = f" at {rec['dim']} dims" if rec.get("dim") else ""
    return (f"Recommended: {q(rec['system'])}, chosen on {summary['dev']['dev_queries']} questions of held-out "
            f"training documents ({summary['dev']['reason']}). On the validation split it scores NDCG@10 "
            f"{ndcg.get('mean', float('nan')):.4f}{where} against " + ", ".join(parts) + hit_text + ".")


CANDIDATE_HEADER = ("system", "dev NDCG@10", "dev hit@5", "re-embeds corpus", "single index", "index size",
                    "query latency", "training (wall / CPU s, peak GB)", "fusion")


def candidate_rows(summary: dict[str, Any]) -> list[list[str]]:
    """The recommendation's candidates with their dev figures and costs, best first (for both reports)."""
    rows = []
    for row in summary.get("candidates") or []:
        training = row.get("training") or {}
        stages = [training] + [v for v in training.values() if isinstance(v, dict)]
        wall = sum(float(t.get("wall_seconds", 0) or 0) for t in stages)
        cpu = sum(float(t.get("cpu_seconds", 0) or 0) for t in stages)
        peaks = [float(t["peak_rss_gb"]) for t in stages if t.get("peak_rss_gb")]
        size = row.get("index_bytes")
        rows.append([row["name"], f"{row['ndcg@10']:.4f}", f"{row['hit_rate@5']:.4f}",
                     "yes" if row.get("reembed") else "no", "yes" if row.get("single_index") else "no",
                     f"{size / 1e6:.2f} MB" if size is not None else "-",
                     f"{row['query_ms']:.1f} ms" if row.get("query_ms") is not None else "-",
                     (f"{wall:.0f} / {cpu:.0f}" + (f", {max(peaks):.1f}" if peaks else "")) if wall else "none",
                     row.get("fusion", "")])
    return rows
