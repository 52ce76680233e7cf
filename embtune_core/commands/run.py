"""``embtune run``: the whole pipeline from a TOML config, resumable."""

from __future__ import annotations

from embtune_core.pipeline import run_config

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


def run(args) -> int:
    result = run_config(args.config, run_dir=args.run_dir)
    print()
    print(result["table"].strip())
    print(f"\nreport: {result['report']}\nrun directory: {result['run_dir']}")
    return 0
