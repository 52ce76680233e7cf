"""Full and partial fine-tuning of a sentence-transformers model with a pluggable loss strategy.

Inputs: a training QA dataset (and optionally a validation one), a model name, a loss strategy
name from the ``loss_strategies`` family and hyper-parameters (:class:`TrainSettings`). It trains
through sentence-transformers' ``SentenceTransformerTrainer``: no-duplicates batches for losses
with in-batch negatives, evaluation on the validation set every ``save_steps`` steps with the best
checkpoint by NDCG@10 kept and loaded at the end, checkpoints that ``resume=True`` continues from,
seeds, bf16/fp16 on a GPU, a progress bar and a JSONL loss log. It writes a standard
sentence-transformers model directory, atomically, with a model card (README.md) stating base
model, data sizes, loss, hyper-parameters and metrics before and after.

The same code runs under ``torchrun`` / ``accelerate launch`` (DDP): every rank trains on its
share of each batch, only rank 0 writes checkpoints, logs and the model.

Usage::

    from embtune_core.training import TrainSettings, train

    result = train(TrainSettings(train="train_dataset.json", val="val_dataset.json",
                                 model="sentence-transformers/all-MiniLM-L6-v2", loss="mnrl",
                                 epochs=2, batch_size=16, out="models/minilm-10k"))
    print(result["metrics_before"]["ndcg@10"], "->", result["metrics_after"]["ndcg@10"])
    # SentenceTransformer("models/minilm-10k") loads it; DocsGPT: EMBEDDINGS_NAME=models/minilm-10k
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from embtune_core import atomic, interrupts
from embtune_core.errors import ConfigError
from embtune_core.models import DEFAULT_MODEL
from embtune_core.settings import check_types, field_names, from_table, refuse_unknown, wanted

log = logging.getLogger(__name__)

LOSS_LOG = "loss_log.jsonl"
BASELINE = "metrics_before.json"
SUMMARY = "embtune_train.json"  # written into the model directory next to README.md
# The metrics the model card and the summary lead with: key -> suffixes evaluators use for it.
HEADLINE_METRICS = {
    "hit@5": ("hit@5", "hit_rate@5", "accuracy@5"),
    "mrr@10": ("mrr@10",),
    "ndcg@10": ("ndcg@10",),
}


@dataclass
class TrainSettings:
    """Everything one training run depends on; the ``[train]`` table of a config file holds the same keys."""

    TABLE: ClassVar[str] = "train"
    train: str
    out: str
    val: str | None = None
    model: str = DEFAULT_MODEL
    loss: str = "mnrl"
    loss_options: dict[str, Any] = field(default_factory=dict)
    matryoshka_dims: list[int] | None = None
    # Defaults that won on the shared Lyft -> Uber split (bench/train_10k.py): 3 epochs, batch 64, lr 5e-5.
    # The batch sampler caps a batch at the distinct texts available (embtune_core.sampler).
    epochs: float = wanted("a positive number", 3.0)
    batch_size: int = wanted("a positive integer", 64)
    lr: float = wanted("a positive number", 5e-5)
    warmup_ratio: float = wanted("a number in [0, 1)", 0.1)
    weight_decay: float = 0.01
    seed: int = 42
    max_steps: int = -1  # > 0 overrides epochs
    save_steps: int | None = None  # default: once per epoch
    save_total_limit: int = wanted("a positive integer", 2)
    logging_steps: int = wanted("a positive integer", 10)
    resume: bool = False
    train_last_layers: int | None = None  # partial fine-tuning; None trains every layer
    freeze_layers: int | None = None  # the other way to say it: freeze the embeddings and the first N layers
    max_seq_length: int | None = None  # tokens read in training; the export keeps the model's own (below)
    export_max_seq_length: int | None = None  # default: the larger of the model's own and max_seq_length
    keep_if_worse: bool = False  # export the trained model even when it scores below the base on --val
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    checkpoint_dir: str | None = None  # default: <out>.checkpoints next to the output
    eval_batch_size: int = wanted("a positive integer", 32)
    split: str = "train"  # qrels split read when ``train`` is a BEIR folder (never test by default)
    val_split: str = "dev"  # qrels split read when ``val`` is a BEIR folder

    @classmethod
    def from_mapping(cls, values: dict[str, Any], path: Any = "<config>") -> TrainSettings:
        """Settings from a ``[train]`` table (or any dict), refusing unknown keys and wrong types."""
        refuse_unknown(values, field_names(cls), path=path, table="train")
        for required in ("train", "out"):
            if values.get(required) in (None, ""):
                raise ConfigError("missing; give it in [train] or on the command line", path=path,
                                  field=f"train.{required}")
        return from_table(cls, values, path=path, table="train")

    def validate(self, path: Any = "<config>") -> None:
        def bad(name: str, problem: str) -> ConfigError:
            return ConfigError(problem, path=path, field=f"train.{name}")

        check_types(type(self), dataclasses.asdict(self), path=path, table="train")
        for name in ("batch_size", "save_total_limit", "logging_steps", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise bad(name, "must be a positive integer")
        for name in ("max_seq_length", "export_max_seq_length"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise bad(name, "must be a positive integer")
        for name in ("epochs", "lr"):
            if getattr(self, name) <= 0 or not math.isfinite(getattr(self, name)):
                raise bad(name, "must be a positive number")
        if not 0 <= self.warmup_ratio < 1:
            raise bad("warmup_ratio", "must be a number in [0, 1)")
        if self.weight_decay < 0:
            raise bad("weight_decay", "must be >= 0")
        if self.save_steps is not None and self.save_steps < 1:
            raise bad("save_steps", "must be a positive integer")
        if self.train_last_layers is not None and self.train_last_layers < 0:
            raise bad("train_last_layers", "must be an integer >= 0")
        if self.freeze_layers is not None and self.freeze_layers < 0:
            raise bad("freeze_layers", "must be an integer >= 0")
        if self.freeze_layers is not None and self.train_last_layers is not None:
            raise bad("freeze_layers", "give either freeze_layers or train_last_layers, not both")
        if self.matryoshka_dims is not None and not all(d > 0 for d in self.matryoshka_dims):
            raise bad("matryoshka_dims", "must be a list of positive integers")

    @property
    def checkpoints(self) -> Path:
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        out = Path(self.out)
        return out.with_name(out.name + ".checkpoints")


# --- partial fine-tuning -------------------------------------------------------------------------
def transformer_layers(model):
    """The list of transformer blocks of ``model``'s first module (``encoder.layer`` for BERT)."""
    import torch

    first = model[0]
    best = None
    for name, module in first.named_modules():
        is_block_list = isinstance(module, torch.nn.ModuleList) and re.search(
            r"(^|\.)(layer|layers|h|block)$", name
        )
        if is_block_list and (best is None or len(module) > len(best)):
            best = module
    return best


def freeze_all_but_last(model, n: int | None, *, frozen: int | None = None) -> dict[str, int]:
    """Freeze the first module except its last ``n`` transformer blocks (or all but the first ``frozen``);
    later modules (pooling, dense heads) stay trainable. Returns trainable and total parameter counts."""
    layers = transformer_layers(model)
    if layers is None:
        raise ConfigError(
            "cannot find the transformer layers of this model for partial fine-tuning",
            field="train.train_last_layers",
        )
    if frozen is not None:
        if frozen > len(layers):
            raise ConfigError(f"model has only {len(layers)} transformer layers", field="train.freeze_layers")
        n = len(layers) - frozen
    if n > len(layers):
        raise ConfigError(f"model has only {len(layers)} transformer layers", field="train.train_last_layers")
    for parameter in model[0].parameters():
        parameter.requires_grad_(False)
    for layer in list(layers)[len(layers) - n :] if n else []:
        for parameter in layer.parameters():
            parameter.requires_grad_(True)
    for module in list(model)[1:]:
        for parameter in module.parameters():
            parameter.requires_grad_(True)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "trainable_parameters": trainable,
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "transformer_layers": len(layers),
        "trained_layers": n,
    }


# --- evaluation ----------------------------------------------------------------------------------
def build_evaluator(dataset, *, name: str = "val", matryoshka_dims=None, batch_size: int = 32):
    """Our training evaluator (primary metric NDCG@10), exposing the score as ``ndcg@10``."""
    from embtune_core.evaluation import training_evaluator

    inner = training_evaluator(dataset, name=name, matryoshka_dims=matryoshka_dims, batch_size=batch_size)
    return _HeadlineEvaluator(inner)


def _headline_evaluator_class():
    from embtune_core.evaluation import sentence_evaluator_base

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


# --- checkpoints and logs ------------------------------------------------------------------------
COMPLETE = "embtune_complete.json"  # written into a checkpoint after the trainer has saved all of it
RUN_FINGERPRINT = "run_fingerprint.txt"  # in the checkpoint folder: which settings and data made it


def run_fingerprint(settings: TrainSettings) -> str:
    """A hash of every setting (``resume`` aside) and of the training and validation data's content:
    re-running the same command after an interruption resumes only when this is unchanged."""
    from embtune_core.rundir import inputs_hash, stable_hash

    values = {k: v for k, v in dataclasses.asdict(settings).items() if k != "resume"}
    data = inputs_hash([Path(p) for p in (settings.train, settings.val) if p and Path(p).exists()])
    return stable_hash({"settings": values, "data": data})


def latest_checkpoint(folder: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` in ``folder``.

    A checkpoint counts only when :func:`checkpoint_problem` finds nothing wrong with it. A newer one
    that is torn (killed mid-save, disk full) is moved aside to ``.incomplete-checkpoint-N`` (never
    deleted) and the previous complete one is used, with one line saying so.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = []
    for child in folder.iterdir():
        match = re.fullmatch(r"checkpoint-(\d+)", child.name)
        if match and child.is_dir():
            found.append((int(match.group(1)), child))
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
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _callbacks(work_dir: Path, history: list[dict[str, Any]]):
    from transformers import TrainerCallback

    class LossLog(TrainerCallback):
        """Every log record (loss, learning rate, evaluation metrics) as a line of loss_log.jsonl."""

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is None:
                return
            record = {"step": state.global_step, "epoch": state.epoch, "time": round(time.time(), 3), **logs}
            history.append(record)
            if state.is_world_process_zero:
                _append_jsonl(work_dir / LOSS_LOG, record)

    class MarkComplete(TrainerCallback):
        """After the trainer has written a checkpoint, mark it complete (see checkpoint_problem)."""

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    atomic.write_json(folder / COMPLETE, {"global_step": state.global_step})

    class RankReport(TrainerCallback):
        """Counts the optimisation steps each rank takes, so a DDP run shows every rank trained."""

        def __init__(self) -> None:
            self.steps = 0

        def on_step_end(self, args, state, control, **kwargs):
            self.steps += 1
            interrupts.check()  # a Ctrl-C/SIGTERM lost inside a __del__ still stops the run here

    return LossLog(), RankReport(), MarkComplete()


def _rank() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _precision(choice: str) -> dict[str, bool]:
    """bf16 where the GPU supports it, else fp16 on a GPU; full precision on CPU ("auto")."""
    import torch

    if choice == "fp32":
        return {}
    if choice in ("bf16", "fp16"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f'{choice} needs a GPU; use precision = "auto" or "fp32" on CPU', field="train.precision"
            )
        return {choice: True}
    if torch.cuda.is_available():
        return {"bf16": True} if torch.cuda.is_bf16_supported() else {"fp16": True}
    return {}


# --- the run ------------------------------------------------------------------------------------
def train(settings: TrainSettings) -> dict[str, Any]:
    """Train, evaluate before and after, and write the model directory; returns the run summary.

    Data problems (missing file, no negatives for a loss that needs them) raise before any model is
    loaded. With ``settings.resume`` the newest complete checkpoint in the checkpoint folder is
    continued (a fresh run starts when there is none).
    """
    from embtune_core.dataset import check_disjoint_queries, load_split
    from embtune_core.losses import create_strategy

    settings.validate()
    rank, world_size = _rank()
    fingerprint = run_fingerprint(settings)
    recorded = settings.checkpoints / RUN_FINGERPRINT
    if not settings.resume and any(settings.checkpoints.glob("checkpoint-*")):
        same = recorded.is_file() and recorded.read_text(encoding="utf-8").strip() == fingerprint
        if not same:
            raise ConfigError(f"{settings.checkpoints} holds checkpoints of an earlier run with other settings or "
                              "data; pass --resume to continue it anyway, or remove that folder (or give another "
                              "--checkpoint-dir) to start afresh", field="train.resume")
        log.info("resuming the interrupted run in %s (same settings and data)", settings.checkpoints)
        settings = dataclasses.replace(settings, resume=True)
    strategy = create_strategy(
        settings.loss,
        matryoshka_dims=settings.matryoshka_dims,
        **{"seed": settings.seed, **settings.loss_options},
    )
    train_qa = load_split(settings.train, split=settings.split, field="train", option="--split")
    train_rows = strategy.build_dataset(train_qa, settings.train)  # fails here, before loading a model
    val_qa = (load_split(settings.val, split=settings.val_split, field="val", option="--val-split")
              if settings.val else None)
    if val_qa is not None:
        check_disjoint_queries(train_qa, val_qa, path=settings.val, field="val")
    unanswered = [q for q in train_qa.queries if not any(c in train_qa.corpus for c in train_qa.relevant_docs.get(q, ()))]
    if unanswered:
        log.warning("%d of %d training queries have no relevant document in the corpus; they are not trained on",
                    len(unanswered), len(train_qa.queries))

    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers
    from transformers import set_seed

    from embtune_core import progress
    from embtune_core.models import load_sentence_transformer, resolve

    set_seed(settings.seed)
    model = load_sentence_transformer(settings.model)
    from embtune_core import token_limits

    if settings.max_seq_length:
        token_limits.set_limit(model, settings.max_seq_length, settings.model)

    skipped = set(unanswered)
    answered = [q for q in train_qa.queries if q not in skipped]
    truncation = token_limits.check_model(model, {
        "query": [train_qa.queries[q] for q in answered],
        "document": sorted({train_qa.corpus[c] for q in answered for c in train_qa.relevant_docs.get(q, ())
                            if c in train_qa.corpus})}, model_name=settings.model)
    partial = None
    if settings.train_last_layers is not None or settings.freeze_layers is not None:
        partial = freeze_all_but_last(model, settings.train_last_layers, frozen=settings.freeze_layers)
    loss = strategy.build_loss(model)
    evaluator = (
        build_evaluator(val_qa, matryoshka_dims=settings.matryoshka_dims, batch_size=settings.eval_batch_size)
        if val_qa is not None
        else None
    )

    from embtune_core.sampler import batch_plan, every_row_batch_sampler, row_texts

    work_dir = settings.checkpoints
    # In-batch negatives: a batch never holds one text twice, so few distinct texts mean more, smaller
    # batches; the sampler still uses every row each epoch and says so (sentence-transformers #3348).
    plan = batch_plan(row_texts(train_rows) if strategy.in_batch_negatives else [()] * len(train_rows),
                      settings.batch_size)
    if plan.limited_by_texts:
        log.warning("batch size %d cannot be filled: %d training rows share one text and a batch never holds a "
                    "text twice, so an epoch is %d batches of %.1f rows on average (every row is still used once "
                    "per epoch)", settings.batch_size, plan.max_rows_per_text, plan.batches, plan.mean_batch)
    steps_per_epoch = max(1, math.ceil(plan.batches / world_size))
    save_steps = settings.save_steps or steps_per_epoch
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work_dir),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size,
        learning_rate=settings.lr,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        data_seed=settings.seed,
        batch_sampler=every_row_batch_sampler if strategy.in_batch_negatives else BatchSamplers.BATCH_SAMPLER,
        eval_strategy="steps" if evaluator is not None else "no",
        eval_steps=save_steps if evaluator is not None else None,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=settings.save_total_limit,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model="eval_ndcg@10" if evaluator is not None else None,
        greater_is_better=True,
        # Logging windows that divide the checkpoint interval: a resumed run logs the same windows, so the
        # summary's train loss (mean of the logged losses, see _train_loss) is the same bits.
        logging_steps=math.gcd(settings.logging_steps, save_steps),
        logging_first_step=True,
        report_to="none",
        disable_tqdm=not progress.enabled(),
        dataloader_num_workers=0,
        dataloader_pin_memory=_cuda(),
        ddp_backend=None if _cuda() or world_size == 1 else "gloo",
        **_precision(settings.precision),
    )
    history: list[dict[str, Any]] = []
    loss_log, rank_report, mark_complete = _callbacks(work_dir, history)
    trainer = SentenceTransformerTrainer(
        model=model,
        args=args,
        train_dataset=train_rows,
        loss=loss,
        evaluator=evaluator,
        callbacks=[loss_log, rank_report, mark_complete],
    )
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    # The trainer prints every log dict (a whole evaluation's metrics in one line) to stdout, with or
    # without progress bars; loss_log.jsonl keeps them. The bar stays, the dicts go.
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(_quiet_progress_callback())

    device = str(args.device)
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    log.info("training on %s, precision %s, %d process(es)", device, precision, world_size)
    if rank == 0:  # recorded only now: a run refused for its data leaves no folder behind
        atomic.write_text(recorded, fingerprint + "\n")
    checkpoint = latest_checkpoint(work_dir) if settings.resume else None
    if settings.resume and checkpoint is None:
        log.info("no checkpoint in %s yet; starting from the beginning", work_dir)
    metrics_before = _baseline(trainer, work_dir, settings, rank) if evaluator is not None else {}

    started = time.time()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    train_seconds = time.time() - started
    metrics_after = _metrics_after(trainer, history) if evaluator is not None else {}

    summary = {
        "base_model": settings.model,
        "base_model_path": resolve(settings.model).target,
        "loss": strategy.describe(),
        "settings": {k: v for k, v in dataclasses.asdict(settings).items()},
        "data": {
            "train": _sizes(train_qa, settings.train, settings.split),
            "train_rows": len(train_rows),
            "batches": {"batch_size": settings.batch_size, "per_epoch": plan.batches,
                        "mean_rows_per_batch": round(plan.mean_batch, 2), "rows_used_per_epoch": plan.rows,
                        "limited_by_repeated_text": plan.limited_by_texts},
            "val": _sizes(val_qa, settings.val, settings.val_split) if val_qa is not None else None,
        },
        "max_seq_length": model.max_seq_length,
        "truncation": truncation,
        "partial_fine_tuning": partial,
        "world_size": world_size,
        "device": device,
        "precision": precision,
        "global_step": trainer.state.global_step,
        "resumed_from": checkpoint,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_loss": _train_loss(trainer.state.log_history, output.training_loss),
        "train_seconds": round(train_seconds, 1),
        "metrics_before": metrics_before,
        "metrics_after": metrics_after,
    }
    exported = "trained"
    if metrics_before and metrics_after and not settings.keep_if_worse:
        before, after = metrics_before.get("ndcg@10"), metrics_after.get("ndcg@10")
        if before is not None and after is not None and after < before:
            # Never hand out a model that retrieves worse than the one the user started from.
            log.warning("the trained model scores below the base on the validation set (NDCG@10 %.4f < %.4f); "
                        "the base model is exported unchanged (keep_if_worse = true exports the trained one)",
                        after, before)
            model = load_sentence_transformer(settings.model)
            exported = "base"
    summary["exported"] = exported
    summary["trained_max_seq_length"] = summary.pop("max_seq_length")
    summary["max_seq_length"] = export_limit(model, settings)
    saved = False
    if trainer.is_world_process_zero():
        save_model(model, settings.out, summary)
        saved = True
    atomic.write_json(
        work_dir / "ranks" / f"rank-{rank}.json",
        {
            "rank": rank,
            "world_size": world_size,
            "device": device,
            "steps": rank_report.steps,
            "global_step": trainer.state.global_step,
            "saved_model": saved,
        },
    )
    summary["saved"] = saved
    summary["history"] = history
    return summary


def _quiet_progress_callback():
    """transformers' progress bar without the log dicts it writes under the bar."""
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    return QuietProgress()


def _train_loss(log_history: list[dict[str, Any]], fallback: float) -> float:
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


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sizes(qa, path, split: str | None = None) -> dict[str, Any]:
    from embtune_core.dataset import source_of

    return {
        "path": str(path),
        "source": source_of(path, split),
        "queries": len(qa.queries),
        "corpus": len(qa.corpus),
        "relevant_pairs": sum(len(v) for v in qa.relevant_docs.values()),
        "negatives": sum(len(v) for v in qa.negatives.values()),
    }


def _evaluate(trainer) -> dict[str, float]:
    return _metric_values(trainer.evaluate())


def _metrics_after(trainer, history: list[dict[str, Any]]) -> dict[str, float]:
    """Metrics of the model the trainer ended with (the best checkpoint, reloaded at the end).

    The evaluation logged at the best checkpoint's step already measured exactly these weights, so
    it is reused instead of paying for one more pass over the validation set (minutes on a CPU).
    Every rank sees the same log, so all ranks decide alike and none waits in a lone evaluation.
    """
    step = getattr(trainer.state, "best_global_step", None)
    if trainer.state.best_model_checkpoint and step:
        logged = [r for r in history if r.get("step") == step and "eval_ndcg@10" in r]
        if logged:
            return _metric_values(logged[-1])
    return _evaluate(trainer)


def _metric_values(logs: dict[str, Any]) -> dict[str, float]:
    return {
        k.removeprefix("eval_"): v
        for k, v in logs.items()
        if k.startswith("eval_") and isinstance(v, (int, float))
        and not k.endswith(("_runtime", "_per_second", "epoch", "model_preparation_time"))
    }


def _baseline(trainer, work_dir: Path, settings: TrainSettings, rank: int) -> dict[str, float]:
    """Metrics of the untrained model, computed once per run (a resumed run reuses them).

    Every rank decides alike: rank 0 writes the file only after an evaluation all ranks take part in.
    """
    path = work_dir / BASELINE
    identity = {"model": settings.model, "val": settings.val, "max_seq_length": settings.max_seq_length}
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if {k: saved.get(k) for k in identity} == identity:
            return saved["metrics"]
    with preserved_random_state():  # evaluated on some runs only: it must not shift what training draws
        metrics = _evaluate(trainer)
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


# --- output --------------------------------------------------------------------------------------
def export_limit(model, settings: TrainSettings) -> int:
    """Set and return the token limit the exported model carries.

    Training at a short limit is cheaper, but a model saved with it makes every downstream loader
    (sentence-transformers, LangChain, DocsGPT) cut texts at that limit without a word. The export
    keeps the model's own limit, or the training limit when that is longer (a model trained to read
    more should keep reading it); ``export_max_seq_length`` overrides both. Said in one line whenever
    the exported limit differs from the trained one.
    """
    from embtune_core import token_limits

    trained = model.max_seq_length
    own = getattr(model, "embtune_own_max_seq_length", None) or trained
    limit = settings.export_max_seq_length or max(own, trained)
    if limit != trained:
        token_limits.check_limit(model, limit, settings.model, field="train.export_max_seq_length")
        log.warning("trained at %d tokens; the model is exported with a limit of %d tokens (%s)", trained, limit,
                    "export_max_seq_length" if settings.export_max_seq_length else "the model's own")
        model.max_seq_length = limit
    return limit


def save_model(model, out: str | Path, summary: dict[str, Any]) -> Path:
    """Write the sentence-transformers directory with its model card, all files at once."""
    out = Path(out)
    with atomic.atomic_directory(out) as staging:
        model.save(str(staging), create_model_card=False)
        atomic.write_text(staging / "README.md", model_card(summary))
        atomic.write_json(staging / SUMMARY, summary)
    return out


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _shown_source(data: dict[str, Any]) -> str:
    """A dataset's file name, or ``FOLDER/qrels/SPLIT.tsv`` for a BEIR folder (its split named)."""
    path, source = Path(data["path"]), Path(data.get("source") or data["path"])
    return path.name if source == path else f"{path.name}/{source.relative_to(path)}"


def model_card(summary: dict[str, Any]) -> str:
    """README.md: base model, data sizes, loss, hyper-parameters and metrics before and after."""
    s = summary["settings"]
    loss = summary["loss"]
    lines = [
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        f"base_model: {json.dumps(summary['base_model'])}",
        "tags: [sentence-transformers, sentence-similarity, feature-extraction, embtune]",
        "---",
        "",
        f"# Fine-tuned {summary['base_model']}",
        "",
        (
            f"Fine-tuned with embtune from **{summary['base_model']}** for retrieval (RAG). Load it with "
            '`SentenceTransformer("<this folder>")`, or in DocsGPT set `EMBEDDINGS_NAME=<this folder>`.'
        ),
        "Documents must be re-embedded with this model: query and document embeddings both changed.",
        "",
        "## Data",
        "",
        "| split | file | queries | corpus | relevant pairs | negatives |",
        "|---|---|---|---|---|---|",
    ]
    for split in ("train", "val"):
        d = summary["data"].get(split)
        if d:
            lines.append(
                f"| {split} | {_shown_source(d)} | {d['queries']} | {d['corpus']} | "
                f"{d['relevant_pairs']} | {d['negatives']} |"
            )
    lines += [
        "",
        f"Training rows ({loss['data_format']}): {summary['data']['train_rows']}",
        "",
        "## Loss",
        "",
        f"`{loss['name']}`",
    ]
    hidden = ("name", "data_format", "inner", "needs_negatives", "in_batch_negatives")
    options = {k: v for k, v in loss.items() if k not in hidden}
    if options:
        lines.append("(" + ", ".join(f"{k}={v}" for k, v in sorted(options.items())) + ")")
    lines += ["", "## Hyper-parameters", "", "| setting | value |", "|---|---|"]
    for key in (
        "epochs",
        "max_steps",
        "batch_size",
        "lr",
        "warmup_ratio",
        "weight_decay",
        "seed",
        "save_steps",
        "train_last_layers",
        "precision",
        "matryoshka_dims",
    ):
        lines.append(f"| {key} | {s.get(key)} |")
    from embtune_core.token_limits import describe

    trained = summary.get("trained_max_seq_length") or summary.get("max_seq_length") or s.get("max_seq_length")
    cut = describe(summary.get("truncation"))
    lines.append(f"| max_seq_length in training (tokens read of each text) | {trained}{f' ({cut})' if cut else ''} |")
    lines.append(f"| max_seq_length of this model (what loaders read) | {summary.get('max_seq_length')} |")
    batches = summary["data"].get("batches")
    if batches:
        lines.append(f"| batches per epoch | {batches['per_epoch']} ({batches['mean_rows_per_batch']} rows on "
                     f"average; every row used once per epoch) |")
    if summary.get("device"):
        lines.append(f"| device, precision used | {summary['device']}, {summary['precision']} |")
    lines.append(f"| processes (DDP world size) | {summary['world_size']} |")
    lines.append(f"| optimisation steps | {summary['global_step']} |")
    if summary.get("partial_fine_tuning"):
        p = summary["partial_fine_tuning"]
        lines.append(
            f"| trained parameters | {p['trainable_parameters']} of {p['total_parameters']} "
            f"(last {p['trained_layers']} of {p['transformer_layers']} layers + pooling/heads) |"
        )
    before, after = summary.get("metrics_before") or {}, summary.get("metrics_after") or {}
    if before or after:
        lines += ["", "## Evaluation (validation set)", "", "| metric | before | after |", "|---|---|---|"]
        keys = [k for k in HEADLINE_METRICS if k in before or k in after]
        keys += sorted(k for k in set(before) | set(after) if k not in keys and k != "loss")
        for key in keys:
            lines.append(f"| {key} | {_fmt(before.get(key, ''))} | {_fmt(after.get(key, ''))} |")
        if summary.get("best_checkpoint"):
            lines += ["", f"Best checkpoint by NDCG@10: `{Path(summary['best_checkpoint']).name}`."]
        if trained != summary.get("max_seq_length"):
            lines += ["", f"'after' was measured at the training limit ({trained} tokens)."]
        if summary.get("exported") == "base":
            lines += ["", ("**This folder holds the base model unchanged**: the trained model scored below it on "
                           "the validation set ('after'), and embtune never exports a model worse than the base.")]
    lines.append("")
    return "\n".join(lines)
