"""``embtune run``: the whole pipeline from a TOML config, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from embtune_core.commands import Sources, check_encoder, check_model, check_output_dir, check_plugin
from embtune_core.config import load_config
from embtune_core.workflow.pipeline import run_config

NAME = "run"
HELP = "run the whole pipeline from a TOML config (resumable: re-run to continue)"
DESCRIPTION = """Run load -> chunk -> generate -> split -> mine -> train and/or adapter -> evaluate -> export
from one TOML config, in a run directory (default: runs/<name> next to the config) holding a
manifest (config, package versions, seeds, input hashes) and one folder per stage.

Each stage's output is cached by the hash of its inputs and settings: re-running the same command
after a crash or Ctrl-C redoes only what is missing (question generation continues from its
journal, training from its newest checkpoint), and changing one setting redoes only the stages that
depend on it. See examples/10k.toml and examples/beir.toml."""


def add_arguments(parser) -> None:
    parser.add_argument("config", help="TOML config file")
    parser.add_argument("--run-dir", help="run directory (default: [run] out/name next to the config)")
    parser.add_argument("--print-config", action="store_true",
                        help="print every table as the stages will read it (defaults filled in) and stop")


# (table, key, plugin family) of every implementation name a config may give
PLUGIN_KEYS = (("chunk", "chunker", "chunkers"), ("generate", "generator", "question_generators"),
               ("mine", "miner", "negative_miners"), ("train", "loss", "loss_strategies"),
               ("adapter", "type", "adapters"), ("adapter", "adapter", "adapters"))


def check_names(config: dict[str, Any], path: str | Path) -> None:
    """Refuse unknown plugin names and models that cannot load before any stage runs (the pipeline
    checks the rest of the config itself, before it creates the run directory)."""
    def table(name: str) -> dict[str, Any]:
        value = config.get(name)
        return value if isinstance(value, dict) and value.get("enabled", True) else {}

    for name, key, family in PLUGIN_KEYS:
        if key in table(name):
            check_plugin(family, table(name)[key], Sources(path, name).config(table(name)), key)
    if "model" in table("train"):
        check_model(table("train")["model"], Sources(path, "train").config(table("train")), "model")
    for name in ("mine", "adapter"):
        if "encoder" in table(name):
            check_encoder(table(name)["encoder"], Sources(path, name).config(table(name)), "encoder")


def run(args) -> int:
    if args.print_config:
        import json

        from embtune_core.workflow.pipeline import Pipeline

        pipeline = Pipeline(load_config(args.config), config_path=args.config, run_dir=args.run_dir)
        print(json.dumps(pipeline.resolved(), indent=2, sort_keys=False))
        return 0
    if args.run_dir:
        check_output_dir(args.run_dir, "--run-dir")
    check_names(load_config(args.config), args.config)
    result = run_config(args.config, run_dir=args.run_dir)
    print_result(result)
    print(f"run directory: {result['run_dir']}")
    return 0


def print_result(result: dict[str, Any]) -> None:
    """What a finished run prints (``embtune run`` and ``embtune quickstart``): the table, the recommendation
    and where the deploy folder and the reports are."""
    print()
    print(result["table"].strip())
    if result.get("recommendation"):
        print(f"\n{result['recommendation']}\ndeploy folder: {result['deploy']} (DEPLOY.md there: how to serve it)")
    print(f"\nreport: {result['report']}")
    if result.get("report_index"):
        print(f"report searching the whole index: {result['report_index']}")
