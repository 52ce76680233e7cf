"""One typed settings model per configuration table, and the one validator every table goes through.

A table of a TOML file (``[train]``, ``[adapter]``, ``[evaluate]``...), a command's options and a
Python call all build the same dataclass with :func:`from_table`, which

* refuses an unknown key in one line naming the file and ``table.key``, with the closest known key
  ("did you mean") when one is close (:func:`refuse_unknown`);
* reads a single value where a list is expected as a list of one (``index_corpus = "x.json"`` is
  ``["x.json"]``, ``dims = 256`` is ``[256]``; :func:`one_element_lists`);
* refuses a value whose type is not the field's annotation (``epochs = "3"``), naming the field
  (:func:`check_types`); an integer passes where a float is expected, a boolean only where a
  boolean is, a ``Literal`` lists its choices;
* then runs the class's own ``validate(path)`` for ranges and relations between fields.

Tables whose other keys are options of a plugin (``[chunk]``: the chunker's, ``[generate]``: the
generator's, ``[mine]``: the miner's) check those keys against what the plugin accepts
(:func:`check_plugin_options`, from each plugin's declared options). Every error is a :class:`~embtune_core.errors.ConfigError` (exit 3);
a command re-blames it on the flag it came from (:class:`embtune_core.commands.Sources`).
"""

from __future__ import annotations

import typing
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from embtune_core.cli_fields import (
    fraction,
    non_negative_float,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_int,
    positive_int_list,
    setting,
)
from embtune_core.errors import ConfigError, EmbtuneError
from embtune_core.validation import (  # noqa: F401 - the validator's names, public here as before
    PathLike,
    _describe,
    _list_element,
    accepts,
    as_table,
    check_types,
    did_you_mean,
    field_names,
    from_table,
    one_element_lists,
    refuse_unknown,
    wanted,
)


# --- plugin options (declared by each plugin: embtune_core.plugin_options) -------------------------
def plugin_option_names(family: str, name: str) -> set[str] | None:
    """The options a plugin takes (its declaration, else its factory's signature), or None when
    neither tells (``**options`` and no declaration)."""
    from embtune_core.plugin_options import option_names

    return option_names(family, name)


def check_plugin_options(family: str, name: str, options: dict[str, Any], *, path: PathLike | None,
                         table: str, fixed: Iterable[str] = ()) -> None:
    """Refuse an option the plugin does not declare (``[chunk] chunk_sise``), a value of the wrong type
    or one its declaration's ``validate()`` refuses, naming ``table.key``
    (:func:`embtune_core.plugin_options.check_options`)."""
    from embtune_core.plugin_options import check_options

    check_options(family, name, options, path=path, table=table, fixed=fixed)


# --- the tables of ``embtune run`` that have no module of their own ---------------------------------
Corpus = Literal["validation", "index", "both"]
Baseline = Literal["bm25", "hybrid"]
SplitBy = Literal["source", "page", "chunk"]


@dataclass
class RunSettings:
    """``[run]``: the run folder is ``out/name`` next to the config; ``seed`` seeds every stage."""

    TABLE: typing.ClassVar[str] = "run"
    name: str | None = None
    out: str = "runs"
    seed: int = 42


@dataclass
class DataSettings:
    """``[data]``: documents (``inputs``, ``val_inputs``) or existing datasets (``train``, ``val``)."""

    TABLE: typing.ClassVar[str] = "data"
    inputs: str | list[str] | None = None
    val_inputs: str | list[str] | None = None
    skip_bad: bool = False
    train: str | None = None
    val: str | None = None
    train_split: str = "train"
    val_split: str = "test"

    def validate(self, path: PathLike | None = "<config>") -> None:
        if (self.inputs is None) == (self.train is None):
            raise ConfigError("give either inputs (documents) or train (an existing dataset)", path=path,
                              field="data")


@dataclass
class SplitSettings:
    """``[split]`` (and build-dataset's split options): whole ``split_by`` units go to one side."""

    TABLE: typing.ClassVar[str] = "split"
    val_fraction: float = 0.2
    split_by: SplitBy = "source"
    seed: int | None = None  # default: the run's seed

    def validate(self, path: PathLike | None = "<config>") -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"must be in [0, 1), not {self.val_fraction}", path=path,
                              field=f"{self.TABLE}.val_fraction")


@dataclass
class EvaluateSettings:
    """``[evaluate]`` and ``embtune evaluate``'s options: what is measured, and how local models run."""

    TABLE: typing.ClassVar[str] = "evaluate"
    dims: list[int] | None = setting(
        None, "embedding dimensions to evaluate (Matryoshka truncation); default: each system's full",
        metavar="D[,D...]", parse=positive_int_list)
    k: list[int] = setting(help="cut-offs for LlamaIndex hit rate@k and MRR@k", metavar="K[,K...]",
                           parse=positive_int_list, cli_default=[5], default_factory=lambda: [1, 5, 10])
    baselines: list[Baseline] = setting(cli=False, default_factory=list)
    corpus: Corpus = setting("validation", cli=False)
    batch_size: int | None = setting(None, "encoder batch size", parse=positive_int)
    device: str | None = setting(None, "device for local models (cpu, cuda, mps)")
    precision: Literal["fp32", "bf16", "fp16"] | None = setting(
        None, "dtype local models run in (default: fp32); logged with the device when a model loads")
    max_seq_length: int | None = setting(
        None, "token limit of local sentence-transformers models (default: each model's own); chunks longer than "
              "the limit are cut, so raise it for long chunks", metavar="TOKENS", parse=positive_int)
    confidence: float = setting(0.95, "confidence level of the intervals", parse=open_fraction)
    resamples: int = setting(2000, "bootstrap resamples", parse=positive_int)
    permutations: int = setting(10000, "randomisation-test permutations", parse=positive_int)

    def validate(self, path: PathLike | None = "<config>") -> None:
        for name in ("dims", "k"):
            value = getattr(self, name)
            if value is not None and (not value or any(v < 1 for v in value)):
                raise ConfigError("must be a list of positive integers", path=path, field=f"evaluate.{name}")
        for name in ("batch_size", "max_seq_length", "resamples", "permutations"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError("must be a positive integer", path=path, field=f"evaluate.{name}")
        if not 0 < self.confidence < 1:
            raise ConfigError("must be a number between 0 and 1", path=path, field="evaluate.confidence")


@dataclass
class ExportSettings:
    """``[export]``: ``zip`` also writes the fine-tuned model as one zip archive."""

    TABLE: typing.ClassVar[str] = "export"
    zip: bool = True


@dataclass
class DatasetSettings:
    """``embtune build-dataset``'s options (its flags are generated from these fields), and the ``[dataset]``
    table of its ``--config``."""

    TABLE: typing.ClassVar[str] = "dataset"
    inputs: list[str] = setting(help="document files and/or folders", positional=True, default_factory=list)
    out: str | None = setting(None, "output folder for train.json and val.json", aliases=("-o",))
    chunker: str = setting("sentence", "chunker plugin (default: sentence; also: recursive)")
    chunk_size: int | None = setting(None, "tokens (sentence: 1024) or characters (recursive: 1000)",
                                     parse=positive_int)
    chunk_overlap: int | None = setting(None, "overlap (sentence: 20 tokens; recursive: 200 chars)",
                                        parse=non_negative_int)
    model: str | None = setting(None, "embedding model whose tokenizer the sentence chunker counts with "
                                      "(default: sentence-transformers/all-MiniLM-L6-v2)")
    generator: str = setting("ict", "question generator (default: ict; also: openai, crop, local-llm)")
    llm_model: str | None = setting(None, "chat model for --generator openai (default: gpt-4o-mini)")
    base_url: str | None = setting(None, "OpenAI-compatible endpoint, e.g. http://localhost:11434/v1")
    api_key_env: str | None = setting(None, "environment variable holding the API key (default: OPENAI_API_KEY)")
    questions_per_chunk: int | None = setting(None, "questions per chunk (openai: 2; ict/crop: 1)",
                                              parse=positive_int)
    concurrency: int = setting(8, "LLM requests in flight (default: 8)", parse=positive_int)
    max_retries: int = setting(6, "retries per LLM call (default: 6)", parse=non_negative_int)
    timeout: float = setting(60.0, "seconds per LLM request (default: 60)", parse=positive_float)
    prompt: str | None = setting(None, cli=False)  # the template itself ([dataset] only; --prompt-file on the CLI)
    prompt_file: str | None = setting(None, "prompt template with {context_str} and {num_questions_per_chunk}")
    temperature: float | None = setting(None, "LLM sampling temperature (default: server's)",
                                        parse=non_negative_float)
    generator_options: dict[str, Any] = setting(cli=False, default_factory=dict)
    val_fraction: float = setting(0.2, "share of queries for validation (default: 0.2; 0: none)", parse=fraction)
    split_by: SplitBy = setting("source", "unit kept on one side of the split (default: source)")
    seed: int = setting(0, "seed for generators and the split (default: 0)")
    skip_bad: bool = setting(False, "skip unreadable files (listed at the end) instead of stopping")
    work_dir: str | None = setting(None, "journal folder for resuming (default: OUT/.work)")

    def validate(self, path: PathLike | None = "<config>") -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"must be in [0, 1), not {self.val_fraction}", path=path, field="dataset.val_fraction")


@dataclass
class PluginTable:
    """A table naming a plugin (``chunker``, ``generator``, ``miner``) whose other keys are its options."""

    name: str
    options: dict[str, Any]
    enabled: bool = True
    encoder: str | None = None  # [mine] only


PLUGIN_TABLES = {  # table -> (key naming the plugin, family, default, keys of the table itself)
    "chunk": ("chunker", "chunkers", "sentence", ()),
    "generate": ("generator", "question_generators", "ict", ()),
    "mine": ("miner", "negative_miners", "embedding-rank", ("enabled", "encoder")),
}


def plugin_table(table: str, values: dict[str, Any], *, path: PathLike | None = "<config>",
                 also_known: Iterable[str] = ()) -> PluginTable:
    """``[chunk]``, ``[generate]`` or ``[mine]`` as its plugin's name and options, each key checked;
    ``also_known`` as in :func:`from_table`."""
    key, family, default, own = PLUGIN_TABLES[table]
    options = dict(values)
    name = options.pop(key, default)
    fixed = {k: options.pop(k) for k in own if k in options}
    if not isinstance(name, str):
        raise ConfigError(f"must be a string, not {name!r}", path=path, field=f"{table}.{key}")
    check_types(PluginTable, fixed, path=path, table=table)
    from embtune_core.plugins import get_registry

    try:
        get_registry().get(family, str(name))
    except EmbtuneError as exc:
        raise type(exc)(exc.problem, path=path, field=f"{table}.{key}") from None
    check_plugin_options(family, str(name), options, path=path, table=table, fixed=(key, *own, *also_known))
    return PluginTable(str(name), options, **fixed)
