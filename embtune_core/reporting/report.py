"""Evaluation reports: JSON (machine-readable, per query), a Markdown table, and a self-contained HTML page.

Input is an :class:`embtune_core.scoring.evaluation.Evaluation`. :func:`report_json` is the source of the
other two, so the three always agree. Both human-readable reports open with the answer, then the
evidence, then examples:

1. the verdict and the context (:mod:`embtune_core.reporting.report_verdict`: best system, by how much, whether
   significant after Holm–Bonferroni correction, at which dimensions; dataset, corpus searched,
   models, token limits, training, date, version);
2. the headline table, each metric once (metrics equal on this data are named together, with why),
   charts, the paired comparisons with corrected p-values;
3. the queries each system improved and regressed most (:mod:`embtune_core.reporting.report_examples`) and,
   when training is part of the report, its curves (:mod:`embtune_core.reporting.report_training`).

The HTML embeds its charts as base64 PNGs drawn with matplotlib's Agg backend (no display, no
network, no script, no external files):

* each headline metric against the embedding dimension, one line per system, with 95% CIs;
* the distribution of the rank of the first relevant document, one bar group per system.

JSON layout (``report.json``)::

    {"format": "embtune-evaluation", "version": 1, "embtune_version": "0.1.0",
     "dataset": {"name", "queries", "evaluated_queries", "corpus", "corpus_searched", "relevant_per_query"},
     "context": {label: value}, "examples": [...], "training": [...],
     "settings": {"similarity": "cosine", "scoring": "sentence-transformers" | "pytrec_eval", "tie_break": ...,
                  "confidence", "seed", "cutoffs": {...}},
     "primary_metric": "ndcg@10",
     "systems": [{"name", "spec", "identity", "backend", "dimension", "dims": [..], "seconds": {..},
                  "results": {"<dim>": {"<metric>": {"mean", "ci_low", "ci_high",
                                                     "vs_baseline": null | {"difference", "ci_low",
                                                     "ci_high", "p_randomization", "t_statistic",
                                                     "p_ttest"}}}}}],
     "query_ids": [...],
     "per_query": {"<system>": {"<dim>": {"<metric>": [score per query], "first_relevant_rank": [...]}}}}

``first_relevant_rank`` is 1-based; 0 means no relevant document within the ranking depth.
``backend`` is how a local sentence-transformers model ran, read from its identity (:func:`backend_of`):
``{"runtime": "torch", "precision": "fp32"}`` or ``{"runtime": "onnx", "file": "onnx/model_qint8_avx512_vnni.onnx",
"quantization": "int8"}``; null for other systems (BM25, API models). Each system's line names it.

Example::

    evaluation = evaluate_systems(systems, dataset, dims=[384, 128])
    write_reports(evaluation, "out/")          # out/report.json, out/report.md, out/report.html
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from embtune_core.reporting.report_backend import backend_of, backend_text
from embtune_core.reporting.report_figures import png as _png
from embtune_core.reporting.report_figures import pyplot as _pyplot
from embtune_core.runtime import atomic
from embtune_core.runtime.secrets_scrub import scrub

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
            "spec": scrub(system.spec),
            "identity": scrub(system.identity),
            "backend": backend_of(getattr(system, "encoder_identity", None) or system.identity),
            "dimension": system.dimension,
            "dims": sorted(system.dims, reverse=True),
            "seconds": {k: round(v, 4) for k, v in system.seconds.items()},
            "token_limit": (system.truncation or {}).get("limit"),
            "details": list(getattr(system, "details", []) or []),
            "truncation": system.truncation,
            "results": {str(dim): summary.get(dim, {}) for dim in sorted(system.dims, reverse=True)},
        })
        per_query[system.name] = {
            str(dim): {**{m: [round(float(v), 6) for v in values] for m, values in result.per_query.items()},
                       "first_relevant_rank": result.first_relevant_rank.tolist()}
            for dim, result in sorted(system.dims.items(), reverse=True)
        }
    depth = max((r.ranking.depth for s in evaluation.systems for r in s.dims.values()), default=0)
    from embtune_core import __version__
    from embtune_core.reporting.report_examples import build_examples

    n_relevant = task.n_relevant
    return _finite({
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "embtune_version": __version__,
        "dataset": {"name": evaluation.dataset_name, "evaluated_queries": len(task.query_ids),
                    "corpus": len(task.corpus_ids), "skipped_queries": task.skipped_queries,
                    "duplicate_corpus_texts": task.duplicate_texts,
                    "split": getattr(evaluation, "split", None),
                    "corpus_searched": task.corpus_label, "extra_corpus": task.extra_corpus,
                    "relevant_per_query": {"min": int(n_relevant.min()), "max": int(n_relevant.max()),
                                           "mean": round(float(n_relevant.mean()), 4)}},
        "context": {str(k): v for k, v in (getattr(evaluation, "context", None) or {}).items()},
        "notes": list(evaluation.notes),
        "settings": {
            "similarity": "cosine (embeddings truncated to each dimension, then renormalised)",
            "scoring": task.scoring,
            "tie_break": ("equal scores rank by document id, descending (trec_eval)" if task.graded
                          else "equal scores rank by corpus position, earlier first"),
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
        "examples": build_examples(evaluation),
        "training": list(getattr(evaluation, "training", None) or []),
        "recommendation": getattr(evaluation, "recommendation", None),
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
    return _once([m for m in HEADLINE_METRICS if m in names] + hit_rate, data)


def _once(metrics: list[str], data: dict[str, Any]) -> list[str]:
    """``metrics`` without those equal, query by query, to one listed earlier (see report_verdict)."""
    from embtune_core.reporting.report_verdict import equal_metric_groups

    groups = equal_metric_groups(data)
    kept: list[str] = []
    for metric in metrics:
        group = next((g for g in groups if metric in g), [metric])
        if not any(m in kept for m in group):
            kept.append(metric)
    return kept


def _equal_lines(data: dict[str, Any]) -> list[str]:
    """One line per reason: the groups of metrics equal on every query, and which one is shown."""
    from embtune_core.reporting.report_verdict import equal_metric_groups, equal_metrics_reason

    shown = set(_every_once(data))
    by_reason: dict[str, list[str]] = {}
    for group in equal_metric_groups(data):
        kept = next((m for m in group if m in shown), group[0])
        by_reason.setdefault(equal_metrics_reason(group, data), []).append(
            f"{' = '.join(group)} (shown as {kept})")
    return [f"{'; '.join(groups)}: equal on every query for every system and dimension, because {reason}"
            for reason, groups in by_reason.items()]


def _every_once(data: dict[str, Any]) -> list[str]:
    """Every metric, each group of equal ones once (the headline's choice first)."""
    names = _metric_names(data)
    return _once([m for m in _headline_order(names) if m in names], data)


def _headline_order(names: list[str]) -> list[str]:
    return [m for m in HEADLINE_METRICS if m in names] + [m for m in names if m not in HEADLINE_METRICS]


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
    """Each comparison with the baseline, its randomisation p and its Holm-adjusted p over the table's
    rows (every test shown is one of the family; the verdict corrects over its own metric only)."""
    from embtune_core.reporting.report_verdict import holm

    found = []
    for system in data["systems"][1:]:
        for dim, results in system["results"].items():
            for metric in metrics:
                comparison = (results.get(metric) or {}).get("vs_baseline")
                if comparison is None:
                    continue
                found.append((system["name"], dim, metric, comparison))
    adjusted = holm([c["p_randomization"] if c["p_randomization"] is not None else 1.0 for *_, c in found])
    return [[name, dim, metric, f"{c['difference']:+.4f}", f"[{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]",
             _p(c["p_randomization"]), _p(p_holm)] for (name, dim, metric, c), p_holm in zip(found, adjusted)]


SIGNIFICANCE_HEADER = ("system", "dim", "metric", "difference", "{conf}% CI", "p (randomisation)",
                       "p (Holm over this table)")


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _md_candidates(data: dict[str, Any]) -> list[str]:
    """The recommendation's candidates (dev figures and costs), when the run recommended one."""
    from embtune_core.reporting.report_verdict import CANDIDATE_HEADER, candidate_rows

    summary = data.get("recommendation")
    if not summary:
        return []
    return ["## Candidates (held-out training documents: what chose the recommendation)", "",
            _md_table(list(CANDIDATE_HEADER), candidate_rows(summary)), ""]


def report_markdown(data: dict[str, Any]) -> str:
    """Markdown: headline metrics with CIs, significance against the first system, then every metric."""
    headline = _headline(data)
    conf = round(data["settings"]["confidence"] * 100)
    baseline = data["systems"][0]["name"] if data["systems"] else ""
    from embtune_core.reporting.report_verdict import context_rows, verdict

    parts = [
        f"# Retrieval evaluation: {data['dataset']['name']}",
        "",
        "## Verdict",
        "",
        *[f"- {line}" for line in verdict(data)],
        "",
        "## Context",
        "",
        *[f"- **{label}**: {value}" for label, value in context_rows(data)],
        "",
        (f"{data['dataset']['evaluated_queries']} queries, {data['dataset']['corpus']} corpus documents; "
        f"exact cosine search; {conf}% bootstrap confidence intervals over queries "
        f"({data['settings']['bootstrap_resamples']} resamples, seed {data['settings']['seed']})."),
        "",
        *_md_notes(data),
        *_md_candidates(data),
        "## Headline metrics",
        "",
        _md_table(["system", "dim", *headline], _rows(data, headline, with_ci=True)),
    ]
    parts += ["", *[f"Equal metrics: {line}." for line in _equal_lines(data)]]
    significance = _significance_rows(data, _significance_metrics(data))
    if significance:
        parts += ["", f"## Against the baseline `{baseline}` (paired, same queries and dimension)", "",
                  _md_table([h.format(conf=conf) for h in SIGNIFICANCE_HEADER], significance)]
    if data.get("examples"):
        from embtune_core.reporting.report_examples import markdown_section

        parts += ["", f"## Examples: biggest gains and losses against `{baseline}`", "",
                  *markdown_section(data["examples"], baseline), "", "(report.html lists more, with texts and scores.)"]
    every = _every_once(data)
    parts += ["", "## All metrics", "", _md_table(["system", "dim", *every], _rows(data, every, with_ci=False)),
              "", "## Systems", ""]
    parts += [f"- `{s['name']}`: {s['spec'] or s['identity']} ({s['dimension']} dims{_backend(s)}{_limit(s)})"
              for s in data["systems"]]
    return "\n".join(parts) + "\n"


def _backend(system: dict[str, Any]) -> str:
    text = backend_text(system)
    return f"; {text}" if text else ""


def _limit(system: dict[str, Any]) -> str:
    from embtune_core.encoders.token_limits import describe

    line = describe(system.get("truncation"))
    return f"; token {line}" if line else ""


def _md_notes(data: dict[str, Any]) -> list[str]:
    notes = data.get("notes") or []
    return (["## Notes", "", *[f"- {n}" for n in notes], ""]) if notes else []


# --- charts and HTML -------------------------------------------------------------------------------------
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


def _headline_html(data: dict[str, Any], metrics: list[str]) -> str:
    """The headline table with each CI on a second, smaller line: narrow enough for 1400 px without
    scrolling (one column per metric, each at most about nine characters wide)."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ["system", "dim", *metrics])
    body = []
    for system in data["systems"]:
        for dim, results in system["results"].items():
            cells = [f"<td>{html.escape(system['name'])}</td>", f"<td>{html.escape(dim)}</td>"]
            for metric in metrics:
                entry = results.get(metric)
                cells.append("<td>n/a</td>" if entry is None else
                             f"<td>{_fmt(entry['mean'])}<br><small>{_fmt(entry['ci_low'], 3)}–"
                             f"{_fmt(entry['ci_high'], 3)}</small></td>")
            body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table class='headline'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em; color: #222;
       max-width: 1300px; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
thead { background: #f3f3f3; }
table.headline td small { color: #666; }
table.context td, table.context th { white-space: normal; text-align: left; vertical-align: top; }
img { max-width: 100%; border: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; }
.scroll { overflow-x: auto; }
.verdict { border-left: 4px solid #2a7; background: #f4fbf6; padding: 0.6em 1em; }
.verdict li { margin: 0.25em 0; }
"""


def _code_names(line: str) -> str:
    """HTML-escape a verdict line and show its `names` as code."""
    parts = html.escape(line).split("`")
    return "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))


def report_html(data: dict[str, Any]) -> str:
    """A self-contained HTML page: verdict and context first, then tables, charts (base64 PNG) and
    examples; nothing fetched from elsewhere, no script."""
    from embtune_core.reporting.report_examples import html_section
    from embtune_core.reporting.report_training import chart_training
    from embtune_core.reporting.report_verdict import context_rows, verdict

    headline = _headline(data)
    every = _every_once(data)
    conf = round(data["settings"]["confidence"] * 100)
    title = f"Retrieval evaluation: {data['dataset']['name']}"
    significance = _significance_rows(data, _significance_metrics(data))
    baseline = data["systems"][0]["name"] if data["systems"] else ""
    context = "".join(f"<tr><th>{html.escape(label)}</th><td>{html.escape(value)}</td></tr>"
                      for label, value in context_rows(data))
    sections = [
        f"<h1>{html.escape(title)}</h1>",
        "<h2>Verdict</h2><div class='verdict'><ul>",
        *[f"<li>{_code_names(line)}</li>" for line in verdict(data)],
        "</ul></div>",
        f"<h2>Context</h2><table class='context'><tbody>{context}</tbody></table>",
        (f"<p class='note'>{data['dataset']['evaluated_queries']} queries, {data['dataset']['corpus']} corpus "
        f"documents; exact search (cosine for embeddings); {conf}% bootstrap confidence intervals over queries "
        "(the small second line of each cell).</p>"),
    ]
    if data.get("notes"):
        sections += ["<h2>Notes</h2><ul>", *[f"<li>{html.escape(n)}</li>" for n in data["notes"]], "</ul>"]
    if data.get("recommendation"):
        from embtune_core.reporting.report_verdict import CANDIDATE_HEADER, candidate_rows

        sections += ["<h2>Candidates (held-out training documents: what chose the recommendation)</h2>",
                     _html_table(list(CANDIDATE_HEADER), candidate_rows(data["recommendation"]))]
    sections += ["<h2>Headline metrics</h2>", _headline_html(data, headline)]
    sections += [f"<p class='note'>Equal metrics: {html.escape(line)}.</p>" for line in _equal_lines(data)]
    sections += [
        "<h2>Metric against embedding dimension</h2>",
        f"<img alt='metric against dimension' src='data:image/png;base64,{chart_metric_vs_dimension(data)}'>",
        "<h2>Rank of the first relevant document</h2>",
        f"<img alt='rank distribution' src='data:image/png;base64,{chart_rank_distribution(data)}'>",
    ]
    if significance:
        sections += [(f"<h2>Against the baseline <code>{html.escape(baseline)}</code> (paired, same queries and "
                     "dimension)</h2>"),
                     ("<p class='note'>p (randomisation): paired sign-flip randomisation test; p (Holm): adjusted "
                     "by Holm–Bonferroni over every row of this table. The verdict corrects over the comparisons "
                     f"on {html.escape(data.get('primary_metric', 'ndcg@10'))} only.</p>"),
                     _html_table([h.format(conf=conf) for h in SIGNIFICANCE_HEADER], significance)]
    if data.get("examples"):
        sections += [f"<h2>Examples: biggest gains and losses against <code>{html.escape(baseline)}</code></h2>",
                     ("<p class='note'>Per system, the queries whose primary metric changed most against the "
                     "baseline at the widest shared dimension; ✓ and green mark relevant documents.</p>"),
                     html_section(data["examples"], baseline)]
    for curve in data.get("training") or []:
        sections += [f"<h2>Training: {html.escape(curve['name'])}</h2>",
                     f"<img alt='training curve' src='data:image/png;base64,{chart_training(curve)}'>"]
    sections += [
        "<h2>All metrics</h2>",
        _html_table(["system", "dim", *every], _rows(data, every, with_ci=False)),
        "<h2>Systems</h2><ul>",
        *[f"<li><code>{html.escape(s['name'])}</code>: {html.escape(s['spec'] or s['identity'])} "
          f"({s['dimension']} dims{html.escape(_backend(s) + _limit(s))})</li>" for s in data["systems"]],
        "</ul>",
    ]
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def write_reports(evaluation, out_dir: str | Path, *, data: dict[str, Any] | None = None) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` and ``report.html`` into ``out_dir``, each atomically.

    ``data``: :func:`report_json` of ``evaluation`` when the caller already has it.
    """
    from embtune_core.runtime.secrets_scrub import scrub_tree

    out_dir = Path(out_dir)
    # a report quotes configs, URLs and server replies: every secret pattern goes, not just known values
    data = scrub_tree(data if data is not None else report_json(evaluation))
    paths = {"json": out_dir / "report.json", "markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    markdown, page = scrub(report_markdown(data)), scrub(report_html(data))  # all rendered before anything is written
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
