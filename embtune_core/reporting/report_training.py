"""Training curves for the report: training loss and a validation metric, by step or epoch.

Two sources, both written by embtune's own trainers:

* a fine-tuning run's ``loss_log.jsonl`` (:data:`embtune_core.finetuning.training.LOSS_LOG`; one line per
  trainer log record: ``step``, ``loss`` and, at evaluation steps, ``eval_ndcg@10``...);
* a query adapter's ``adapter_config.json`` ``training.history`` (one entry per epoch: ``loss``
  and the held-out metrics the epoch was chosen on; epoch 0 is the untrained adapter).

A curve is JSON-ready: ``{"name", "x_label", "loss": [[x, y], ...], "metric_name", "metric": [[x, y], ...],
"note"}``; :func:`chart_training` draws it as a base64 PNG (matplotlib Agg, no display).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def from_loss_log(path: str | Path, *, name: str = "fine-tuning", metric: str = "ndcg@10") -> dict[str, Any] | None:
    """The curve of a fine-tuning run's ``loss_log.jsonl``; None when the file is missing or empty."""
    path = Path(path)
    if not path.is_file():
        return None
    loss, scores = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line torn by an interruption: the rest of the log still draws
        step = record.get("step")
        if step is None:
            continue
        if isinstance(record.get("loss"), (int, float)):
            loss.append([step, float(record["loss"])])
        value = record.get(f"eval_{metric}")
        if isinstance(value, (int, float)):
            scores.append([step, float(value)])
    if not loss and not scores:
        return None
    return {"name": name, "x_label": "step", "loss": loss, "metric_name": f"validation {metric}", "metric": scores,
            "note": "loss as the trainer logged it; the metric on the validation split at evaluation steps"}


def from_adapter_training(training: dict[str, Any], *, name: str = "query adapter") -> dict[str, Any] | None:
    """The curve of an adapter's ``training`` record (``adapter_config.json``); None without history."""
    history = training.get("history") or []
    metric = (training.get("config") or {}).get("selection_metric", "ndcg@10")
    if not history:
        return None
    loss = [[h["epoch"], float(h["loss"])] for h in history if isinstance(h.get("loss"), (int, float))]
    scores = [[h["epoch"], float(h[metric])] for h in history if isinstance(h.get(metric), (int, float))]
    return {"name": name, "x_label": "epoch", "loss": loss, "metric_name": f"held-out {metric}", "metric": scores,
            "note": f"epoch {training.get('best_epoch')} kept (best held-out {metric}; epoch 0 = untrained)"}


def chart_training(curve: dict[str, Any]) -> str:
    """Base64 PNG: loss (left) and the validation metric (right) against step or epoch."""
    from embtune_core.reporting.report_figures import png as _png
    from embtune_core.reporting.report_figures import pyplot as _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key, label in ((axes[0], "loss", "training loss"), (axes[1], "metric", curve.get("metric_name", ""))):
        points = curve.get(key) or []
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=3)
        ax.set_xlabel(curve.get("x_label", "step"))
        ax.set_title(label)
        ax.grid(alpha=0.3)
    figure.suptitle(f"{curve['name']}: {curve.get('note', '')}", fontsize=9)
    figure.tight_layout()
    encoded = _png(figure)
    plt.close(figure)
    return encoded
