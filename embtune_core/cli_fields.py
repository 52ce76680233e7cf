"""Command-line flags generated from a settings dataclass: one declaration for the CLI, TOML and Python.

As Hugging Face's ``HfArgumentParser`` builds flags from ``TrainingArguments``, :func:`add_fields`
adds one ``--flag`` per field of a settings dataclass (``batch_size`` -> ``--batch-size``), with
the field's type, choices and help from the field itself::

    @dataclass
    class MySettings:
        TABLE: ClassVar[str] = "my"
        epochs: int = setting(3, "passes over the training data")
        dims: list[int] | None = setting(None, "Matryoshka widths", metavar="D1,D2,...")

Every flag defaults to ``None`` (not given), so :func:`given` returns only what was typed and a
config table's value is not overridden by a default. The values then go through the same
validator as a TOML table (:func:`embtune_core.settings.from_table`), so a bad value reads the same
from the command line and from a file, naming the flag (:class:`embtune_core.commands.Sources`).

Types map to flags as follows: ``bool`` is a switch (``--x`` / ``--no-x``); ``int``, ``float``
and ``str`` take one value; a ``Literal`` lists its choices; ``list[int|float|str]`` takes comma
separated values (a repeated flag adds to them); ``dict`` takes ``KEY=VALUE`` pairs (repeatable, numbers and booleans parsed).
Field metadata ``cli=False`` keeps a field out of the CLI (a TOML-only setting); ``flag`` renames
the flag; ``metavar`` names its value.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any, Literal


def setting(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
            metavar: str | None = None, cli: bool = True, wanted: str | None = None,
            default_factory: Any = dataclasses.MISSING) -> Any:
    """A settings field with its CLI help (and optionally its flag name, metavar, or no flag at all)."""
    metadata = {"help": help, "flag": flag, "metavar": metavar, "cli": cli}
    if wanted:
        metadata["wanted"] = wanted
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def flag_name(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _strip_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        lists = [a for a in args if typing.get_origin(a) is list]
        return lists[0] if lists else args[0]  # "str | list[str]": the list form on the command line
    return tp


def _scalar(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _list_of(element: Any, flag: str):
    def parse(text: str) -> list:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        try:
            return [element(p) if element in (int, float, str) else _scalar(p) for p in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be comma-separated {getattr(element, '__name__', 'value')}s, "
                                             f"got '{text}'") from None

    parse.__name__ = f"{getattr(element, '__name__', 'value')} list"
    return parse


class _Extend(argparse.Action):
    """A list flag: comma-separated values, and a repeated flag adds to the list (``--x a,b --x c``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = getattr(namespace, self.dest, None) or []
        setattr(namespace, self.dest, [*current, *values])


def _pairs(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        key, sep, value = part.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"must be KEY=VALUE pairs, got '{text}'")
        out[key.strip()] = _scalar(value.strip())
    return out


def _number(convert):
    def parse(text: str):
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if convert is int else 'a number'}, "
                                             f"got '{text}'") from None

    parse.__name__ = convert.__name__
    return parse


def _help(field: dataclasses.Field, tp: Any) -> str:
    text = field.metadata.get("help", "")
    if field.default is not dataclasses.MISSING and field.default is not None and not isinstance(field.default, bool):
        text += f" (default: {field.default})"
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
        if value:
            text += f" (default: {','.join(map(str, value)) if isinstance(value, list) else value})"
    return text


def add_fields(parser: argparse.ArgumentParser, cls: type, *, skip: Iterable[str] = ()) -> list[str]:
    """Add a flag per field of ``cls`` (module docstring); returns the field names that got one."""
    hints = typing.get_type_hints(cls)
    added = []
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.metadata.get("cli", True) or field.name.startswith("_"):
            continue
        tp = _strip_optional(hints[field.name])
        origin = typing.get_origin(tp)
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": _help(field, tp)}
        if field.metadata.get("metavar"):
            kwargs["metavar"] = field.metadata["metavar"]
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        elif origin is list:
            element = (typing.get_args(tp) or (str,))[0]
            kwargs["type"] = _list_of(_strip_optional(element), flag_name(field))
            kwargs["action"] = _Extend
        elif origin is dict or tp is dict:
            kwargs["type"] = _pairs
            kwargs.setdefault("metavar", "KEY=VALUE,...")
        elif tp in (int, float):
            kwargs["type"] = _number(tp)
        parser.add_argument(flag_name(field), **kwargs)
        added.append(field.name)
    return added


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line, as a table for ``from_table``."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def fields_without_flag(parser: argparse.ArgumentParser, cls: type, *, allowed: Iterable[str] = ()) -> list[str]:
    """Flags of ``parser`` whose destination is not a field of ``cls`` (nor in ``allowed``): a check that
    every setting is declared once, in the dataclass."""
    names = {f.name for f in dataclasses.fields(cls)} | set(allowed) | {"help"}
    return sorted(a.dest for a in parser._actions if a.dest not in names)
