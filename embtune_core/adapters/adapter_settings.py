"""The settings of query-adapter training: the ``[adapter]`` table, ``embtune train-adapter``'s flags
(generated from these fields, :mod:`embtune_core.cli_fields`) and the Python API's ``config``.

Declared here, without torch, so the command line can list them without importing the trainer
(:mod:`embtune_core.adapters.adapter_training`, which re-exports them).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from embtune_core.cli_fields import (
    non_negative_float,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_float_list,
    positive_int,
    positive_int_list,
    setting,
)
from embtune_core.errors import ConfigError
from embtune_core.settings import check_types, from_table

SelectionMetric = Literal["mrr@10", "hit_rate@1", "hit_rate@5", "hit_rate@10"]
IndexMetric = Literal["inner_product", "l2"]
INDEX_METRICS = ("inner_product", "l2")


@dataclass
class AdapterTrainingConfig:
    """Hyper-parameters; the defaults are those measured on the Lyft -> Uber split (bench/adapter_10k.py)."""

    adapter: str = setting("linear", "adapter type: linear, two-layer or a plugin's (default: linear)")
    # The adapter's own options, declared by its plugin (embtune_core.plugin_options); --hidden and
    # --activation are the two-layer adapter's.
    adapter_options: dict[str, Any] = setting(cli=False, default_factory=dict)
    epochs: int = setting(12, "maximum training epochs (default 12)", parse=non_negative_int)
    batch_size: int = setting(32, "questions per batch, never two with one positive (default 32)", parse=positive_int)
    lr: float = setting(1e-3, "AdamW learning rate", parse=positive_float)
    # decay pulls weights toward zero, not toward the identity; identity_reg does that
    weight_decay: float = setting(0.0, cli=False)
    temperature: float = setting(0.05, "softmax temperature of the contrastive loss", parse=positive_float)
    # Other temperatures to try: one adapter each (same seed and data); the held-out split chooses.
    temperature_grid: list[float] | None = setting(
        None, "other temperatures to try (one adapter each); the validation split chooses, e.g. 0.1,0.2",
        metavar="T1,T2,...", parse=positive_float_list)
    identity_reg: float = setting(1.0, "weight of the penalty toward the identity map", parse=non_negative_float)
    hard_negative_weight: float = setting(1.0, "weight of the mined hard-negative term", parse=non_negative_float)
    corpus_negatives: bool = setting(True, cli=False)
    max_corpus_negatives: int = setting(65536, cli=False)
    val_fraction: float = setting(0.2, "share of source documents held out (no --val)", parse=open_fraction)
    patience: int = setting(4, "epochs without validation gain before stopping", parse=non_negative_int)
    selection_metric: SelectionMetric = setting(
        "mrr@10", "mrr@10 (default), hit_rate@1, hit_rate@5, hit_rate@10", parse=str)
    # The metric of the index the adapter will search (see embtune_core.adapters.adapter_training).
    index_metric: IndexMetric = setting(
        "inner_product", "the metric of the index the adapter will search: inner_product (embtune's stores; "
                         "default) or l2 (FAISS IndexFlatL2: LangChain's FAISS.from_documents, DocsGPT; the "
                         "default with --host-vectors). Equal on unit-length vectors")
    # Adapted queries scaled to unit length; None: yes, unless index_metric is "l2" over vectors that are
    # not unit length (then the query's own scale matters, as the base model's does).
    normalize_output: bool | None = setting(None, cli=False)
    matryoshka_dims: list[int] | None = setting(  # train and select over these widths (adapter_training)
        None, "train over these embedding widths (Matryoshka loss on the query side) and keep only an epoch that "
              "matches or beats the base at every one of them, e.g. 384,256,128,64", metavar="D1,D2,...",
        parse=positive_int_list)
    seed: int = setting(42, "seed for initialisation, shuffling and the split (default 42)")
    device: str | None = setting(None, "torch device (default: cuda when available, else cpu)")

    def validate(self, path: str = "<config>") -> None:
        def bad(field_name: str, problem: str) -> ConfigError:
            return ConfigError(problem, path=path, field=f"adapter.{field_name}")

        # Types first: a TOML string where a number belongs would otherwise fail as a TypeError below.
        check_types(type(self), dataclasses.asdict(self), path=path, table="adapter")
        if self.epochs < 0:
            raise bad("epochs", "must be >= 0")
        if self.batch_size < 1:
            raise bad("batch_size", "must be >= 1")
        if not self.lr > 0:
            raise bad("lr", "must be > 0")
        if not 0 < self.temperature < math.inf:
            raise bad("temperature", "must be a finite number > 0")
        if self.temperature_grid is not None and (not self.temperature_grid
                                                  or any(not 0 < t < math.inf for t in self.temperature_grid)):
            raise bad("temperature_grid", "must be a non-empty list of finite numbers > 0")
        for name in ("identity_reg", "hard_negative_weight", "weight_decay"):
            if getattr(self, name) < 0:
                raise bad(name, "must be >= 0")
        if not 0 < self.val_fraction < 1:
            raise bad("val_fraction", "must be between 0 and 1")
        if self.index_metric not in INDEX_METRICS:
            raise bad("index_metric", f"must be one of {', '.join(INDEX_METRICS)}, not {self.index_metric!r}")
        if self.matryoshka_dims is not None and (not self.matryoshka_dims or any(d < 1 for d in self.matryoshka_dims)):
            raise bad("matryoshka_dims", "must be a non-empty list of positive integers")
        if self.matryoshka_dims is not None and len(set(self.matryoshka_dims)) != len(self.matryoshka_dims):
            raise bad("matryoshka_dims", "lists a width twice")
        # An option the adapter does not take, or a value it refuses, fails now, not after the embedding.
        from embtune_core.adapters.adapter_io import check_adapter_options

        check_adapter_options(self.adapter, self.adapter_options, path=path)

    @classmethod
    def from_mapping(cls, values: dict[str, Any], path: str = "<config>") -> AdapterTrainingConfig:
        """From a TOML ``[adapter]`` table: keys are the field names (``-`` or ``_``); unknown keys refused."""
        clean = {("adapter" if key == "type" else key.replace("-", "_")): value for key, value in values.items()}
        return from_table(cls, clean, path=path, table="adapter", also_known=("type",))  # type: the documented name
