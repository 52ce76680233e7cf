"""Evaluation reports: JSON (machine-readable, per query), a Markdown table, and a self-contained HTML page.

Input is an :class:`embtune_core.evaluation.Evaluation`. :func:`report_json` is the source of the
other two, so the three always agree. The HTML embeds its charts as base64 PNGs drawn with
matplotlib's Agg backend (no display, no network, no external files):

* each headline metric against the embedding dimension, one line per system, with 95% CIs;
* the distribution of the rank of the first relevant document, one bar group per system.

JSON layout (``report.json``)::

    {"format": "embtune-evaluation", "version": 1,
     "dataset": {"name", "queries", "evaluated_queries", "corpus"},
     "settings": {"similarity": "cosine", "tie_break": ..., "confidence", "seed", "cutoffs": {...}},
     "primary_metric": "ndcg@10",
     "systems": [{"name", "spec", "identity", "dimension", "dims": [..], "seconds": {..},
                  "results": {"<dim>": {"<metric>": {"mean", "ci_low", "ci_high",
                                                     "vs_baseline": null | {"difference", "ci_low",
                                                     "ci_high", "p_randomization", "t_statistic",
                                                     "p_ttest"}}}}}],
     "query_ids": [...],
     "per_query": {"<system>": {"<dim>": {"<metric>": [score per query], "first_relevant_rank": [...]}}}}

``first_relevant_rank`` is 1-based; 0 means no relevant document within the ranking depth.

Example::

    evaluation = evaluate_systems(systems, dataset, dims=[384, 128])
    write_reports(evaluation, "out/")          # out/report.json, out/report.md, out/report.html
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from embtune_core import atomic

REPORT_FORMAT = "embtune-evaluation"
REPORT_VERSION = 1
# Columns of the headline table, in order, when present.
HEADLINE_METRICS = ("ndcg@10", "mrr@10", "map@100", "accuracy@1", "recall@5", "recall@10")
CHART_METRICS = ("ndcg@10", "mrr@10", "recall@10")
SIGNIFICANCE_METRICS = ("ndcg@10", "mrr@10", "map@100", "recall@10")
RANK_BINS = ((1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, 100))


def report_json(evaluation) -> dict[str, Any]:
    """The whole evaluation as JSON-ready data (see the module docstring for the layout)."""
    task, settings = evaluation.task, evaluation.settings
    systems, per_query = [], {}
    for system in evaluation.systems:
        summary = evaluation.summary.get(system.name, {})
        systems.append({
            "name": system.name,
            "spec": system.spec,
            "identity": system.identity,
            "dimension": system.dimension,
            "dims": sorted(system.dims, reverse=True),
            "seconds": {k: round(v, 4) for k, v in system.seconds.items()},
            "token_limit": (system.truncation or {}).get("limit"),
            "truncation": system.truncation,
            "results": {str(dim): summary.get(dim, {}) for dim in sorted(system.dims, reverse=True)},
        })
        per_query[system.name] = {
            str(dim): {**{m: [round(float(v), 6) for v in values] for m, values in result.per_query.items()},
                       "first_relevant_rank": result.first_relevant_rank.tolist()}
            for dim, result in sorted(system.dims.items(), reverse=True)
        }
    depth = max((r.ranking.depth for s in evaluation.systems for r in s.dims.values()), default=0)
    return _finite({
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "dataset": {"name": evaluation.dataset_name, "evaluated_queries": len(task.query_ids),
                    "corpus": len(task.corpus_ids), "skipped_queries": task.skipped_queries,
                    "duplicate_corpus_texts": task.duplicate_texts,
                    "split": getattr(evaluation, "split", None)},
        "notes": list(evaluation.notes),
        "settings": {
            "similarity": "cosine (embeddings truncated to each dimension, then renormalised)",
            "tie_break": "equal scores rank by corpus position, earlier first",
            "ranking_depth": depth,
            "confidence": evaluation.confidence,
            "bootstrap_resamples": evaluation.n_resamples,
            "randomization_permutations": evaluation.n_permutations,
            "seed": evaluation.seed,
            "cutoffs": {"hit_rate_mrr": list(settings.hit_rate_at), "accuracy": list(settings.accuracy_at),
                        "precision_recall": list(settings.precision_recall_at), "mrr": list(settings.mrr_at),
                        "ndcg": list(settings.ndcg_at), "map": list(settings.map_at)},
        },
        "primary_metric": "ndcg@10",
        "systems": systems,
        "query_ids": list(task.query_ids),
        "per_query": per_query,
    })


def _finite(value: Any) -> Any:
    """NaN and infinities become null: strict JSON has no such numbers."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# --- Markdown --------------------------------------------------------------------------------------------
def _headline(data: dict[str, Any]) -> list[str]:
    names = _metric_names(data)
    hit_rate = [m for m in names if m.startswith(("hit_rate@", "mrr@")) and m not in HEADLINE_METRICS]
    return [m for m in HEADLINE_METRICS if m in names] + hit_rate


def _significance_metrics(data: dict[str, Any]) -> list[str]:
    names = _metric_names(data)
    return [m for m in SIGNIFICANCE_METRICS if m in names] + [m for m in names if m.startswith("hit_rate@")]


def _metric_names(data: dict[str, Any]) -> list[str]:
    for system in data["systems"]:
        for results in system["results"].values():
            return list(results)
    return []


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _p(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def _rows(data: dict[str, Any], metrics: list[str], *, with_ci: bool) -> list[list[str]]:
    rows = []
    for system in data["systems"]:
        for dim, results in system["results"].items():
            cells = [system["name"], dim]
            for metric in metrics:
                entry = results.get(metric)
                if entry is None:
                    cells.append("n/a")
                elif with_ci:
                    cells.append(f"{_fmt(entry['mean'])} [{_fmt(entry['ci_low'], 3)}, {_fmt(entry['ci_high'], 3)}]")
                else:
                    cells.append(_fmt(entry["mean"]))
            rows.append(cells)
    return rows


def _significance_rows(data: dict[str, Any], metrics: list[str]) -> list[list[str]]:
    rows = []
    for system in data["systems"][1:]:
        for dim, results in system["results"].items():
            for metric in metrics:
                comparison = (results.get(metric) or {}).get("vs_baseline")
                if comparison is None:
                    continue
                rows.append([system["name"], dim, metric, f"{comparison['difference']:+.4f}",
                             f"[{comparison['ci_low']:+.4f}, {comparison['ci_high']:+.4f}]",
                             _p(comparison["p_randomization"]), _p(comparison["p_ttest"])])
    return rows


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report_markdown(data: dict[str, Any]) -> str:
    """Markdown: headline metrics with CIs, significance against the first system, then every metric."""
    headline = _headline(data)
    conf = round(data["settings"]["confidence"] * 100)
    baseline = data["systems"][0]["name"] if data["systems"] else ""
    parts = [
        f"# Retrieval evaluation: {data['dataset']['name']}",
        "",
        (f"{data['dataset']['evaluated_queries']} queries, {data['dataset']['corpus']} corpus documents; "
        f"exact cosine search; {conf}% bootstrap confidence intervals over queries "
        f"({data['settings']['bootstrap_resamples']} resamples, seed {data['settings']['seed']})."),
        "",
        *_md_notes(data),
        "## Headline metrics",
        "",
        _md_table(["system", "dim", *headline], _rows(data, headline, with_ci=True)),
    ]
    significance = _significance_rows(data, _significance_metrics(data))
    if significance:
        parts += ["", f"## Against the baseline `{baseline}` (paired, same queries and dimension)", "",
                  _md_table(["system", "dim", "metric", "difference", f"{conf}% CI", "p (randomisation)",
                             "p (t-test)"], significance)]
    every = _metric_names(data)
    parts += ["", "## All metrics", "", _md_table(["system", "dim", *every], _rows(data, every, with_ci=False)),
              "", "## Systems", ""]
    parts += [f"- `{s['name']}`: {s['spec'] or s['identity']} ({s['dimension']} dims{_limit(s)})"
              for s in data["systems"]]
    return "\n".join(parts) + "\n"


def _limit(system: dict[str, Any]) -> str:
    from embtune_core.token_limits import describe

    line = describe(system.get("truncation"))
    return f"; token {line}" if line else ""


def _md_notes(data: dict[str, Any]) -> list[str]:
    notes = data.get("notes") or []
    return (["## Notes", "", *[f"- {n}" for n in notes], ""]) if notes else []


# --- charts and HTML -------------------------------------------------------------------------------------
def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # headless: never needs a display
    import matplotlib.pyplot as plt

    return plt


def chart_metric_vs_dimension(data: dict[str, Any]) -> str:
    """Base64 PNG: each chart metric against dimension, one line per system, CI error bars."""
    plt = _pyplot()
    names = _metric_names(data)
    metrics = [m for m in CHART_METRICS if m in names] + [m for m in names if m.startswith("hit_rate@")][:1]
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.4), squeeze=False)
    n_systems = len(data["systems"])
    for ax, metric in zip(axes[0], metrics):
        for i, system in enumerate(data["systems"]):
            dims = sorted(int(d) for d in system["results"])
            entries = [system["results"][str(d)][metric] for d in dims]
            means = [e["mean"] for e in entries]
            errors = [[m - e["ci_low"] for m, e in zip(means, entries)],
                      [e["ci_high"] - m for m, e in zip(means, entries)]]
            dodge = 1.0 + 0.025 * (i - (n_systems - 1) / 2)  # keep overlapping error bars apart
            ax.errorbar([d * dodge for d in dims], means, yerr=errors, marker="o", capsize=3, label=system["name"])
        all_dims = sorted({int(d) for s in data["systems"] for d in s["results"]})
        if len(all_dims) > 1 and all_dims[0] > 0 and all_dims[-1] / all_dims[0] >= 4:
            ax.set_xscale("log", base=2)
        ax.set_xticks(all_dims, [str(d) for d in all_dims])
        ax.set_xlabel("embedding dimension")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score (mean over queries)")
    axes[0][-1].legend(fontsize=8)
    figure.tight_layout()
    encoded = _png(figure)
    plt.close(figure)
    return encoded


def rank_histogram(ranks: list[int], depth: int) -> list[tuple[str, int]]:
    """Counts of first-relevant ranks in :data:`RANK_BINS` (cut at ``depth``), plus "not found"."""
    out = []
    for low, high in RANK_BINS:
        if low > depth:
            break
        high = min(high, depth)
        label = str(low) if low == high else f"{low}-{high}"
        out.append((label, sum(1 for r in ranks if low <= r <= high)))
    out.append((f">{depth}", sum(1 for r in ranks if r == 0)))
    return out


def chart_rank_distribution(data: dict[str, Any]) -> str:
    """Base64 PNG: share of queries by rank of the first relevant document, each system at its widest dim."""
    plt = _pyplot()
    depth = data["settings"]["ranking_depth"]
    figure, ax = plt.subplots(figsize=(9, 3.6))
    n_systems = max(1, len(data["systems"]))
    width = 0.8 / n_systems
    labels: list[str] = []
    for i, system in enumerate(data["systems"]):
        dim = str(max(int(d) for d in data["per_query"][system["name"]]))
        ranks = data["per_query"][system["name"]][dim]["first_relevant_rank"]
        histogram = rank_histogram(ranks, depth)
        labels = [label for label, _ in histogram]
        shares = [count / max(1, len(ranks)) for _, count in histogram]
        ax.bar([x + (i - (n_systems - 1) / 2) * width for x in range(len(histogram))], shares, width,
               label=f"{system['name']} ({dim}d)")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_xlabel("rank of the first relevant document")
    ax.set_ylabel("share of queries")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    encoded = _png(figure)
    plt.close(figure)
    return encoded


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>"


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
"""


def report_html(data: dict[str, Any]) -> str:
    """A self-contained HTML page: tables and both charts (base64 PNG), nothing fetched from elsewhere."""
    headline = _headline(data)
    every = _metric_names(data)
    conf = round(data["settings"]["confidence"] * 100)
    title = f"Retrieval evaluation: {data['dataset']['name']}"
    significance = _significance_rows(data, _significance_metrics(data))
    baseline = data["systems"][0]["name"] if data["systems"] else ""
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        (f"<p class='note'>{data['dataset']['evaluated_queries']} queries, {data['dataset']['corpus']} corpus "
        f"documents; exact cosine search; {conf}% bootstrap confidence intervals over queries.</p>"),
    ]
    if data.get("notes"):
        sections += ["<h2>Notes</h2><ul>", *[f"<li>{html.escape(n)}</li>" for n in data["notes"]], "</ul>"]
    sections += [
        "<h2>Headline metrics</h2>",
        _html_table(["system", "dim", *headline], _rows(data, headline, with_ci=True)),
    ]
    sections += [
        "<h2>Metric against embedding dimension</h2>",
        f"<img alt='metric against dimension' src='data:image/png;base64,{chart_metric_vs_dimension(data)}'>",
        "<h2>Rank of the first relevant document</h2>",
        f"<img alt='rank distribution' src='data:image/png;base64,{chart_rank_distribution(data)}'>",
    ]
    if significance:
        sections += [f"<h2>Against the baseline {html.escape(baseline)} (paired, same queries and dimension)</h2>",
                     _html_table(["system", "dim", "metric", "difference", f"{conf}% CI", "p (randomisation)",
                                  "p (t-test)"], significance)]
    sections += [
        "<h2>All metrics</h2>",
        _html_table(["system", "dim", *every], _rows(data, every, with_ci=False)),
        "<h2>Systems</h2><ul>",
        *[f"<li><code>{html.escape(s['name'])}</code>: {html.escape(s['spec'] or s['identity'])} "
          f"({s['dimension']} dims{html.escape(_limit(s))})</li>" for s in data["systems"]],
        "</ul>",
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def write_reports(evaluation, out_dir: str | Path, *, data: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out_dir``, each atomically.

    ``data``: :func:`report_json` of ``evaluation`` when the caller already has it.
    """
    out_dir = Path(out_dir)
    data = data if data is not None else report_json(evaluation)
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    markdown, page = report_markdown(data), report_html(data)  # render everything before writing anything
    atomic.write_json(paths["json"], data)
    atomic.write_text(paths["markdown"], markdown)
    atomic.write_text(paths["html"], page)
    return paths


COMPACT_METRICS = ("ndcg@10", "mrr@10", "hit_rate@5", "recall@10")


def report_compact(data: dict[str, Any], metrics: tuple[str, ...] = COMPACT_METRICS) -> str:
    """A terminal-sized before/after table: each system at each dimension, its change against the
    first system and the randomisation-test p-value of that change (on the first metric)."""
    header = ["system", "dim", *metrics, f"Δ {metrics[0]}", "p"]
    rows = []
    for system in data["systems"]:
        for dim, results in system["results"].items():
            cells = [system["name"], dim]
            cells += [_fmt(results.get(m, {}).get("mean"), 3) if m in results else "-" for m in metrics]
            versus = (results.get(metrics[0]) or {}).get("vs_baseline")
            cells += [f"{versus['difference']:+.3f}", _p(versus.get("p_randomization"))] if versus else ["", ""]
            rows.append(cells)
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in [header, *rows]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])
