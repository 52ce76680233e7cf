"""Checkpoints and logs of a training run: which checkpoint a run resumes from (a torn one is moved
aside, never used), the fingerprint that says whether a folder's checkpoints belong to these settings
and data, the trainer callbacks that write ``loss_log.jsonl`` and mark each checkpoint complete, and
the run's mean training loss."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

from embtune_core.runtime import atomic, interrupts

log = logging.getLogger("embtune_core.finetuning.training")

LOSS_LOG = "loss_log.jsonl"
COMPLETE = "embtune_complete.json"  # written into a checkpoint after the trainer has saved all of it


RUN_FINGERPRINT = "run_fingerprint.txt"  # in the checkpoint folder: which settings and data made it



def run_fingerprint(settings: Any) -> str:
    """A hash of every setting (``resume`` aside) and of the training and validation data's content:
    re-running the same command after an interruption resumes only when this is unchanged."""
    from embtune_core.runtime.rundir import inputs_hash, stable_hash

    # What only shapes the export (its token limit, keeping a worse model) or what follows it (the
    # recommendation) does not change training.
    values = {k: v for k, v in dataclasses.asdict(settings).items()
              if k not in ("resume", "export_max_seq_length", "keep_if_worse", "recommend")}
    paths = (settings.train, settings.val, *(settings.index_corpus or ()))
    data = inputs_hash([Path(p) for p in paths if p and Path(p).exists()])
    return stable_hash({"settings": values, "data": data})


def latest_checkpoint(folder: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` in ``folder``.

    A checkpoint counts only when :func:`checkpoint_problem` finds nothing wrong with it. A newer one
    that is torn (killed mid-save, disk full) is moved aside to ``.incomplete-checkpoint-N`` (never
    deleted) and the previous complete one is used, with one line saying so.
    """
    found = _numbered_checkpoints(folder)
    # Checkpoints written by this version carry the marker: once one does, one without it is torn.
    marked = any((child / COMPLETE).exists() for _, child in found)
    for _, child in sorted(found, reverse=True):
        problem = checkpoint_problem(child, require_marker=marked)
        if problem is None:
            return str(child)
        aside = child.with_name(f".incomplete-{child.name}-{int(time.time())}")
        os.replace(child, aside)
        log.warning("%s is incomplete (%s); moved aside to %s, resuming from an earlier checkpoint", child,
                    problem, aside.name)
    return None


def _numbered_checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """The ``checkpoint-N`` folders in ``folder`` as (N, path); none when ``folder`` is not a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [(int(match.group(1)), child) for child in folder.iterdir()
            if (match := re.fullmatch(r"checkpoint-(\d+)", child.name)) and child.is_dir()]


def finished(folder: str | Path) -> bool:
    """Whether the newest ``checkpoint-N`` in ``folder`` records the run's last step (its
    trainer_state.json has ``global_step >= max_steps``). Read-only: nothing is moved aside; an
    unreadable state counts as not finished."""
    found = _numbered_checkpoints(folder)
    if not found:
        return False
    try:
        state = json.loads((max(found)[1] / "trainer_state.json").read_text("utf-8"))
        return int(state["global_step"]) >= int(state["max_steps"]) > 0
    except (OSError, ValueError, KeyError, TypeError):
        return False


def checkpoint_problem(folder: Path, *, require_marker: bool = False) -> str | None:
    """Why a checkpoint folder cannot be resumed from, or None: trainer_state.json must parse, every
    safetensors file must be as long as its header says, every ``.pt``/``.pth`` must be a whole zip
    (torch's format), and embtune's completion marker must parse where present and be present with
    ``require_marker`` (checkpoints of older versions have none)."""
    import zipfile

    state = folder / "trainer_state.json"
    try:
        json.loads(state.read_text(encoding="utf-8"))["global_step"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"trainer_state.json: {type(exc).__name__}"
    for path in sorted(folder.rglob("*.safetensors")):
        problem = _safetensors_problem(path)
        if problem:
            return f"{path.relative_to(folder)}: {problem}"
    for path in sorted([*folder.glob("*.pt"), *folder.glob("*.pth")]):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.namelist()
        except (OSError, zipfile.BadZipFile) as exc:
            if _legacy_torch_file(path):
                continue  # torch.load reads the pre-1.6 (pickle, not zip) format too
            return f"{path.name}: {exc}"
    marker = folder / COMPLETE
    if require_marker and not marker.exists():
        return f"no {COMPLETE} (the save did not finish)"
    if marker.exists():
        try:
            json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return f"{COMPLETE}: torn"
    return None


def _legacy_torch_file(path: Path) -> bool:
    """torch's legacy serialization: a pickle (protocol 2+) that starts with torch's magic number."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return False
    return head[:1] == b"\x80" and len(head) > 16


def _safetensors_problem(path: Path) -> str | None:
    """The safetensors layout: 8-byte header length, JSON header, then the tensors' bytes."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            n = int.from_bytes(handle.read(8), "little")
            if n <= 0 or 8 + n > size:
                return "truncated header"
            header = json.loads(handle.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (OSError, ValueError, KeyError, TypeError, IndexError):
        return "unreadable header"
    return None if 8 + n + end == size else f"{size} bytes, header says {8 + n + end}"


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one line with one write on an O_APPEND descriptor: concurrent or torn writes never mix lines."""
    from embtune_core.runtime.secrets_scrub import scrub_known

    path.parent.mkdir(parents=True, exist_ok=True)
    line = scrub_known(json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")  # no secret reaches a file
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def trainer_callbacks(work_dir: Path, history: list[dict[str, Any]]):
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        """Every log record (loss, learning rate, evaluation metrics) as a line of loss_log.jsonl."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is None:
                return
            record = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
            if "train_loss" in logs and "train_runtime" in logs:
                # the trainer's figure covers this attempt's steps only: the run's mean, resumed or not
                record["train_loss"] = mean_train_loss(state.log_history, logs["train_loss"])
            history.append(record)
            if state.is_world_process_zero:
                _append_jsonl(work_dir / LOSS_LOG, record)

    class MarkComplete(TrainerCallback):
        """After the trainer has written a checkpoint, mark it complete (see checkpoint_problem), with the
        seconds spent training and evaluating up to it over every attempt (:func:`attempt_record`)."""

        def __init__(self) -> None:
            self.before = {"train_seconds": 0.0, "eval_seconds": 0.0}  # earlier attempts, up to the resumed step
            self.started: float | None = None
            self.eval_seconds = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.time()

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            self.eval_seconds += float((metrics or {}).get("eval_runtime", 0.0))

        def totals(self) -> dict[str, float]:
            """Seconds training and evaluating so far, this attempt and the earlier ones together."""
            now = time.time() - self.started if self.started is not None else 0.0
            return {"train_seconds": round(self.before["train_seconds"] + now, 3),
                    "eval_seconds": round(self.before["eval_seconds"] + self.eval_seconds, 3)}

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    atomic.write_json(folder / COMPLETE, {"global_step": state.global_step, **self.totals()})

    class RankReport(TrainerCallback):
        """Counts the optimisation steps each rank takes, so a DDP run shows every rank trained."""

        def __init__(self) -> None:
            self.steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1
            interrupts.check()  # a Ctrl-C/SIGTERM lost inside a __del__ still stops the run here

    return LossLog(), RankReport(), MarkComplete()


def attempt_record(checkpoint: str | None) -> dict[str, float]:
    """What the attempts before a resume spent, from the checkpoint resumed from: ``global_step``,
    ``train_seconds`` and ``eval_seconds`` (0 without a checkpoint, or for one written by an older
    embtune, which recorded no time)."""
    record = {"global_step": 0, "train_seconds": 0.0, "eval_seconds": 0.0}
    if checkpoint is None:
        return record
    try:
        saved = json.loads((Path(checkpoint) / COMPLETE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    try:
        state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
        record["global_step"] = int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    for key in ("train_seconds", "eval_seconds"):
        if isinstance(saved.get(key), (int, float)):
            record[key] = float(saved[key])
    return record


def trim_loss_log(path: Path, step: int, *, keep_step_zero: bool = True) -> int:
    """Keep the lines of ``loss_log.jsonl`` up to ``step`` (the checkpoint a resumed run continues from;
    0 for a fresh start), so a killed attempt's later lines are not repeated by the resumed one, and the
    record equals an uninterrupted run's. ``keep_step_zero=False`` also drops the base model's evaluation
    (it is evaluated, and logged, again). Torn lines go too; returns how many lines were dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
            keep = isinstance(record, dict) and int(record.get("step", -1)) <= step and (
                keep_step_zero or int(record["step"]) > 0)
        except (ValueError, TypeError):
            keep = False
        if keep:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        atomic.write_text(path, "".join(f"{line}\n" for line in kept))
        log.info("%s: %d lines of an interrupted attempt after step %d dropped (the resumed run logs them again)",
                 path, dropped, step)
    return dropped


def card_training_logs(log_history: list[dict[str, Any]], current: list[dict[str, Any]], step: int,
                       primary_metric: str | None, baseline: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """The model card's training-log rows of a resumed run: those of the earlier attempts, rebuilt from the
    trainer's restored ``log_history`` (up to ``step``) as sentence-transformers' card callback makes them,
    then ``current`` (the rows this attempt's callback made, after ``step``). The base model's evaluation
    (step 0) runs before the trainer's state exists, so its row comes from ``baseline``."""
    rows: dict[int, dict[str, Any]] = {}
    if baseline and primary_metric and primary_metric in baseline:
        rows[0] = {"Epoch": 0, "Step": 0, primary_metric: baseline[primary_metric]}
    for record in log_history:
        at = record.get("step")
        if not isinstance(at, int) or at > step:
            continue
        row = rows.setdefault(at, {"Epoch": record.get("epoch"), "Step": at})
        if "eval_loss" in record:
            row["Validation Loss"] = record["eval_loss"]
        if primary_metric and f"eval_{primary_metric}" in record:
            row[primary_metric] = record[f"eval_{primary_metric}"]
        if "loss" in record:
            row["Training Loss"] = record["loss"]
    return [rows[k] for k in sorted(rows)] + [r for r in current if r.get("Step", 0) > step]


def quiet_progress_callback():
    """transformers' progress bar without the log dicts it writes under the bar."""
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    return QuietProgress()


def mean_train_loss(log_history: list[dict[str, Any]], fallback: float) -> float:
    """Mean training loss over every step of the run, resumed or not: the logged window losses (kept in
    each checkpoint's trainer_state.json) weighted by window length. The trainer's own figure covers
    only the steps of the last process (0.0 when a resumed run had nothing left to train)."""
    total = weight = 0.0
    last = 0
    for record in log_history:
        if "loss" in record and "step" in record:
            steps = int(record["step"]) - last
            if steps > 0:
                total += float(record["loss"]) * steps
                weight += steps
            last = int(record["step"])
    return total / weight if weight else float(fallback)

