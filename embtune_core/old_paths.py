"""The module paths embtune had before its modules were grouped into subpackages, kept working.

Until the layout move, every module of the core sat directly in ``embtune_core`` (``embtune_core.training``,
``embtune_core.atomic``, ...). Plugins, integrations and users' scripts import those paths, so each old
path is an alias of the module's new place: ``import embtune_core.training`` and
``from embtune_core.training import train`` give the module ``embtune_core.finetuning.training`` itself
(the same object, ``embtune_core.training is embtune_core.finetuning.training``), not a copy and not a
re-export. Patching through an old path (``monkeypatch.setattr("embtune_core.models._PACKAGED", ...)``)
therefore patches the one real module.

No file stays at an old path: a finder on ``sys.meta_path`` (installed by ``embtune_core/__init__.py``)
answers the old names from :data:`MOVED`, and ``embtune_core.<old>`` as an attribute is served by the
package's ``__getattr__``. New code imports the new paths; ``tests/test_layout.py`` checks that the
project itself never uses an old one (so the import-circle check sees every edge) and that every old
path still imports to its module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

#: subpackage of ``embtune_core`` -> the modules it holds (their names are unchanged)
GROUPS: dict[str, tuple[str, ...]] = {
    "data": ("documents", "textfiles", "loading", "splitting", "sentences", "dataset", "build", "qgen",
             "question_filter"),
    "encoders": ("encoding", "encoder_identity", "encoder_options", "embedding_cache", "models",
                 "model_names", "model_modules", "fingerprint", "onnx_export", "long_documents", "token_limits",
                 "prompts", "api_limits", "lora", "onnx_choice", "onnx_mixed_int8",
                 "token_prefix"),
    "finetuning": ("training", "training_args", "training_evaluator", "losses", "checkpoints",
                   "layer_freezing", "sampler", "index_training", "tracking", "model_card",
                   "memory_plan"),
    "adapters": ("adapter_base", "adapter_io", "adapter_settings", "adapter_training", "pseudo_queries"),
    "retrieval": ("search", "lexical", "fusion", "sparse_dense", "systems", "index_tuning", "tune_index"),
    "scoring": ("evaluation", "metrics", "stats"),
    "reporting": ("report", "report_backend", "report_examples", "report_figures", "report_training",
                  "report_verdict"),
    "runtime": ("atomic", "locking", "interrupts", "progress", "resources", "rundir", "secrets_scrub",
                "scratch_cwd"),
    "publishing": ("export", "hub", "portable", "deploy"),
    "workflow": ("pipeline", "quickstart", "recommend", "run_report", "probe"),
}

#: old module path -> new module path, e.g. ``embtune_core.training`` -> ``embtune_core.finetuning.training``
MOVED: dict[str, str] = {
    f"embtune_core.{module}": f"embtune_core.{package}.{module}"
    for package, modules in GROUPS.items()
    for module in modules
}


class _AliasLoader(importlib.abc.Loader):
    """Loads an old path by importing the new one and handing back that very module object."""

    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The module is already executed (imported under its new path). The import system has just set
        # its __spec__ to the alias's spec (it always does): give it back its own, so that the module
        # still names its real place (reload, inspect, pickle by reference).
        module.__spec__ = self.spec


class OldPathFinder(importlib.abc.MetaPathFinder):
    """Finds ``embtune_core.<old module>`` (see :data:`MOVED`) and nothing else."""

    def find_spec(self, fullname, path=None, target=None):
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Put the finder on ``sys.meta_path`` once (ahead of the path finder, which would find nothing)."""
    if not any(isinstance(finder, OldPathFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, OldPathFinder())


def attribute(name: str) -> ModuleType:
    """``embtune_core.<old>`` read as an attribute of the package: the moved module, imported on demand.

    Raises AttributeError for any other name, as a missing attribute must.
    """
    new = MOVED.get(f"embtune_core.{name}")
    if new is None:
        raise AttributeError(f"module 'embtune_core' has no attribute {name!r}")
    return importlib.import_module(new)
