"""Plugin options declared by the plugin: one typed options class per implementation, checked from it.

As peft declares a method's settings in a ``LoraConfig`` and ``llm`` a model's in its ``Options``,
a plugin declares what its factory takes as a dataclass and hands it to ``register``::

    @dataclass
    class ParagraphOptions:
        min_chars: int = 200            # the name, type and default of one option

        def validate(self) -> None:     # optional: ranges and relations; raise ConfigError(field=NAME)
            if self.min_chars < 1:
                raise ConfigError("must be a positive integer", field="min_chars")

    register("paragraph", ParagraphChunker, options=ParagraphOptions,
             description="split on blank lines")

The factory is still called with the options as keyword arguments (``ParagraphChunker(min_chars=300)``),
so a plugin written before options were declared keeps working. What the host does with the
declaration (:func:`check_options`): an option not declared is refused with the closest declared
name ("did you mean"), a value of the wrong type is refused naming its type, then ``validate()``
runs -- each a one-line :class:`~embtune_core.errors.ConfigError` naming the file and
``table.option``, before any model is loaded or text embedded.

A plugin that declares no options class is checked by its factory's signature when that signature
is closed (keyword parameters, no ``**options``); one that takes ``**options`` and declares nothing
cannot be checked ahead: its options reach the factory as given, and a wrong one fails when the stage
builds it. ``tests/test_plugins.py`` checks that every built-in declaration matches its factory.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from collections.abc import Iterable
from typing import Any

from embtune_core.errors import ConfigError
from embtune_core.validation import PathLike, _describe, accepts, did_you_mean

#: options every factory of a family is called with by the host itself, never by the user
HOST_ARGUMENTS = {"adapters": ("dim",)}


def declared(family: str, name: str) -> type | None:
    """The options class ``name`` of ``family`` declared at registration, or None."""
    from embtune_core.plugins import get_registry

    return get_registry().get(family, name).options


def option_names(family: str, name: str) -> set[str] | None:
    """The options ``name`` takes: its declaration's fields, else its factory's keyword parameters;
    None when neither tells (a factory taking ``**options`` that declares nothing)."""
    options = declared(family, name)
    if options is not None:
        return {f.name for f in dataclasses.fields(options)}
    from embtune_core.plugins import get_registry

    factory = get_registry().get(family, name).factory
    try:
        parameters = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    host = HOST_ARGUMENTS.get(family, ())
    return {p.name for p in parameters
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in host}


def _hints(family: str, name: str) -> dict[str, Any]:
    from embtune_core.plugins import get_registry

    options = declared(family, name)
    target = options if options is not None else get_registry().get(family, name).factory
    try:
        return typing.get_type_hints(target.__init__ if isinstance(target, type) and options is None else target)
    except Exception:  # noqa: BLE001 - annotations a plugin's module cannot resolve: names checked only
        return {}


def check_options(family: str, name: str, options: dict[str, Any], *, path: PathLike | None, table: str,
                  fixed: Iterable[str] = (), unknown: str | None = None) -> None:
    """Refuse an option ``name`` does not take, a value of the wrong type, or one its declaration's
    ``validate()`` refuses: :class:`ConfigError` naming ``path`` and ``table.option``. ``fixed``: keys of
    the table that are not the plugin's (its name...). ``unknown``: the wording of an unknown option's
    problem (``{key}``, ``{suggestion}`` and ``{known}`` filled in)."""
    accepted = option_names(family, name)
    if accepted is None:
        return  # declares nothing and takes **options: checked when the stage builds it
    known = sorted({*accepted, *fixed})
    for key in options:
        if key not in known:
            text = (unknown or "unknown key(s) {key}{suggestion}; known: {known}").format(
                key=key, suggestion=did_you_mean(key, known), known=", ".join(known) or "none")
            raise ConfigError(text, path=path, field=f"{table}.{key}" if table else key)
    hints = _hints(family, name)
    for key, value in options.items():
        if key in hints and not accepts(hints[key], value):
            raise ConfigError(f"must be {_describe(hints[key])}, not {value!r}", path=path,
                              field=f"{table}.{key}" if table else key)
    declaration = declared(family, name)
    if declaration is not None and hasattr(declaration, "validate"):
        try:
            declaration(**{k: v for k, v in options.items() if k in accepted}).validate()
        except ConfigError as exc:
            field = f"{table}.{exc.field}" if table and exc.field else (exc.field or table)
            raise ConfigError(exc.problem, path=path, field=field) from None
