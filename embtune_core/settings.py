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
(:func:`check_plugin_options`). Every error is a :class:`~embtune_core.errors.ConfigError` (exit 3);
a command re-blames it on the flag it came from (:class:`embtune_core.commands.Sources`).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from embtune_core.errors import ConfigError, EmbtuneError

T = typing.TypeVar("T")
PathLike = str | Path


# --- the one validator ----------------------------------------------------------------------------
def did_you_mean(key: str, known: Iterable[str]) -> str:
    """``" (did you mean 'chunk_size'?)"`` when a known key is close to ``key``, else ``""``."""
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def refuse_unknown(values: dict[str, Any], known: Iterable[str], *, path: PathLike | None = "<config>",
                   table: str) -> None:
    """Refuse keys of ``values`` not in ``known``: ``file: table.key: unknown key(s) key; did you mean...``."""
    known = sorted(known)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(unknown)}{did_you_mean(unknown[0], known)}; known: "
                          f"{', '.join(known)}", path=path, field=f"{table}.{unknown[0]}" if table else unknown[0])


def _describe(tp: Any) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin is list:
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin is dict:
        return "a table"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args if a is not type(None))
    return getattr(tp, "__name__", str(tp))


def accepts(tp: Any, value: Any) -> bool:
    """Whether ``value`` (as TOML gives it) has type ``tp``; ``Any`` and unknown types accept anything."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if origin is Literal:
        return value in args and not isinstance(value, bool)
    if origin in (typing.Union, types.UnionType):
        return any(accepts(a, value) for a in args)
    if origin is list:
        return isinstance(value, (list, tuple)) and (not args or all(accepts(args[0], v) for v in value))
    if origin is dict:
        return isinstance(value, dict)
    return True


def check_types(cls: type, values: dict[str, Any], *, path: PathLike | None = "<config>", table: str) -> None:
    """Refuse a value whose type is not its field's annotation, naming ``table.field``."""
    hints = typing.get_type_hints(cls)
    wanted = {f.name: f.metadata.get("wanted") for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else {}
    for key, value in values.items():
        tp = hints.get(key)
        if tp is not None and not accepts(tp, value):
            raise ConfigError(f"must be {wanted.get(key) or _describe(tp)}, not {value!r}", path=path,
                              field=f"{table}.{key}" if table else key)


def _list_element(tp: Any) -> Any:
    """The element type of a list-typed annotation (``list[str] | None`` -> ``str``), else None."""
    if typing.get_origin(tp) is list:
        args = typing.get_args(tp)
        return args[0] if args else Any
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if typing.get_origin(arg) is list:
                return _list_element(arg)
    return None


def one_element_lists(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with a single value given where ``cls`` expects a list turned into a list of one
    (TOML ``index_corpus = "x.json"`` means ``["x.json"]``); a value the field accepts as it is, or
    one its list could not hold, is left for :func:`check_types` to judge."""
    hints = typing.get_type_hints(cls)
    out = dict(values)
    for key, value in values.items():
        tp = hints.get(key)
        element = _list_element(tp) if tp is not None else None
        if element is not None and not accepts(tp, value) and not isinstance(value, (list, tuple, dict)) \
                and accepts(element, value):
            out[key] = [value]
    return out


def wanted(description: str, default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field whose type error reads ``must be <description>`` (``a positive number``)."""
    return field(default=default, metadata={"wanted": description}, **kwargs)


def field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def from_table(cls: type[T], values: dict[str, Any], *, path: PathLike | None = "<config>",
               table: str | None = None, also_known: Iterable[str] = ()) -> T:
    """``cls(**values)`` after refusing unknown keys and wrong types, then ``validate(path)`` if it has one.
    ``also_known``: keys the table holds for someone else (taken out before), named in "did you mean"."""
    table = table if table is not None else getattr(cls, "TABLE", "")
    refuse_unknown(values, {*field_names(cls), *also_known}, path=path, table=table)
    values = one_element_lists(cls, values)
    check_types(cls, values, path=path, table=table)
    settings = cls(**values)
    validate = getattr(settings, "validate", None)
    if validate is not None:
        validate(path)
    return settings


def as_table(settings: Any) -> dict[str, Any]:
    """A settings object as the table it came from (for ``--print-config`` and manifests)."""
    return dataclasses.asdict(settings)


# --- plugin options -------------------------------------------------------------------------------
def plugin_option_names(family: str, name: str) -> set[str] | None:
    """The keyword options a plugin's factory takes, or None when it takes any (``**options``)."""
    from embtune_core.plugins import get_registry

    factory = get_registry().get(family, name).factory
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def check_plugin_options(family: str, name: str, options: dict[str, Any], *, path: PathLike | None,
                         table: str, fixed: Iterable[str] = ()) -> None:
    """Refuse an option the plugin does not take (``[chunk] chunk_sise``), naming ``table.key``.

    A factory with a closed signature is checked by its parameters; one that takes ``**options`` is
    built once with them and an "unexpected keyword argument" becomes this one-line error.
    """
    accepted = plugin_option_names(family, name)
    if accepted is not None:
        refuse_unknown(options, {*accepted, *fixed}, path=path, table=table)
        from embtune_core.plugins import get_registry

        factory = get_registry().get(family, name).factory
        try:
            hints = typing.get_type_hints(factory.__init__ if isinstance(factory, type) else factory)
        except Exception:  # noqa: BLE001 - annotations a plugin's module cannot resolve: names checked only
            hints = {}
        for key, value in options.items():
            if key in hints and not accepts(hints[key], value):
                raise ConfigError(f"must be {_describe(hints[key])}, not {value!r}", path=path,
                                  field=f"{table}.{key}")
        return
    from embtune_core.plugins import get_registry

    try:
        get_registry().create(family, name, **options)
    except TypeError as exc:
        text = str(exc)
        if "unexpected keyword argument" not in text:
            raise
        key = text.rsplit("'", 2)[-2] if text.count("'") >= 2 else text
        accepted = _built_option_names(family, name)
        known = (f"{did_you_mean(key, {*accepted, *fixed})}; known: {', '.join(sorted({*accepted, *fixed}))}"
                 if accepted is not None else "")
        raise ConfigError(f"unknown key(s) {key}: the {name} {family.rstrip('s').replace('_', ' ')} does not "
                          f"take it{known}", path=path, field=f"{table}.{key}") from None
    except EmbtuneError:
        pass  # a bad value: the stage reports it where it builds the plugin


def _built_option_names(family: str, name: str) -> set[str] | None:
    """The options a plugin whose factory takes ``**options`` (a lazy wrapper) accepts: the keyword
    parameters of the class it builds with no options, or None when that cannot be told."""
    from embtune_core.plugins import get_registry

    try:
        built = get_registry().create(family, name)
        parameters = inspect.signature(type(built).__init__).parameters.values()
    except Exception:  # noqa: BLE001 - a plugin that needs options to build: no list, the error stands
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"}


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
    dims: list[int] | None = None
    k: list[int] = field(default_factory=lambda: [1, 5, 10])
    baselines: list[Baseline] = field(default_factory=list)
    corpus: Corpus = "validation"
    batch_size: int | None = None
    device: str | None = None
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    max_seq_length: int | None = None
    confidence: float = 0.95
    resamples: int = 2000
    permutations: int = 10000

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
    """``embtune build-dataset``'s options, and the ``[dataset]`` table of its ``--config``."""

    TABLE: typing.ClassVar[str] = "dataset"
    inputs: list[str] = field(default_factory=list)
    out: str | None = None
    chunker: str = "sentence"
    chunk_size: int | None = None
    chunk_overlap: int | None = None
    model: str | None = None
    generator: str = "ict"
    llm_model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None
    questions_per_chunk: int | None = None
    concurrency: int = 8
    max_retries: int = 6
    timeout: float = 60.0
    prompt: str | None = None
    prompt_file: str | None = None
    temperature: float | None = None
    generator_options: dict[str, Any] = field(default_factory=dict)
    val_fraction: float = 0.2
    split_by: SplitBy = "source"
    seed: int = 0
    skip_bad: bool = False
    work_dir: str | None = None

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
