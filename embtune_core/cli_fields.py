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
the flag; ``metavar`` names its value; ``parse`` is the argparse type that checks a typed value (a bad
one is a usage error naming the flag, exit 2, before anything runs); ``append`` makes a list flag take
one whole value per use (paths: no comma splitting); ``pairs`` makes a dict flag take one
``KEY=VALUE`` per use, added to the config table's dict (``merge``); ``group`` puts flags of one
name into a mutually exclusive group; ``required`` makes argparse require the flag (``positional``:
an argument without a flag); ``aliases``: short forms (``-o``); ``cli_default``
is the command line's default where it differs from the table's (shown in the help, applied by
:func:`from_command_line`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable
from typing import Any, Literal


def setting(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
            metavar: str | None = None, cli: bool = True, wanted: str | None = None,
            default_factory: Any = dataclasses.MISSING, parse: Any = None, append: bool = False,
            pairs: bool = False, group: str | None = None, required: bool = False,
            cli_default: Any = dataclasses.MISSING, positional: bool = False,
            aliases: tuple[str, ...] = ()) -> Any:
    """A settings field with its CLI help (and optionally its flag name, metavar, or no flag at all);
    the keywords are described in the module docstring."""
    metadata = {"help": help, "flag": flag, "metavar": metavar, "cli": cli}
    if wanted:
        metadata["wanted"] = wanted
    for key, value in (("parse", parse), ("append", append), ("pairs", pairs), ("group", group),
                       ("required", required), ("positional", positional), ("aliases", aliases)):
        if value:
            metadata[key] = value
    if cli_default is not dataclasses.MISSING:
        metadata["cli_default"] = cli_default
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
    if "default:" in text:
        return text  # the help words the default itself (e.g. "the model's own")
    if "cli_default" in field.metadata:
        value = field.metadata["cli_default"]
        return text + f" (default: {','.join(map(str, value)) if isinstance(value, list) else value})"
    if field.default is not dataclasses.MISSING and field.default is not None and not isinstance(field.default, bool):
        text += f" (default: {field.default})"
    elif field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        value = field.default_factory()  # type: ignore[misc]
        if value:
            text += f" (default: {','.join(map(str, value)) if isinstance(value, list) else value})"
    return text


class _Pairs(argparse.Action):
    """A dict flag: one ``KEY=VALUE`` per use, collected into one dict (``--loss-option a=1 --loss-option b=x``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        current = dict(getattr(namespace, self.dest, None) or {})
        current.update(values)
        setattr(namespace, self.dest, current)


def _pair(text: str) -> dict[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got '{text}'")
    return {key.strip(): _scalar(value.strip())}


def add_fields(parser: argparse.ArgumentParser, cls: type, *, skip: Iterable[str] = (),
               groups: dict[str, Any] | None = None) -> list[str]:
    """Add a flag per field of ``cls`` (module docstring); returns the field names that got one.
    ``groups`` (name -> argparse group) lets the fields of several classes share a mutually exclusive group."""
    hints = typing.get_type_hints(cls)
    groups = {} if groups is None else groups
    added = []
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.metadata.get("cli", True) or field.name.startswith("_"):
            continue
        tp = _strip_optional(hints[field.name])
        origin = typing.get_origin(tp)
        if field.metadata.get("positional"):  # an argument, not a flag (a list: any number of them)
            parser.add_argument(field.name, help=field.metadata.get("help", ""),
                                **({"type": field.metadata["parse"]} if field.metadata.get("parse") else {}),
                                **({"nargs": "*"} if origin is list else {}))
            added.append(field.name)
            continue
        kwargs: dict[str, Any] = {"dest": field.name, "default": None, "help": _help(field, tp)}
        if field.metadata.get("metavar"):
            kwargs["metavar"] = field.metadata["metavar"]
        if field.metadata.get("required"):
            kwargs["required"] = True
        target = parser
        if field.metadata.get("group"):
            if field.metadata["group"] not in groups:
                groups[field.metadata["group"]] = parser.add_mutually_exclusive_group()
            target = groups[field.metadata["group"]]
        parse = field.metadata.get("parse")
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif field.metadata.get("append"):
            kwargs["action"] = "append"
            if parse:
                kwargs["type"] = parse
        elif field.metadata.get("pairs"):
            kwargs["type"] = _pair
            kwargs["action"] = _Pairs
            kwargs.setdefault("metavar", "KEY=VALUE")
        elif parse:
            kwargs["type"] = parse
            if origin is Literal:
                kwargs["choices"] = list(typing.get_args(tp))
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
        target.add_argument(*field.metadata.get("aliases", ()), flag_name(field), **kwargs)
        added.append(field.name)
    return added


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of ``cls`` that were given on the command line, as a table for ``from_table``."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if getattr(args, f.name, None) is not None}


def flags_of(cls: type) -> dict[str, str]:
    """field name -> the flag that sets it, for every field with a flag (errors name what was typed)."""
    return {f.name: flag_name(f) for f in dataclasses.fields(cls) if f.metadata.get("cli", True)}


def from_command_line(args: argparse.Namespace, cls: type, table: dict[str, Any] | None = None) -> dict[str, Any]:
    """The values for ``cls``: the command line's own defaults (``cli_default``), then the config
    ``table``, then what was typed; a ``pairs`` dict adds the typed pairs to the table's dict."""
    values = {f.name: f.metadata["cli_default"] for f in dataclasses.fields(cls) if "cli_default" in f.metadata}
    values.update(table or {})
    for key, value in given(args, cls).items():
        field = next(f for f in dataclasses.fields(cls) if f.name == key)
        if field.metadata.get("pairs") and isinstance(values.get(key), dict):
            value = {**values[key], **value}
        values[key] = value
    return values


def fields_without_flag(parser: argparse.ArgumentParser, cls: type | tuple[type, ...], *,
                        allowed: Iterable[str] = ()) -> list[str]:
    """Flags of ``parser`` whose destination is not a field of ``cls`` (one class or a tuple of them;
    nor in ``allowed``): a check that every setting is declared once, in a dataclass."""
    classes = cls if isinstance(cls, tuple) else (cls,)
    names = {f.name for c in classes for f in dataclasses.fields(c)} | set(allowed) | {"help"}
    return sorted(a.dest for a in parser._actions if a.dest not in names)


# --- numbers on the command line (argparse types: a bad value is a one-line usage error, exit 2) ----
def _bounded(convert: Callable[[str], Any], accept: Callable[[Any], bool],
             wanted: str) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value) or not accept(value):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got '{text}'")
        return value

    parse.__name__ = wanted
    return parse


positive_int = _bounded(int, lambda v: v >= 1, "a positive integer")
non_negative_int = _bounded(int, lambda v: v >= 0, "an integer >= 0")
positive_float = _bounded(float, lambda v: v > 0, "a positive number")
non_negative_float = _bounded(float, lambda v: v >= 0, "a number >= 0")
fraction = _bounded(float, lambda v: 0 <= v < 1, "a number in [0, 1)")
open_fraction = _bounded(float, lambda v: 0 < v < 1, "a number between 0 and 1")


def _positive_list(kind: type, wanted: str):
    """An argparse type for ``"A,B,C"``: a non-empty list of ``kind`` values > 0, else a usage error."""

    def parse(text: str) -> list:
        try:
            values = [kind(part) for part in text.replace(" ", "").split(",") if part]
        except ValueError:
            values = []
        if not values or any(not 0 < v < math.inf for v in values):
            raise argparse.ArgumentTypeError(f"must be comma-separated {wanted}, got '{text}'")
        return values

    return parse


positive_int_list = _positive_list(int, "positive integers")  # "384,256,128" -> [384, 256, 128]
positive_float_list = _positive_list(float, "finite numbers > 0")  # "0.05,0.1" -> [0.05, 0.1]
