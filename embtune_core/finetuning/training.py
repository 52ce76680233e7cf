"""Full and partial fine-tuning of a sentence-transformers model with a pluggable loss strategy.

Inputs: a training QA dataset (and optionally a validation one), a model name, a loss strategy
name from the ``loss_strategies`` family and hyper-parameters (:class:`TrainSettings`). It trains
through sentence-transformers' ``SentenceTransformerTrainer``: no-duplicates batches for losses
with in-batch negatives, evaluation on the validation set every ``save_steps`` steps with the best
checkpoint by NDCG@10 kept and loaded at the end, checkpoints that ``resume=True`` continues from,
seeds, bf16/fp16 on a GPU, a progress bar and a JSONL loss log. It writes a standard
sentence-transformers model directory, atomically, with a model card (README.md) stating base
model, data sizes, loss, hyper-parameters and metrics before and after.

The parts live beside it, as sentence-transformers splits its trainer: settings and the trainer's
arguments (:mod:`embtune_core.finetuning.training_args`), layer freezing (:mod:`embtune_core.finetuning.layer_freezing`),
the evaluator bridge (:mod:`embtune_core.finetuning.training_evaluator`), checkpoints and logs
(:mod:`embtune_core.finetuning.checkpoints`) and the saved model with its card (:mod:`embtune_core.finetuning.model_card`);
:func:`train` runs them in order and returns a :class:`TrainResult`.

The same code runs under ``torchrun`` / ``accelerate launch`` (DDP): every rank trains on its
share of each batch, only rank 0 writes checkpoints, logs and the model.

Usage::

    from embtune_core.finetuning.training import TrainSettings, train

    result = train(TrainSettings(train="train_dataset.json", val="val_dataset.json",
                                 model="sentence-transformers/all-MiniLM-L6-v2", loss="mnrl",
                                 epochs=2, batch_size=16, out="models/minilm-10k"))
    print(result.metrics_before["ndcg@10"], "->", result.metrics_after["ndcg@10"])
    # SentenceTransformer("models/minilm-10k") loads it; DocsGPT: EMBEDDINGS_NAME=models/minilm-10k
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from embtune_core.errors import ConfigError, InputError
from embtune_core.finetuning.checkpoints import (
    LOSS_LOG,
    RUN_FINGERPRINT,
    attempt_record,
    card_training_logs,
    latest_checkpoint,
    mean_train_loss,
    quiet_progress_callback,
    run_fingerprint,
    trainer_callbacks,
    trim_loss_log,
)
from embtune_core.finetuning.layer_freezing import freeze_all_but_last
from embtune_core.finetuning.model_card import export_limit, save_model
from embtune_core.finetuning.training_args import TrainSettings, rank_and_world_size, training_arguments
from embtune_core.finetuning.training_evaluator import (
    baseline_metrics,
    build_evaluator,
    metrics_after_training,
    saved_baseline,
)
from embtune_core.runtime import atomic

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "TrainSettings", "train"]


@dataclass
class TrainResult:
    """What one training run did, as :func:`train` returns it (the same fields, less ``saved`` and
    ``history``, are written as ``embtune_train.json`` beside the model). ``result["key"]`` reads a
    field as the summary's key, for code that reads the JSON file and the result alike."""

    base_model: str
    base_model_path: str
    loss: dict[str, Any]  # the strategy's describe(): name, data format, options
    settings: dict[str, Any]  # every TrainSettings field
    data: dict[str, Any]  # train/val sizes and sources, training rows, batches per epoch
    index_aware: dict[str, Any] | None  # pseudo-queries from the index joined the training set (index_training)
    document_windows: dict[str, Any] | None  # long positives trained as their best window (long_documents)
    truncation: dict[str, Any] | None  # queries and texts longer than the trained token limit
    partial_fine_tuning: dict[str, int] | None
    lora: dict[str, Any] | None  # LoRA rank, targets, trainable parameters (embtune_core.encoders.lora)
    prompts: dict[str, str]  # the model's prompts as saved (config_sentence_transformers.json)
    report_to: list[str]  # experiment trackers the trainer reported to
    world_size: int
    device: str
    precision: str
    global_step: int
    resumed_from: str | None
    best_checkpoint: str | None
    train_loss: float
    train_seconds: float
    metrics_before: dict[str, float]
    metrics_after: dict[str, float]
    exported: str  # "trained", or "base" when the trained model scored below it on val
    trained_max_seq_length: int | None  # tokens read in training (None: texts read whole, a static model)
    max_seq_length: int | None  # tokens the exported model reads (export_limit)
    saved: bool = False  # this process (rank 0) wrote the model
    history: list[dict[str, Any]] = field(default_factory=list)  # every trainer log record
    # how many texts a step embedded at once and why (GradCache mini-batch, embtune_core.finetuning.memory_plan)
    memory: dict[str, Any] | None = None

    def __getitem__(self, key: str) -> Any:
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default) if key in self.__dataclass_fields__ else default


def train(settings: TrainSettings, *, exclude_questions: Iterable[str] = ()) -> TrainResult:
    """Train, evaluate before and after, and write the model directory; returns what the run did.

    ``exclude_questions``: texts no index-aware pseudo-query may have besides the ``val`` questions
    (``embtune run`` passes its validation split's, which ``val`` -- the held-out training documents
    that choose the checkpoint -- does not hold).

    Data problems (missing file, no negatives for a loss that needs them) raise before any model is
    loaded. With ``settings.resume`` the newest complete checkpoint in the checkpoint folder is
    continued (a fresh run starts when there is none).
    """
    from embtune_core.data.dataset import check_disjoint_queries, load_split
    from embtune_core.finetuning.losses import create_strategy

    settings.validate()
    rank, world_size = rank_and_world_size()
    fingerprint = run_fingerprint(settings)
    recorded = settings.checkpoints / RUN_FINGERPRINT
    if not settings.resume and any(settings.checkpoints.glob("checkpoint-*")):
        try:
            written = recorded.read_text(encoding="utf-8").strip() if recorded.is_file() else None
        except (OSError, UnicodeDecodeError):
            written = ""
        same = written == fingerprint
        if written == "":  # damaged: which settings made these checkpoints cannot be told
            raise ConfigError(f"{recorded} is empty or unreadable, so whether the checkpoints in "
                              f"{settings.checkpoints} belong to these settings and data cannot be told; pass "
                              "--resume to continue them anyway, or remove that folder to start afresh",
                              field="train.resume")
        if not same:
            raise ConfigError(f"{settings.checkpoints} holds checkpoints of an earlier run with other settings or "
                              "data; pass --resume to continue it anyway, or remove that folder (or give another "
                              "--checkpoint-dir) to start afresh", field="train.resume")
        from embtune_core.finetuning.checkpoints import finished

        if finished(settings.checkpoints):
            # The Trainer checks max_steps after a step, so resuming a finished run replays one step;
            # past max_steps the linear schedule's learning rate is 0, so no weight changes.
            log.info("%s holds a finished run with the same settings and data; exporting its best checkpoint "
                     "again (the trainer replays one step at learning rate 0: no weight changes)",
                     settings.checkpoints)
        else:
            log.info("resuming the interrupted run in %s (same settings and data)", settings.checkpoints)
        settings = dataclasses.replace(settings, resume=True)
    strategy = create_strategy(
        settings.loss,
        matryoshka_dims=settings.matryoshka_dims,
        **{"seed": settings.seed, **settings.loss_options},
    )
    train_qa = load_split(settings.train, split=settings.split, field="train", option="--split")
    val_qa = (load_split(settings.val, split=settings.val_split, field="val", option="--val-split")
              if settings.val else None)
    if val_qa is not None:
        check_disjoint_queries(train_qa, val_qa, path=settings.val, field="val")
    index_info = None
    if settings.index_corpus:
        train_qa, index_info = _index_aware(train_qa, settings, val_qa, exclude_questions)
    train_rows = strategy.build_dataset(train_qa, settings.train)  # fails here, before loading a model
    for note in strategy.notes:  # what the rows leave out, or how the loss changed: never silent
        log.warning("%s: %s", settings.train, note)
    unanswered = [q for q in train_qa.queries if not any(c in train_qa.corpus for c in train_qa.relevant_docs.get(q, ()))]
    if unanswered:
        log.warning("%d of %d training queries have no relevant document in the corpus; they are not trained on",
                    len(unanswered), len(train_qa.queries))

    from sentence_transformers import SentenceTransformerTrainer
    from transformers import set_seed

    from embtune_core.encoders.models import load_sentence_transformer, resolve

    set_seed(settings.seed)
    model = load_sentence_transformer(settings.model)
    from embtune_core.encoders import token_limits
    from embtune_core.encoders.model_modules import (
        first_module_name,
        is_router,
        require_transformer,
        token_limit,
    )

    if settings.max_seq_length:
        token_limits.set_limit(model, settings.max_seq_length, settings.model)
    if settings.export_max_seq_length:  # refused now, not after training
        token_limits.check_limit(model, settings.export_max_seq_length, settings.model,
                                 field="train.export_max_seq_length")

    from embtune_core.encoders import lora, prompts
    from embtune_core.finetuning import tracking

    prompts.set_model_prompts(model, settings.query_prompt, settings.document_prompt)
    windows_record, text_groups = None, None
    if settings.document_windows == "best":
        from embtune_core.encoders.long_documents import best_window_positives

        train_qa, windows_record, text_groups = best_window_positives(train_qa, model,
                                                                      batch_size=settings.eval_batch_size)
        train_rows = strategy.build_dataset(train_qa, settings.train)  # same rows, best windows: notes unchanged
    skipped = set(unanswered)
    answered = [q for q in train_qa.queries if q not in skipped]
    truncation = token_limits.check_model(model, {
        "query": [train_qa.queries[q] for q in answered],
        "document": sorted({train_qa.corpus[c] for q in answered for c in train_qa.relevant_docs.get(q, ())
                            if c in train_qa.corpus})}, model_name=settings.model)
    from embtune_core.encoders.token_prefix import readable_columns

    # The collator tokenises every batch each epoch: rows hold what the model reads of each text (the same
    # tokens), so a long chunk is never tokenised whole (embtune_core.encoders.token_prefix).
    # Two chunks alike in every token the model reads become one text, which the batch sampler then keeps
    # apart (they would be each other's indistinguishable negatives). Windows are never cut (they fit).
    train_rows = readable_columns(train_rows, model)
    partial = lora_record = None
    if settings.train_last_layers is not None or settings.freeze_layers is not None:
        require_transformer(model, "train.train_last_layers" if settings.train_last_layers is not None
                            else "train.freeze_layers", settings.model)
        partial = freeze_all_but_last(model, settings.train_last_layers, frozen=settings.freeze_layers)
    if settings.lora:
        require_transformer(model, "train.lora", settings.model)
        lora_record = lora.apply_lora(model, settings)
    memory = _plan_memory(strategy, model, train_rows, settings)
    loss = strategy.build_loss(model)
    evaluator = (
        build_evaluator(val_qa, matryoshka_dims=settings.matryoshka_dims, batch_size=settings.eval_batch_size)
        if val_qa is not None
        else None
    )

    from embtune_core.finetuning.sampler import batch_plan, row_texts

    work_dir = settings.checkpoints
    # In-batch negatives: a batch never holds one text twice, so few distinct texts mean more, smaller
    # batches; the sampler still uses every row each epoch and says so (sentence-transformers #3348).
    plan = batch_plan(row_texts(train_rows, text_groups) if strategy.in_batch_negatives else [()] * len(train_rows),
                      settings.batch_size)
    if plan.limited_by_texts:
        log.warning("batch size %d cannot be filled: %d training rows share one text and a batch never holds a "
                    "text twice, so an epoch is %d batches of %.1f rows on average (every row is still used once "
                    "per epoch)", settings.batch_size, plan.max_rows_per_text, plan.batches, plan.mean_batch)
    if not any(parameter.requires_grad for parameter in model.parameters()):
        raise InputError(f"the model has no trainable weights ({first_module_name(model)} frozen, nothing after it "
                         "to train): nothing to fine-tune; train a query adapter (embtune train-adapter) instead",
                         path=settings.model, field="train.model")
    args = training_arguments(settings, in_batch_negatives=strategy.in_batch_negatives,
                              batches_per_epoch=plan.batches, evaluate=evaluator is not None, world_size=world_size,
                              train_rows=train_rows, text_groups=text_groups,
                              router_mapping=prompts.column_routes(train_rows) if is_router(model) else None)
    history: list[dict[str, Any]] = []
    loss_log, rank_report, mark_complete = trainer_callbacks(work_dir, history)
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
    tracking.place_event_files(trainer, work_dir)
    if settings.lora:
        lora.use_peft_checkpoints(trainer, model)
    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(quiet_progress_callback())

    device = str(args.device)
    precision = "bf16" if args.bf16 else "fp16" if args.fp16 else "fp32"
    log.info("training on %s, precision %s, %d process(es)", device, precision, world_size)
    if rank == 0:  # recorded only now: a run refused for its data leaves no folder behind
        atomic.write_text(recorded, fingerprint + "\n")
        if memory is not None:  # a resumed attempt embeds in the same mini-batches: the same bits
            from embtune_core.finetuning.memory_plan import PLAN_FILE

            atomic.write_json(work_dir / PLAN_FILE, memory)
    checkpoint = latest_checkpoint(work_dir) if settings.resume else None
    if settings.resume and checkpoint is None:
        log.info("no checkpoint in %s yet; starting from the beginning", work_dir)
    # The record of a resumed run is the record of an uninterrupted one: the killed attempt's log lines
    # after the checkpoint go (this attempt logs those steps again), and its time counts.
    before = attempt_record(checkpoint)
    mark_complete.before = before
    if rank == 0:
        reused = evaluator is None or saved_baseline(work_dir, settings) is not None
        trim_loss_log(work_dir / LOSS_LOG, before["global_step"], keep_step_zero=reused)
    from embtune_core.runtime.resources import guard

    advice = memory_advice(settings, memory)
    with guard(doing="evaluating the base model", memory_advice=f"lower --eval-batch-size (now {settings.eval_batch_size})"):
        metrics_before = baseline_metrics(trainer, work_dir, settings, rank) if evaluator is not None else {}
    # A full disk during a checkpoint save, or memory running out in a step: one line, exit 3, advice.
    with guard(writing=work_dir, what="a training checkpoint", doing="training", memory_advice=advice):
        output = trainer.train(resume_from_checkpoint=checkpoint)
    totals = mark_complete.totals()
    train_seconds = totals["train_seconds"]
    if checkpoint is not None:
        # sentence-transformers' card knows only this attempt: its rows and its clock
        card = model.model_card_data
        card.training_logs = card_training_logs(trainer.state.log_history, card.training_logs,
                                                before["global_step"],
                                                # the card shows the inner evaluator's primary metric (val_ndcg@10)
                                                getattr(getattr(evaluator, "inner", evaluator), "primary_metric", None),
                                                baseline=metrics_before)
        if card._training_start_time is not None:
            card._training_start_time -= before["train_seconds"]
            card.evaluation_duration += before["eval_seconds"]
    metrics_after = metrics_after_training(trainer, history) if evaluator is not None else {}

    summary = {
        "base_model": settings.model,
        "base_model_path": resolve(settings.model).target,
        "loss": strategy.describe(),
        "settings": {k: v for k, v in dataclasses.asdict(settings).items()},
        "data": {
            "train": _sizes(train_qa, settings.train, settings.split),
            "train_rows": len(train_rows),
            # what the rows leave out or how the loss changed (strategy.notes), and queries nothing answers
            "notes": strategy.notes + ([(f"{len(unanswered)} of {len(train_qa.queries)} training queries have no "
                                        "relevant document in the corpus and are not trained on")]
                                       if unanswered else []),
            "batches": {"batch_size": settings.batch_size, "per_epoch": plan.batches,
                        "mean_rows_per_batch": round(plan.mean_batch, 2), "rows_used_per_epoch": plan.rows,
                        "limited_by_repeated_text": plan.limited_by_texts},
            "val": _sizes(val_qa, settings.val, settings.val_split) if val_qa is not None else None,
        },
        "max_seq_length": token_limit(model),  # None: the model reads texts whole (a static model)
        "index_aware": index_info,
        "document_windows": windows_record,
        "truncation": truncation,
        "memory": memory,
        "partial_fine_tuning": partial,
        "lora": lora_record,
        "prompts": dict(getattr(model, "prompts", None) or {}),
        "report_to": tracking.normalise(settings.report_to),
        "world_size": world_size,
        "device": device,
        "precision": precision,
        "global_step": trainer.state.global_step,
        "resumed_from": checkpoint,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "train_loss": mean_train_loss(trainer.state.log_history, output.training_loss),
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
        if exported == "base":  # measured with the prompts: exported with them
            prompts.set_model_prompts(model, settings.query_prompt, settings.document_prompt)
        elif settings.lora and settings.lora_merge:
            lora.merge(model)
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
    return TrainResult(**summary, saved=saved, history=history)


def memory_advice(settings: TrainSettings, memory: dict[str, Any] | None = None) -> str:
    """The settings that reduce training memory, with their current values, in one line. ``memory``:
    the GradCache plan of an in-batch-negative loss (:func:`_plan_memory`); other losses take no
    ``mini_batch_size``, so it is advised only with one."""
    limit = f" (now {settings.max_seq_length})" if settings.max_seq_length else ""
    advice = []
    if memory is not None:
        now = (f"{memory['mini_batch_size']}, chosen from the memory available" if memory["source"] == "auto"
               else str(memory["mini_batch_size"]))
        advice.append(f"--loss-option mini_batch_size=2 (GradCache: the same batch in less memory; now {now})")
    advice += [f"lower --batch-size (now {settings.batch_size})", f"--max-seq-length{limit}"]
    if not settings.lora and settings.train_last_layers is None:
        advice.append("--lora or --train-last-layers 2 (fewer trained weights)")
    advice.append("or train a query adapter (embtune train-adapter), which needs far less")
    return ", ".join(advice)


def _plan_memory(strategy, model, train_rows, settings: TrainSettings) -> dict[str, Any] | None:
    """Choose how many texts a step embeds at once for a loss that can use GradCache, tell the strategy,
    say it in one line and return the record (None for losses that embed each batch at once anyway)."""
    target = getattr(strategy, "inner", strategy)  # a Matryoshka wrapper caches through its inner loss
    if not hasattr(target, "use_mini_batches"):
        return None
    from embtune_core.finetuning import memory_plan
    from embtune_core.finetuning.training_args import precision_flags

    requested = target.mini_batch_size
    resumed = memory_plan.recorded(settings.checkpoints) if settings.resume and requested == "auto" else None
    chosen = memory_plan.plan(model, batch_size=settings.batch_size,
                              longest_tokens=memory_plan.longest_tokens(model, train_rows),
                              device=str(model.device), dtype_bytes=2 if precision_flags(settings.precision) else 4,
                              requested=resumed or requested)
    if resumed:
        chosen = dataclasses.replace(chosen, source="resumed", reason=(
            f"the mini-batch of {resumed} the interrupted run's checkpoints were made with ({memory_plan.PLAN_FILE})"))
    target.use_mini_batches(chosen.mini_batch_size, chosen.gradient_cache)
    if target.gradient_cache != chosen.gradient_cache:  # cached-mnrl caches even when the batch fits
        chosen = dataclasses.replace(chosen, gradient_cache=True, reason=chosen.reason + f"; loss '{target.name}' "
                                     "always uses GradCache")
    log.info(memory_plan.describe(chosen))
    return chosen.to_dict()


def _index_aware(train_qa, settings: TrainSettings, val_qa=None, exclude_questions: Iterable[str] = ()):
    """The training set plus pseudo-queries over ``settings.index_corpus`` (embtune_core.finetuning.index_training),
    none of them a ``val_qa`` question or one of ``exclude_questions``."""
    from embtune_core.data.dataset import load_corpora
    from embtune_core.finetuning.index_training import check_mix, index_aware_dataset

    corpus = load_corpora(settings.index_corpus)  # only chunk texts: a bare corpus will do
    mix = check_mix(True if settings.index_pseudo_queries in (None, False) else settings.index_pseudo_queries,
                    "train.index_pseudo_queries")
    augmented, info = index_aware_dataset(train_qa, corpus, model=settings.model, mix=mix,
                                          ratio=settings.index_ratio, hard_negatives=settings.index_hard_negatives,
                                          seed=settings.seed,
                                          exclude_questions=[*(val_qa.queries.values() if val_qa is not None
                                                               else ()), *exclude_questions])
    log.info("index-aware training: %d pseudo-queries from %d index chunks join %d real training queries",
             info["pseudo_queries_kept"], info["index_chunks"], info["real_queries"])
    return augmented, info


def _sizes(qa, path, split: str | None = None) -> dict[str, Any]:
    from embtune_core.data.dataset import source_of

    return {
        "path": str(path),
        "source": source_of(path, split),
        "queries": len(qa.queries),
        "corpus": len(qa.corpus),
        "relevant_pairs": sum(len(v) for v in qa.relevant_docs.values()),
        "negatives": sum(len(v) for v in qa.negatives.values()),
    }

