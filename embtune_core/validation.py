"""The one validator every settings table goes through (see :mod:`embtune_core.settings`): unknown
keys refused with "did you mean", single values read as lists of one, types checked against the
field's annotation, then the class's own ``validate(path)``.

Kept apart from the tables themselves so plugin options (:mod:`embtune_core.plugin_options`), which the
tables check, can use it without importing them.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

from embtune_core.errors import ConfigError

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
