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
        from embtune_core.data.documents import Document
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
        from embtune_core.data.dataset import QADataset
        from embtune_core.scoring.metrics import Ranking
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
    from embtune_core.finetuning.losses import LossStrategy

    assert all(isinstance(registry.create("loss_strategies", name), LossStrategy)
               for name in registry.names("loss_strategies") if name != "gist")


# --- options declared by the plugin (embtune_core.plugin_options) ------------------------------------------
def _keyword_defaults(cls: type, skip: tuple[str, ...] = ("self", "dim")) -> dict:
    """Every keyword parameter a class's __init__ takes, through the **options chain of its bases."""
    import inspect

    out: dict = {}
    for klass in reversed(cls.__mro__):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.name not in skip and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
                out[p.name] = p.default
    return out


def _built_class(family: str, name: str) -> type:
    """The class a registered factory builds (the built-ins' lazy factories import it on first use)."""
    from embtune_plugins import adapter_modules, qgen_local_llm, qgen_offline, qgen_openai

    lazy = {("adapters", "linear"): adapter_modules.LinearAdapter,
            ("adapters", "two-layer"): adapter_modules.TwoLayerAdapter,
            ("question_generators", "ict"): qgen_offline.InverseClozeGenerator,
            ("question_generators", "crop"): qgen_offline.CropGenerator,
            ("question_generators", "openai"): qgen_openai.OpenAIQuestionGenerator,
            ("question_generators", "local-llm"): qgen_local_llm.LocalLLMQuestionGenerator}
    factory = get_registry().get(family, name).factory
    return lazy.get((family, name), factory)


def test_every_builtin_declaration_is_what_its_factory_takes():
    """A declared options class names exactly the keywords its implementation takes, with the same
    defaults: the declaration cannot drift from the code it describes."""
    import dataclasses

    declared = [i for i in get_registry(refresh=True).all() if i.options is not None]
    assert {(i.family) for i in declared} >= {"loss_strategies", "adapters", "negative_miners", "question_generators"}
    for impl in declared:
        fields = {f.name: f.default for f in dataclasses.fields(impl.options)}
        assert fields == _keyword_defaults(_built_class(impl.family, impl.name)), (impl.family, impl.name)


def test_activation_names_are_the_two_layer_adapters():
    from embtune_plugins.adapter_modules import ACTIVATIONS
    from embtune_plugins.adapters import ACTIVATION_NAMES

    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES


def test_options_are_checked_from_the_declaration_not_by_building_the_plugin():
    from dataclasses import dataclass

    from embtune_core.errors import ConfigError
    from embtune_core.plugin_options import check_options

    built = []

    @dataclass
    class ParagraphOptions:
        min_chars: int = 1

        def validate(self):
            if self.min_chars < 1:
                raise ConfigError("must be a positive integer", field="min_chars")

    def factory(**options):  # takes anything: only the declaration can tell a typo
        built.append(options)
        return object()

    class Plugin:
        @hookimpl
        def register_chunkers(self, register):
            register("paragraph-typed", factory, options=ParagraphOptions)

    import embtune_core.plugins as host

    registry = collect(build_plugin_manager(load_entry_points=False, extra_plugins=(Plugin(),)))
    saved, host._registry = host._registry, registry
    try:
        check_options("chunkers", "paragraph-typed", {"min_chars": 3}, path="c.toml", table="chunk")
        with pytest.raises(ConfigError, match=r"^c\.toml: chunk\.min_char: unknown key\(s\) min_char "
                                              r"\(did you mean 'min_chars'\?\)"):
            check_options("chunkers", "paragraph-typed", {"min_char": 3}, path="c.toml", table="chunk")
        with pytest.raises(ConfigError, match=r"chunk\.min_chars: must be an integer, not '3'"):
            check_options("chunkers", "paragraph-typed", {"min_chars": "3"}, path="c.toml", table="chunk")
        with pytest.raises(ConfigError, match=r"chunk\.min_chars: must be a positive integer"):
            check_options("chunkers", "paragraph-typed", {"min_chars": 0}, path="c.toml", table="chunk")
    finally:
        host._registry = saved
    assert built == []  # nothing was built to find out


def test_options_that_are_not_a_dataclass_are_refused_at_registration():
    class Plugin:
        @hookimpl
        def register_chunkers(self, register):
            register("untyped", object, options={"min_chars": int})

    with pytest.raises(PluginError, match="options must be a dataclass"):
        collect(build_plugin_manager(load_entry_points=False, extra_plugins=(Plugin(),)))


def test_a_loss_option_typo_is_refused_before_any_model_loads():
    from embtune_core.errors import ConfigError
    from embtune_core.finetuning.losses import create_strategy

    with pytest.raises(ConfigError, match=r"unexpected keyword argument 'scal' \(did you mean 'scale'\?\); known: "):
        create_strategy("mnrl", scal=10)
    with pytest.raises(ConfigError, match=r"loss_options\.margin: must be a number, not 'x'"):
        create_strategy("triplet", margin="x")
    assert create_strategy("cached-mnrl", mini_batch_size=8).mini_batch_size == 8


def test_the_example_plugin_declares_typed_options(example_installed):
    """README's "Writing a plugin": a [chunk] table naming the example chunker is checked against its
    declared options (typo, type, range), each in one line naming the file and chunk.<key>."""
    code = textwrap.dedent("""
        from embtune_core.errors import ConfigError
        from embtune_core.settings import plugin_table
        print(plugin_table("chunk", {"chunker": "paragraph", "min_chars": 5}, path="c.toml").options)
        for bad in ({"min_char": 5}, {"min_chars": "5"}, {"min_chars": 0}):
            try:
                plugin_table("chunk", {"chunker": "paragraph", **bad}, path="c.toml")
            except ConfigError as exc:
                print(exc)
    """)
    env = dict(os.environ, PYTHONPATH=str(example_installed))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "{'min_chars': 5}",
        "c.toml: chunk.min_char: unknown key(s) min_char (did you mean 'min_chars'?); known: chunker, min_chars",
        "c.toml: chunk.min_chars: must be an integer, not '5'",
        "c.toml: chunk.min_chars: must be a positive integer",
    ]
