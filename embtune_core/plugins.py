"""The plugin host: one plugin manager, the built-in plugins, then the ``embtune`` entry points.

Built-in plugins are ordinary modules listed once in :data:`DEFAULT_PLUGINS` and registered
through the same hooks as third-party ones; third-party packages declare::

    [project.entry-points.embtune]
    my_plugin = "my_package.plugin_module"
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pluggy

from embtune_core import hookspecs
from embtune_core.errors import PluginError

ENTRY_POINT_GROUP = "embtune"
BUILTIN_DISTRIBUTION = "embtune"

# family name -> hook name
FAMILIES: dict[str, str] = {
    "loaders": "register_loaders",
    "chunkers": "register_chunkers",
    "question_generators": "register_question_generators",
    "negative_miners": "register_negative_miners",
    "loss_strategies": "register_loss_strategies",
    "adapters": "register_adapters",
    "encoders": "register_encoders",
    "index_tuners": "register_index_tuners",
    "evaluators": "register_evaluators",
}

DEFAULT_PLUGINS = (
    "embtune_plugins.loaders",
    "embtune_plugins.chunkers",
    "embtune_plugins.question_generators",
    "embtune_plugins.negative_miners",
    "embtune_plugins.losses",
    "embtune_plugins.adapters",
    "embtune_plugins.encoders",
    "embtune_plugins.index_tuners",
    "embtune_plugins.evaluators",
)


@dataclass(frozen=True)
class Implementation:
    family: str
    name: str
    factory: Callable[..., Any]
    distribution: str
    plugin: str
    description: str = ""
    # The options the factory takes, declared by the plugin as a dataclass (embtune_core.plugin_options);
    # None: its factory's signature is the declaration.
    options: type | None = None


class Registry:
    """Every implementation registered by every plugin, by family and name."""

    def __init__(self) -> None:
        self._by_family: dict[str, dict[str, Implementation]] = {family: {} for family in FAMILIES}

    def add(self, impl: Implementation) -> None:
        family = self._by_family[impl.family]
        existing = family.get(impl.name)
        if existing is not None:
            raise PluginError(
                f"{impl.family} '{impl.name}' is registered twice: by {existing.plugin} "
                f"(distribution {existing.distribution}) and by {impl.plugin} "
                f"(distribution {impl.distribution}); uninstall one or rename it"
            )
        family[impl.name] = impl

    def get(self, family: str, name: str) -> Implementation:
        if family not in self._by_family:
            raise PluginError(f"unknown plugin family '{family}'; known: {', '.join(FAMILIES)}")
        try:
            return self._by_family[family][name]
        except KeyError:
            known = ", ".join(sorted(self._by_family[family])) or "none"
            raise PluginError(f"no {family} implementation named '{name}'; available: {known}") from None

    def create(self, family: str, name: str, /, **options: Any) -> Any:
        """Look up ``name`` in ``family`` and call its factory with ``options`` (which may hold a ``name``
        or ``family`` option of the plugin's own: the first two parameters are positional-only)."""
        return self.get(family, name).factory(**options)

    def names(self, family: str) -> list[str]:
        return sorted(self._by_family[family])

    def all(self) -> list[Implementation]:
        return [impl for family in self._by_family.values() for impl in family.values()]


def _distribution_of(pm: pluggy.PluginManager, plugin: object) -> str:
    for candidate, dist in pm.list_plugin_distinfo():
        if candidate is plugin:
            return dist.metadata["name"]
    return BUILTIN_DISTRIBUTION


def build_plugin_manager(*, load_entry_points: bool = True, extra_plugins: tuple = ()) -> pluggy.PluginManager:
    pm = pluggy.PluginManager("embtune")
    pm.add_hookspecs(hookspecs)
    for module_name in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module_name), name=module_name)
    for plugin in extra_plugins:
        pm.register(plugin)
    if load_entry_points:
        pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
    return pm


def collect(pm: pluggy.PluginManager) -> Registry:
    """Call every plugin's ``register_*`` hooks, one plugin at a time so we know who registered what."""
    registry = Registry()
    for family, hook_name in FAMILIES.items():
        for hookimpl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):  # registration order
            distribution = _distribution_of(pm, hookimpl.plugin)

            def register(name: str, factory: Callable[..., Any], *, description: str = "",
                         options: type | None = None, _family=family, _dist=distribution,
                         _plugin=hookimpl.plugin_name) -> None:
                if options is not None and not dataclasses.is_dataclass(options):
                    raise PluginError(f"{_family} '{name}' of {_plugin}: options must be a dataclass (the options "
                                      f"its factory takes), not {options!r}")
                registry.add(Implementation(_family, name, factory, _dist, _plugin, description, options))

            typed: hookspecs.Register = register
            hookimpl.function(register=typed)
    return registry


_registry: Registry | None = None


def get_registry(*, refresh: bool = False) -> Registry:
    """The process-wide registry, built on first use."""
    global _registry
    if _registry is None or refresh:
        _registry = collect(build_plugin_manager())
    return _registry
