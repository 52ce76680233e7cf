"""Examples a reader can judge by eye: the queries a system improved and regressed most against the baseline.

For each system other than the baseline (the first), at the widest dimension both have, the
per-query difference on the primary metric (``ndcg@10``) is sorted; the :data:`PER_SIDE` largest
gains and the :data:`PER_SIDE` largest losses are listed (ties: dataset order; queries with no
change are never listed). Each example holds the question, a snippet of its relevant document(s),
and the top :data:`TOP` of the baseline and of the system with rank, score and whether each hit is
relevant. This is how a user sees whether the synthetic questions are any good and what tuning
changed.

The HTML section filters by system and by direction with radio buttons and CSS sibling selectors
only: the page stays one self-contained file with no script and no network.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

PER_SIDE = 5
TOP = 3
SNIPPET = 300
HIT_SNIPPET = 160


def _snippet(text: str, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"


def pick(diff: np.ndarray, n: int = PER_SIDE) -> tuple[list[int], list[int]]:
    """Rows of the ``n`` largest gains (most first) and ``n`` largest losses (most first); no zeros."""
    diff = np.asarray(diff, dtype=np.float64)
    order_up = np.argsort(-diff, kind="stable")
    order_down = np.argsort(diff, kind="stable")
    up = [int(i) for i in order_up if diff[i] > 0][:n]
    down = [int(i) for i in order_down if diff[i] < 0][:n]
    return up, down


def _top(result: Any, task: Any, row: int, relevant: set[int]) -> list[dict[str, Any]]:
    ranking = result.ranking
    out = []
    for rank in range(min(TOP, ranking.depth)):
        position = int(ranking.indices[row, rank])
        if position < 0:
            break
        group = int(task.groups[position]) if task.groups is not None else position
        score = None if ranking.scores is None else round(float(ranking.scores[row, rank]), 4)
        out.append({"rank": rank + 1, "id": task.corpus_ids[position], "score": score,
                    "relevant": group in relevant, "text": _snippet(task.corpus_texts[position], HIT_SNIPPET)})
    return out


def build_examples(evaluation: Any, *, metric: str = "ndcg@10", n: int = PER_SIDE) -> list[dict[str, Any]]:
    """JSON-ready examples: ``[{"system", "dim", "metric", "direction", "query_id", "question",
    "relevant": [snippet...], "difference", "top": {system: [{"rank", "id", "score", "relevant", "text"}]}}]``."""
    if len(evaluation.systems) < 2:
        return []
    task, baseline = evaluation.task, evaluation.systems[0]
    out = []
    for system in evaluation.systems[1:]:
        shared = sorted(set(system.dims) & set(baseline.dims), reverse=True)
        if not shared or metric not in system.dims[shared[0]].per_query:
            continue
        dim = shared[0]
        mine, theirs = system.dims[dim], baseline.dims[dim]
        diff = mine.per_query[metric] - theirs.per_query[metric]
        up, down = pick(diff, n)
        for direction, rows in (("improved", up), ("regressed", down)):
            for row in rows:
                relevant = {int(p) for p in task.relevant[row]}
                out.append({
                    "system": system.name, "dim": dim, "metric": metric, "direction": direction,
                    "query_id": task.query_ids[row], "question": task.query_texts[row],
                    "difference": round(float(diff[row]), 4),
                    "relevant": [_snippet(task.corpus_texts[p], SNIPPET) for p in sorted(relevant)][:2],
                    "top": {baseline.name: _top(theirs, task, row, relevant), system.name: _top(mine, task, row, relevant)},
                })
    return out


# --- rendering ---------------------------------------------------------------------------------------------
_CSS = """
.exfilter { margin: 0.3em 0; }
.exfilter label { margin-right: 1em; cursor: pointer; }
.ex { border: 1px solid #ddd; border-radius: 4px; padding: 0.5em 0.8em; margin: 0.6em 0; }
.ex .q { font-weight: 600; }
.ex .rel { color: #333; background: #f6f8f0; padding: 0.2em 0.4em; margin: 0.3em 0; }
.ex .tops { display: flex; gap: 1em; }
.ex .tops > div { flex: 1 1 0; min-width: 0; }
.ex ol { margin: 0.2em 0; padding-left: 1.4em; }
.ex li { margin: 0.15em 0; font-size: 0.88em; overflow-wrap: anywhere; }
.ex li.hit { background: #e6f4e6; }
.tag { font-size: 0.8em; padding: 0 0.4em; border-radius: 3px; background: #eee; }
.tag.improved { background: #dff0d8; } .tag.regressed { background: #f7dede; }
"""


def _score(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def html_section(examples: list[dict[str, Any]], baseline: str) -> str:
    """The examples as HTML, filterable without script (see the module docstring)."""
    if not examples:
        return ""
    systems = list(dict.fromkeys(e["system"] for e in examples))
    # Radios, labels and the examples are siblings inside one wrapper, so `#id:checked ~ .examples`
    # selectors reach the cards; the system and direction filters combine (both must match).
    controls = ["system: <input type='radio' name='exs' id='exs-all' checked><label for='exs-all'>all</label>"]
    rules = []
    for i, name in enumerate(systems):
        controls.append(f"<input type='radio' name='exs' id='exs-{i}'><label for='exs-{i}'>{html.escape(name)}</label>")
        rules.append(f"#exs-{i}:checked ~ .examples .ex:not(.s{i}) {{ display: none; }}")
    controls.append("<br>change: <input type='radio' name='exd' id='exd-all' checked><label for='exd-all'>all</label>"
                    "<input type='radio' name='exd' id='exd-up'><label for='exd-up'>improved</label>"
                    "<input type='radio' name='exd' id='exd-down'><label for='exd-down'>regressed</label>")
    rules += ["#exd-up:checked ~ .examples .ex:not(.improved) { display: none; }",
              "#exd-down:checked ~ .examples .ex:not(.regressed) { display: none; }"]
    cards = []
    for e in examples:
        index = systems.index(e["system"])
        tops = []
        for name in (baseline, e["system"]):
            items = "".join(
                f"<li class='{'hit' if hit['relevant'] else ''}'>#{hit['rank']} "
                f"<small>({_score(hit['score'])})</small> "
                f"{'✓ ' if hit['relevant'] else ''}{html.escape(hit['text'])}</li>" for hit in e["top"][name])
            tops.append(f"<div><b>{html.escape(name)}</b> top {TOP}<ol>{items}</ol></div>")
        relevant = "".join(f"<div class='rel'>relevant: {html.escape(r)}</div>" for r in e["relevant"])
        cards.append(
            f"<div class='ex s{index} {e['direction']}'><div><span class='tag {e['direction']}'>{e['direction']} "
            f"{e['difference']:+.3f} {html.escape(e['metric'])}</span> <code>{html.escape(e['system'])}</code> "
            f"at {e['dim']} dims, query <code>{html.escape(e['query_id'])}</code></div>"
            f"<div class='q'>{html.escape(e['question'])}</div>{relevant}<div class='tops'>{''.join(tops)}</div></div>")
    return (f"<style>{_CSS}{' '.join(rules)}</style><div class='exfilter'>{''.join(controls)}"
            f"<div class='examples'>{''.join(cards)}</div></div>")


def markdown_section(examples: list[dict[str, Any]], baseline: str, *, limit: int = 2) -> list[str]:
    """The ``limit`` biggest gains and losses per system, as Markdown lines (the HTML has them all)."""
    lines: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for e in examples:
        key = (e["system"], e["direction"])
        seen[key] = seen.get(key, 0) + 1
        if seen[key] > limit:
            continue
        lines.append(f"- **{e['system']}** {e['direction']} ({e['difference']:+.3f} {e['metric']}, {e['dim']} dims): "
                     f"“{e['question']}”")
        for name in (baseline, e["system"]):
            ranks = ", ".join(f"#{h['rank']}{' ✓' if h['relevant'] else ''}" for h in e["top"][name])
            lines.append(f"  - {name}: {ranks}")
    return lines
