"""The structure of the code itself: no import circle among embtune's own modules, and no command-line
flag without a settings field behind it (one declaration for the CLI, the TOML table and the Python API).

Circles are read statically from the AST by ``tools/layout_stats.py`` (the script that counts the
layout). Every import counts, the ones inside functions too: an import deferred into a function
still closes a loop (deferring is how a circle usually hides), and the imports deferred to keep a
heavy library (torch, sentence-transformers) off start-up are imports of that library, never an edge
between embtune's modules, so they need no exemption. Only ``if TYPE_CHECKING:`` imports, which never
run, are left out.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import layout_stats

from embtune_core.cli_fields import add_fields, fields_without_flag
from embtune_core.commands import COMMAND_MODULES

# Commands whose flags are settings: each declares SETTINGS (the dataclass, or tuple of them, its flags
# come from) and INVOCATION_FLAGS (flags that say how to run it, not what: --config, --print-config).
SETTINGS_COMMANDS = {"tune-index", "train", "train-adapter", "evaluate", "build-dataset"}


def test_no_import_circle_among_the_project_modules():
    graph = layout_stats.project_graph(ROOT)
    assert len(graph.modules) > 100 and len(graph.edges) > 500  # the whole project was read
    found = layout_stats.circles(graph)
    assert found == [], "import circles: " + "; ".join(" <-> ".join(c) for c in found)


def test_the_circle_check_finds_a_circle_hidden_in_a_function(tmp_path):
    """The check can fail: a loop closed only by an import inside a function (or by __import__) is found,
    one closed only under TYPE_CHECKING is not."""
    core = tmp_path / "embtune_core"
    core.mkdir()
    (core / "__init__.py").write_text("")
    (core / "a.py").write_text("from embtune_core.b import x\n")
    (core / "b.py").write_text("def x():\n    from embtune_core import a\n")
    (core / "c.py").write_text("import embtune_core.b\n")
    (core / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from embtune_core import c\n")
    (core / "e.py").write_text("def f():\n    return __import__('embtune_core.f')\n")
    (core / "f.py").write_text("from . import e\n")
    for package in ("plugins", "integrations"):
        (tmp_path / package).mkdir()
    graph = layout_stats.project_graph(tmp_path)
    assert layout_stats.circles(graph) == [["embtune_core.a", "embtune_core.b"], ["embtune_core.e", "embtune_core.f"]]
    assert layout_stats.circles(graph, top_level_only=True) == []


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    from embtune_core.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_flag_of_a_settings_command_has_a_field_behind_it():
    subparsers = _subparsers()
    declared = set()
    for module_name in COMMAND_MODULES:
        module = importlib.import_module(module_name)
        settings = getattr(module, "SETTINGS", None)
        classes = settings if isinstance(settings, tuple) else (settings,)
        if module.NAME in SETTINGS_COMMANDS:
            assert all(dataclasses.is_dataclass(c) for c in classes), module.NAME
        if settings is not None:
            declared.add(module.NAME)
            missing = fields_without_flag(subparsers[module.NAME], settings,
                                          allowed=getattr(module, "INVOCATION_FLAGS", ()))
            names = ", ".join(c.__name__ for c in classes)
            assert missing == [], f"embtune {module.NAME}: flags with no field of {names}: {missing}"
    assert declared >= SETTINGS_COMMANDS


def test_the_flag_check_finds_a_flag_without_a_field():
    @dataclasses.dataclass
    class Settings:
        epochs: int = 3

    parser = argparse.ArgumentParser()
    add_fields(parser, Settings)
    assert fields_without_flag(parser, Settings) == []
    parser.add_argument("--recommend", action="store_true")
    assert fields_without_flag(parser, Settings) == ["recommend"]


def test_the_counting_script_runs(capsys):
    assert layout_stats.main(["--root", str(ROOT)]) == 0
    out = capsys.readouterr().out
    assert "circles (all imports): 0" in out, textwrap.shorten(out, 400)


# The layout: embtune_core's modules grouped by concept into subpackages (embtune_core.old_paths.GROUPS), and
# every path from before the grouping still imports, as the moved module itself.


def test_every_moved_module_is_at_its_new_place_and_no_file_is_left_at_the_old_one():
    from embtune_core.old_paths import GROUPS

    core = ROOT / "embtune_core"
    listed = set()
    for package, modules in GROUPS.items():
        assert (core / package / "__init__.py").is_file(), package
        for module in modules:
            assert (core / package / f"{module}.py").is_file(), f"{package}/{module}.py"
            assert not (core / f"{module}.py").exists(), f"{module}.py left at the old path"
            listed.add(core / package / f"{module}.py")
    # every module of a concept's folder is in the table, so the table is the whole map of the move
    in_folders = {p for package in GROUPS for p in (core / package).glob("*.py") if p.name != "__init__.py"}
    assert in_folders == listed, sorted(str(p.relative_to(core)) for p in in_folders ^ listed)


def test_every_old_module_path_imports_as_the_moved_module_itself():
    import embtune_core
    from embtune_core.old_paths import MOVED

    assert len(MOVED) == 75  # 70 flat modules of the first move, 5 that issue-30 added flat
    for old, new in MOVED.items():
        module = importlib.import_module(old)
        assert module is importlib.import_module(new), old
        assert module.__name__ == module.__spec__.name == new, old  # the module still names its real place
        assert getattr(embtune_core, old.rpartition(".")[2]) is module, old
    import embtune_core.finetuning.training
    import embtune_core.training

    assert embtune_core.training is embtune_core.finetuning.training
    from embtune_core.training import train

    assert train is embtune_core.finetuning.training.train
    from embtune_core import hookimpl

    assert hookimpl.project_name == "embtune"
    try:
        importlib.import_module("embtune_core.no_such_module")
    except ModuleNotFoundError:
        pass
    else:
        raise AssertionError("the alias finder answered a name it does not hold")
    assert not hasattr(embtune_core, "no_such_module")


def test_an_old_path_imported_first_in_a_fresh_interpreter_is_the_new_module():
    """In a fresh interpreter the old path is the first import of the module (nothing loaded it under its new
    path before), in both spellings users have: ``import a.b`` and ``from a import b``."""
    import subprocess

    code = (
        "import sys, embtune_core.atomic as a\n"
        "from embtune_core import stats\n"
        "from embtune_core.atomic import write_text\n"
        "import embtune_core.runtime.atomic as n, embtune_core.scoring.stats as s\n"
        "assert a is n and stats is s and sys.modules['embtune_core.atomic'] is n, (a, n)\n"
        "assert write_text is n.write_text and n.__spec__.name == 'embtune_core.runtime.atomic'\n"
        "assert 'embtune_core.stats' not in sys.modules  # an attribute, not an import\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_project_itself_imports_no_old_path():
    """An old path is served by the alias finder, so the circle check would see an edge to ``embtune_core``
    instead of to the module: the project's own code imports the new paths only."""
    graph = layout_stats.project_graph(ROOT)
    assert graph.unresolved == [], graph.unresolved


def test_the_check_finds_an_import_of_an_old_path(tmp_path):
    core = tmp_path / "embtune_core"
    (core / "runtime").mkdir(parents=True)
    for path in (core / "__init__.py", core / "runtime" / "__init__.py", core / "runtime" / "atomic.py"):
        path.write_text("")
    (core / "user.py").write_text("from embtune_core.atomic import x\n"  # an old path
                                  "from embtune_core.runtime import atomic\n")
    for package in ("plugins", "integrations"):
        (tmp_path / package).mkdir()
    graph = layout_stats.project_graph(tmp_path)
    assert graph.unresolved == [("embtune_core.user", "embtune_core.atomic", 1)]
