"""The plugin host: built-ins and entry-point plugins through one mechanism; conflicts are errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from embtune_core import hookimpl
from embtune_core.errors import PluginError
from embtune_core.plugins import FAMILIES, build_plugin_manager, collect, get_registry

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "plugin_example"


def _pip_install_target(package_dir: Path, target: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(target), str(package_dir)], check=True,
                   capture_output=True, text=True)


def _embtune(*args: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "embtune_core.cli", *args], capture_output=True, text=True,
                          env=env, check=False)


def test_every_family_has_builtins_registered_by_embtune():
    registry = get_registry(refresh=True)
    for family in FAMILIES:
        impls = [i for i in registry.all() if i.family == family]
        assert impls, f"no built-in {family}"
        assert all(i.distribution == "embtune" for i in impls if i.plugin.startswith("embtune_plugins."))


def test_duplicate_name_in_one_family_is_an_error_naming_both():
    class First:
        @hookimpl
        def register_chunkers(self, register):
            register("same-name", object)

    class Second:
        @hookimpl
        def register_chunkers(self, register):
            register("same-name", object)

    pm = build_plugin_manager(load_entry_points=False, extra_plugins=(First(), Second()))
    with pytest.raises(PluginError, match="registered twice") as info:
        collect(pm)
    assert str(info.value).count("distribution") == 2


def test_unknown_name_lists_what_is_available():
    registry = get_registry()
    with pytest.raises(PluginError, match="available: .*"):
        registry.get("chunkers", "no-such-chunker")


@pytest.fixture(scope="module")
def example_installed(tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    _pip_install_target(EXAMPLE, target)
    return target


def test_example_plugin_is_listed_with_its_distribution(example_installed):
    before = _embtune("plugins", "--json")
    assert before.returncode == 0, before.stderr
    assert "paragraph" not in {r["name"] for r in json.loads(before.stdout)}

    after = _embtune("plugins", "--json", pythonpath=example_installed)
    assert after.returncode == 0, after.stderr
    rows = {(r["family"], r["name"]): r for r in json.loads(after.stdout)}
    assert rows[("chunkers", "paragraph")]["distribution"] == "embtune-plugin-example"
    assert rows[("evaluators", "recall-at-1")]["distribution"] == "embtune-plugin-example"
    table = _embtune("plugins", pythonpath=example_installed).stdout
    assert "paragraph" in table and "embtune-plugin-example" in table


def test_code_selects_the_example_chunker_by_name(example_installed):
    code = textwrap.dedent("""
        from embtune_core.documents import Document
        from embtune_core.plugins import get_registry
        chunker = get_registry().create("chunkers", "paragraph")
        chunks = chunker.chunk([Document("one\\n\\ntwo", {"source": "a.txt"})])
        print([c.text for c in chunks])
    """)
    env = dict(os.environ, PYTHONPATH=str(example_installed))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['one', 'two']"


def test_two_distributions_claiming_one_name_fail_the_cli(example_installed, tmp_path):
    clash = tmp_path / "clash"
    clash.mkdir()
    (clash / "pyproject.toml").write_text(textwrap.dedent("""
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "embtune-clash"
        version = "0.0.1"
        [project.entry-points.embtune]
        clash = "embtune_clash"
        [tool.setuptools]
        py-modules = ["embtune_clash"]
    """))
    (clash / "embtune_clash.py").write_text(textwrap.dedent("""
        from embtune_core import hookimpl
        @hookimpl
        def register_chunkers(register):
            register("paragraph", object)
    """))
    _pip_install_target(clash, tmp_path / "site")
    path = os.pathsep.join([str(example_installed), str(tmp_path / "site")])
    result = _embtune("plugins", pythonpath=Path(path))
    assert result.returncode == 4
    line = result.stderr.strip()
    assert "\n" not in line
    assert "embtune-plugin-example" in line and "embtune-clash" in line


def test_example_evaluator_scores_a_real_ranking(example_installed):
    code = textwrap.dedent("""
        import numpy as np
        from embtune_core.dataset import QADataset
        from embtune_core.metrics import Ranking
        from embtune_core.plugins import get_registry
        ds = QADataset({"q1": "a", "q2": "b"}, {"c1": "x", "c2": "y"}, {"q1": ["c1"], "q2": ["c1"]})
        ranking = Ranking(["q1", "q2"], ["c1", "c2"], np.array([[0, 1], [1, 0]]))
        print(get_registry().create("evaluators", "recall-at-1").evaluate(ranking, ds))
    """)
    env = dict(os.environ, PYTHONPATH=str(example_installed))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "{'recall@1': 0.5}"


def test_contracts_live_in_core_and_plugins_import_no_other_plugin():
    """Every family's contract is in embtune_core (hookspecs' Protocols, losses.LossStrategy, qgen.Journal);
    a plugin module imports no other plugin, only a registration module its own implementations."""
    import ast
    from pathlib import Path

    import embtune_plugins
    from embtune_core import hookspecs
    from embtune_core.plugins import get_registry

    own = {"question_generators": {"qgen_openai", "qgen_offline", "qgen_local_llm"},
           "adapters": {"adapter_modules"}}
    for path in Path(embtune_plugins.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("embtune_plugins."):
                assert node.module.split(".", 1)[1] in own.get(path.stem, set()), (path.name, node.module)
    registry = get_registry()
    assert isinstance(registry.create("chunkers", "recursive"), hookspecs.Chunker)
    assert isinstance(registry.create("question_generators", "ict"), hookspecs.QuestionGenerator)
    assert isinstance(registry.create("negative_miners", "embedding-rank"), hookspecs.NegativeMiner)
    from embtune_core.losses import LossStrategy

    assert all(isinstance(registry.create("loss_strategies", name), LossStrategy)
               for name in registry.names("loss_strategies") if name != "gist")
