"""Training settings and the sentence-transformers training arguments they become (as
sentence-transformers keeps ``SentenceTransformerTrainingArguments`` in ``training_args.py``).

:class:`TrainSettings` is the ``[train]`` table of a config file, the options of ``embtune train``
and the Python API's argument, validated by :func:`embtune_core.settings.from_table`;
:func:`training_arguments` maps it onto ``SentenceTransformerTrainingArguments`` (batch sampler,
evaluation and checkpoint steps, precision, DDP backend).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from embtune_core.errors import ConfigError
from embtune_core.models import DEFAULT_MODEL
from embtune_core.settings import check_types, field_names, from_table, refuse_unknown, wanted


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
    # After training, choose the retriever to deploy on --val (embtune_core.recommend) and write OUT.deploy;
    # what happens after training only, so it is no part of the run's fingerprint (checkpoints.run_fingerprint).
    recommend: bool = True
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    checkpoint_dir: str | None = None  # default: <out>.checkpoints next to the output
    eval_batch_size: int = wanted("a positive integer", 32)
    # Index-aware fine-tuning (embtune_core.index_training): pseudo-queries from these datasets' chunk texts.
    index_corpus: list[str] | None = None
    index_pseudo_queries: Any = None  # true (ict x1 + crop x1 per chunk) or {generator = per chunk}
    index_ratio: float = wanted("a positive number", 1.0)  # at most this many pseudo-queries per real query
    index_hard_negatives: int = wanted("an integer >= 0", 0)  # negatives mined by the base model for queries with none
    # Positives longer than the token limit: "off" (cut, the model's own behaviour) or "best" (the window of the
    # chunk the base model ranks first for the question; embtune_core.long_documents.best_window_positives).
    document_windows: Literal["off", "best"] = "off"
    split: str = "train"  # qrels split read when ``train`` is a BEIR folder (never test by default)
    val_split: str = "dev"  # qrels split read when ``val`` is a BEIR folder
    # LoRA (embtune_core.lora): low-rank adapters inside the transformer, base frozen
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float = 16
    lora_dropout: float = 0.1
    lora_target_modules: list[str] | None = None  # None: peft's default for the architecture
    lora_merge: bool = False  # fold the adapter into the weights and save a plain model folder
    # Prompts (E5/BGE-style instructions) prepended to queries / documents, in training and stored in
    # the model's config_sentence_transformers.json "prompts" (embtune_core.prompts)
    query_prompt: str | None = None
    document_prompt: str | None = None
    report_to: list[str] | str = "none"  # experiment tracking: none, tensorboard, wandb, mlflow (embtune_core.tracking)

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
        if self.index_corpus is not None and not self.index_corpus:
            raise bad("index_corpus", "must be a list of dataset paths")
        if self.index_pseudo_queries not in (None, False):
            from embtune_core.index_training import check_mix

            check_mix(self.index_pseudo_queries, "train.index_pseudo_queries", path)
            if not self.index_corpus:
                raise bad("index_pseudo_queries", "needs index_corpus (the datasets whose chunks the index holds)")
        if self.index_ratio <= 0:
            raise bad("index_ratio", "must be a positive number")
        # An option that would change nothing is refused, never ignored.
        for name, default in (("index_ratio", 1.0), ("index_hard_negatives", 0)):
            if getattr(self, name) != default and not self.index_corpus:
                raise bad(name, "applies to index-aware training only; give index_corpus (--index-corpus)")
        if not self.lora:
            for name, default in (("lora_rank", 8), ("lora_alpha", 16), ("lora_dropout", 0.1),
                                  ("lora_target_modules", None)):
                if getattr(self, name) != default:
                    raise bad(name, "applies to LoRA training only; add lora = true (--lora)")
        if self.index_hard_negatives < 0:
            raise bad("index_hard_negatives", "must be an integer >= 0")
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
        from embtune_core import lora, prompts, tracking

        lora.validate(self, path)
        prompts.validate(self, path, table="train")
        tracking.validate(self.report_to, path, field="train.report_to")

    @property
    def checkpoints(self) -> Path:
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        out = Path(self.out)
        return out.with_name(out.name + ".checkpoints")



def training_arguments(settings: TrainSettings, *, in_batch_negatives: bool, batches_per_epoch: int,
                       evaluate: bool, world_size: int, train_rows=None, text_groups: dict[str, str] | None = None,
                       router_mapping: dict[str, str] | None = None):
    """``SentenceTransformerTrainingArguments`` for ``settings``: checkpoints (and evaluations) once per
    epoch unless ``save_steps``, the best checkpoint by NDCG@10 kept when ``evaluate``, logging windows
    that divide the checkpoint interval, the every-row no-duplicates sampler for in-batch negatives
    (``text_groups``: texts that count as one, e.g. the windows of one chunk); ``router_mapping`` (column
    to route) for a model that starts with a ``Router``."""
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers

    from embtune_core import progress, prompts, tracking
    from embtune_core.sampler import every_row_batch_sampler

    steps_per_epoch = max(1, math.ceil(batches_per_epoch / world_size))
    save_steps = settings.save_steps or steps_per_epoch
    return SentenceTransformerTrainingArguments(
        output_dir=str(settings.checkpoints),
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,
        per_device_train_batch_size=settings.batch_size,
        per_device_eval_batch_size=settings.eval_batch_size,
        learning_rate=settings.lr,
        warmup_steps=settings.warmup_ratio,  # a float below 1 is a ratio of the total steps (transformers >= 5)
        weight_decay=settings.weight_decay,
        seed=settings.seed,
        data_seed=settings.seed,
        batch_sampler=((functools.partial(every_row_batch_sampler, groups=text_groups) if text_groups
                        else every_row_batch_sampler) if in_batch_negatives else BatchSamplers.BATCH_SAMPLER),
        eval_strategy="steps" if evaluate else "no",
        eval_steps=save_steps if evaluate else None,
        save_strategy="steps",
        save_steps=save_steps,
        save_total_limit=settings.save_total_limit,
        load_best_model_at_end=evaluate,
        metric_for_best_model="eval_ndcg@10" if evaluate else None,
        greater_is_better=True,
        # Logging windows that divide the checkpoint interval: a resumed run logs the same windows, so the
        # summary's train loss (mean of the logged losses, see checkpoints.mean_train_loss) is the same bits.
        logging_steps=math.gcd(settings.logging_steps, save_steps),
        logging_first_step=True,
        prompts=(prompts.column_prompts(train_rows, settings.query_prompt, settings.document_prompt)
                 if train_rows is not None else None),
        **({"router_mapping": router_mapping} if router_mapping else {}),
        **tracking.trainer_arguments(settings.report_to, settings.checkpoints),
        disable_tqdm=not progress.enabled(),
        dataloader_num_workers=0,
        dataloader_pin_memory=cuda_available(),
        ddp_backend=None if cuda_available() or world_size == 1 else "gloo",
        **precision_flags(settings.precision),
    )


def rank_and_world_size() -> tuple[int, int]:
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def precision_flags(choice: str) -> dict[str, bool]:
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


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()

