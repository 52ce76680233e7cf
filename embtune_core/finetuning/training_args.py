"""Training settings and the sentence-transformers training arguments they become (as
sentence-transformers keeps ``SentenceTransformerTrainingArguments`` in ``training_args.py``).

:class:`TrainSettings` is the ``[train]`` table of a config file, the options of ``embtune train``
and the Python API's argument, validated by :func:`embtune_core.settings.from_table`;
:func:`training_arguments` maps it onto ``SentenceTransformerTrainingArguments`` (batch sampler,
evaluation and checkpoint steps, precision, DDP backend).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from embtune_core.cli_fields import (
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
    positive_int_list,
    setting,
)
from embtune_core.encoders.model_names import DEFAULT_MODEL
from embtune_core.encoders.prompts import DOCUMENT_PROMPT_HELP, QUERY_PROMPT_HELP
from embtune_core.errors import ConfigError
from embtune_core.settings import check_types, field_names, from_table, refuse_unknown


def _names(text: str) -> list[str]:
    """``query,value`` -> ["query", "value"] (an argparse type: a bad value is exit 2 naming the flag)."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must be comma-separated module names, got '{text}'")
    return names


def _mix(text: str) -> dict[str, int]:
    """``ict=1,crop=2`` -> {"ict": 1, "crop": 2} (an argparse type: a bad value is exit 2 naming the flag)."""
    mix = {}
    for item in text.split(","):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"must be GENERATOR=N[,GENERATOR=N...] with N >= 1, got '{text}'")
        mix[name.strip()] = int(count)
    return mix


@dataclass
class TrainSettings:
    """Everything one training run depends on; the ``[train]`` table of a config file holds the same keys,
    and ``embtune train``'s flags are generated from these fields (:mod:`embtune_core.cli_fields`)."""

    TABLE: ClassVar[str] = "train"
    train: str = setting(help="training dataset")
    out: str = setting(help="output model directory")
    val: str | None = setting(None, "validation dataset (evaluation during training, best checkpoint)")
    model: str = setting(DEFAULT_MODEL, "base model name or directory (default: packaged all-MiniLM-L6-v2)")
    loss: str = setting("mnrl", "loss strategy")
    loss_options: dict[str, Any] = setting(
        help="option for the loss strategy, e.g. mini_batch_size=16 (repeatable)", flag="--loss-option",
        pairs=True, default_factory=dict)
    matryoshka_dims: list[int] | None = setting(
        None, "wrap the loss in MatryoshkaLoss over these dimensions, e.g. 384,256,128,64", metavar="D1,D2,...",
        parse=positive_int_list)
    # Defaults that won on the shared Lyft -> Uber split (bench/train_10k.py): 3 epochs, batch 64, lr 5e-5.
    # The batch sampler caps a batch at the distinct texts available (embtune_core.finetuning.sampler).
    epochs: float = setting(3.0, "passes over the training data (default: 3; fractions allowed)",
                            wanted="a positive number", parse=positive_float)
    batch_size: int = setting(64, "pairs per batch; more in-batch negatives (default: 64, fewer when the data has "
                                  "fewer distinct texts)", wanted="a positive integer", parse=positive_int)
    lr: float = setting(5e-5, "learning rate", wanted="a positive number", parse=positive_float)
    warmup_ratio: float = setting(0.1, "share of steps for linear warm-up", wanted="a number in [0, 1)",
                                  parse=fraction)
    weight_decay: float = setting(0.01, cli=False)
    seed: int = setting(42, "random seed for data order and initialisation")
    max_steps: int = setting(-1, "stop after this many steps (overrides --epochs; default: -1, no limit)")
    save_steps: int | None = setting(None, "checkpoint (and evaluate) every N steps (default: each epoch)",
                                     parse=positive_int)
    save_total_limit: int = setting(2, wanted="a positive integer", cli=False)
    logging_steps: int = setting(10, wanted="a positive integer", cli=False)
    resume: bool = setting(False, "continue from the newest checkpoint in the checkpoint folder")
    # Partial fine-tuning (one of train_last_layers, freeze_layers, lora); None trains every layer.
    train_last_layers: int | None = setting(
        None, "partial fine-tuning: train only the last N transformer layers (+ pooling, heads)", metavar="N",
        parse=non_negative_int, group="layers")
    freeze_layers: int | None = setting(
        None, "partial fine-tuning: freeze the embeddings and the first N transformer layers", metavar="N",
        parse=non_negative_int, group="layers")
    # Tokens read in training; the export keeps the model's own (below).
    max_seq_length: int | None = setting(
        None, "tokens read of each text in training (default: the model's own); the exported model keeps the "
              "model's own limit when that is longer", parse=positive_int)
    export_max_seq_length: int | None = setting(
        None, "token limit the exported model carries (default: the larger of the model's own and "
              "--max-seq-length)", parse=positive_int)
    keep_if_worse: bool = setting(
        False, "export the trained model even when it scores below the base model on --val (default: the base "
               "model is exported unchanged, and the run says so)")
    # After training, choose the retriever to deploy on --val (embtune_core.workflow.recommend) and write OUT.deploy;
    # what happens after training only, so it is no part of the run's fingerprint (checkpoints.run_fingerprint).
    recommend: bool = setting(
        True, "after training, compare the base model, the fine-tune, BM25, their tuned hybrids and sparse-dense "
              "vectors on --val and write the winner to OUT.deploy (default: on)")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = setting("auto", "auto: bf16/fp16 on a GPU, fp32 on CPU")
    checkpoint_dir: str | None = setting(None, "checkpoints and loss log (default: OUT.checkpoints)")
    eval_batch_size: int = setting(32, wanted="a positive integer", cli=False)
    # Index-aware fine-tuning (embtune_core.finetuning.index_training): pseudo-queries from these datasets' chunk texts.
    index_corpus: list[str] | None = setting(
        None, "index-aware fine-tuning: LLM-free pseudo-queries (inverse cloze + crops) from the chunk texts of "
              "this corpus (the documents your index will hold; no questions or labels are read) join the "
              "training questions (repeatable). Any dataset, or a bare corpus: BEIR corpus.jsonl or folder, "
              "{id, text} JSONL, LlamaIndex JSON with only corpus", metavar="CORPUS", append=True)
    # true (ict x1 + crop x1 per chunk) or {generator = per chunk}
    index_pseudo_queries: Any = setting(None, "pseudo-queries per index chunk by generator (default: ict=1,crop=1)",
                                        metavar="GEN=N,...", parse=_mix)
    index_ratio: float = setting(1.0, "at most this many pseudo-queries per real training query (default: 1)",
                                 wanted="a positive number", parse=positive_float)
    index_hard_negatives: int = setting(
        0, "mine N hard negatives over the index with the base model (false-negative guard) for every training "
           "query that has none (default: 0)", wanted="an integer >= 0", metavar="N", parse=non_negative_int)
    # Positives longer than the token limit: "off" (cut, the model's own behaviour) or "best" (the window of the
    # chunk the base model ranks first for the question; embtune_core.encoders.long_documents.best_window_positives).
    document_windows: Literal["off", "best"] = setting(
        "off", "positives longer than the token limit: off (cut at the limit; default) or best (split into windows; "
               "each question trains on the window the base model ranks first)")
    split: str = setting("train", "qrels split read when --train is a BEIR folder (default: train)")
    val_split: str = setting("dev", "qrels split read when --val is a BEIR folder (default: dev)")
    # LoRA (embtune_core.encoders.lora): low-rank adapters inside the transformer, base frozen
    lora: bool = setting(False, "LoRA: train low-rank adapters inside every transformer layer, base weights frozen "
                                "(needs peft: pip install 'embtune[lora]')", group="layers")
    lora_rank: int = setting(8, "LoRA rank r (default: 8)", metavar="R", parse=positive_int)
    lora_alpha: float = setting(16, "LoRA scaling alpha (default: 16)", parse=positive_float)
    lora_dropout: float = setting(0.1, "dropout on the LoRA path (default: 0.1)", parse=fraction)
    lora_target_modules: list[str] | None = setting(  # None: peft's default for the architecture
        None, "linear layers to adapt, e.g. query,key,value,dense (default: peft's choice for the architecture, "
              "query,value for BERT)", metavar="NAME[,NAME...]", parse=_names)
    lora_merge: bool = setting(False, "with --lora: fold the adapter into the weights and write a plain model folder "
                                      "(loads without peft: DocsGPT, LangChain, ONNX export)", flag="--merge")
    # Prompts (E5/BGE-style instructions) prepended to queries / documents, in training and stored in
    # the model's config_sentence_transformers.json "prompts" (embtune_core.encoders.prompts)
    query_prompt: str | None = setting(None, QUERY_PROMPT_HELP, metavar="TEXT")
    document_prompt: str | None = setting(None, DOCUMENT_PROMPT_HELP, metavar="TEXT")
    # experiment tracking (embtune_core.finetuning.tracking); the flag's value is kept as typed ("tensorboard,wandb")
    report_to: list[str] | str = setting(
        "none", "experiment tracking: none (default), tensorboard (event files in the checkpoint folder's runs/), "
                "wandb, mlflow; loss_log.jsonl is written either way", metavar="NAME[,NAME]", parse=str)

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
            from embtune_core.finetuning.index_training import check_mix

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
        from embtune_core.encoders import lora, prompts
        from embtune_core.finetuning import tracking

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

    from embtune_core.encoders import prompts
    from embtune_core.finetuning import tracking
    from embtune_core.finetuning.sampler import every_row_batch_sampler
    from embtune_core.runtime import progress

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

