"""The bridge between embtune's evaluation and sentence-transformers' trainer: the evaluator the
trainer calls during training (:func:`build_evaluator`, primary metric NDCG@10, headline keys
``hit@5``, ``mrr@10``, ``ndcg@10``), and the metrics before and after training read from it."""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from embtune_core.runtime import atomic

log = logging.getLogger("embtune_core.finetuning.training")

BASELINE = "metrics_before.json"
# The metrics the model card and the summary lead with: key -> suffixes evaluators use for it.
HEADLINE_METRICS = {
    "hit@5": ("hit@5", "hit_rate@5", "accuracy@5"),
    "mrr@10": ("mrr@10",),
    "ndcg@10": ("ndcg@10",),
}



def build_evaluator(dataset, *, name: str = "val", matryoshka_dims=None, batch_size: int = 32):
    """Our training evaluator (primary metric NDCG@10), exposing the score as ``ndcg@10``."""
    from embtune_core.scoring.evaluation import training_evaluator

    inner = training_evaluator(dataset, name=name, matryoshka_dims=matryoshka_dims, batch_size=batch_size)
    return _HeadlineEvaluator(inner)


def _headline_evaluator_class():
    from embtune_core.scoring.evaluation import sentence_evaluator_base

    class HeadlineEvaluator(sentence_evaluator_base()):
        """Runs an evaluator and adds ``hit@5``, ``mrr@10`` and ``ndcg@10`` (the primary metric)."""

        def __init__(self, inner) -> None:
            super().__init__()
            self.inner = inner
            self.primary_metric = "ndcg@10"

        def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            metrics = self.inner(model, output_path=output_path, epoch=epoch, steps=steps)
            if not isinstance(metrics, dict):
                metrics = {"ndcg@10": float(metrics)}
            metrics = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
            primary = getattr(self.inner, "primary_metric", None)
            metrics.update(headline(metrics, primary=primary))
            return metrics

    return HeadlineEvaluator


def _HeadlineEvaluator(inner):
    return _headline_evaluator_class()(inner)


def headline(metrics: dict[str, float], primary: str | None = None) -> dict[str, float]:
    """hit@5, mrr@10 and ndcg@10 picked from an evaluator's metrics, whatever its key prefixes."""
    out: dict[str, float] = {}
    for key, suffixes in HEADLINE_METRICS.items():
        if key == "ndcg@10" and primary and primary in metrics and primary.endswith("ndcg@10"):
            out[key] = metrics[primary]
            continue
        # the shortest matching key is the full-width one (Matryoshka keys add a dimension)
        matches = sorted(
            (len(name), name)
            for name in metrics
            if any(
                name.removeprefix("eval_").endswith("_" + s) or name.removeprefix("eval_") == s
                for s in (key, *suffixes)
            )
        )
        if matches:
            out[key] = metrics[matches[0][1]]
    return out


def evaluate_now(trainer) -> dict[str, float]:
    return metric_values(trainer.evaluate())


def metrics_after_training(trainer, history: list[dict[str, Any]]) -> dict[str, float]:
    """Metrics of the model the trainer ended with (the best checkpoint, reloaded at the end).

    The evaluation logged at the best checkpoint's step already measured exactly these weights, so
    it is reused instead of paying for one more pass over the validation set (minutes on a CPU).
    Every rank sees the same log, so all ranks decide alike and none waits in a lone evaluation.
    """
    step = getattr(trainer.state, "best_global_step", None)
    if trainer.state.best_model_checkpoint and step:
        logged = [r for r in history if r.get("step") == step and "eval_ndcg@10" in r]
        if logged:
            return metric_values(logged[-1])
    return evaluate_now(trainer)


def metric_values(logs: dict[str, Any]) -> dict[str, float]:
    return {
        k.removeprefix("eval_"): v
        for k, v in logs.items()
        if k.startswith("eval_") and isinstance(v, (int, float))
        and not k.endswith(("_runtime", "_per_second", "epoch", "model_preparation_time"))
    }


def saved_baseline(work_dir: Path, settings: Any) -> dict[str, float] | None:
    """The base model's metrics an earlier attempt of this run saved, or None (none, other settings, or a
    damaged file: named in one line, and the base model is evaluated again)."""
    path = work_dir / BASELINE
    identity = {"model": settings.model, "val": settings.val, "max_seq_length": settings.max_seq_length}
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
        if {k: saved.get(k) for k in identity} == identity and isinstance(saved["metrics"], dict):
            return saved["metrics"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("%s is damaged (%s); the base model is evaluated again", path, type(exc).__name__)
    return None


def baseline_metrics(trainer, work_dir: Path, settings: Any, rank: int) -> dict[str, float]:
    """Metrics of the untrained model, computed once per run (a resumed run reuses them).

    Every rank decides alike: rank 0 writes the file only after an evaluation all ranks take part in.
    """
    saved = saved_baseline(work_dir, settings)
    if saved is not None:
        return saved
    path = work_dir / BASELINE
    identity = {"model": settings.model, "val": settings.val, "max_seq_length": settings.max_seq_length}
    with preserved_random_state():  # evaluated on some runs only: it must not shift what training draws
        metrics = evaluate_now(trainer)
    if rank == 0:
        atomic.write_json(path, {**identity, "metrics": metrics})
    return metrics


@contextlib.contextmanager
def preserved_random_state():
    """Run the block, then put Python's, NumPy's and torch's (CPU and CUDA) random states back.

    Work that runs only on some paths (the baseline evaluation runs unless a resumed run finds its
    file) must not change what the rest of the run computes: same seed, same weights, bit for bit.
    """
    import random

    import numpy as np
    import torch

    states = (random.getstate(), np.random.get_state(), torch.get_rng_state(),
              torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if states[3] is not None:
            torch.cuda.set_rng_state_all(states[3])

