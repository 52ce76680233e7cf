"""``embtune build-dataset``: documents -> load -> chunk -> generate questions -> split -> train/val JSON."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from embtune_core.cli_fields import add_fields, setting
from embtune_core.commands import Sources, check_model, check_output_dir, check_plugin
from embtune_core.config import load_config, section
from embtune_core.config_paths import resolve_table
from embtune_core.data.build import chunk_documents, generate_questions, split_dataset, write_dataset_split
from embtune_core.data.loading import collect_files
from embtune_core.errors import COMMAND_LINE, ConfigError, EmbtuneError, UsageError
from embtune_core.plugins import get_registry
from embtune_core.runtime import atomic
from embtune_core.settings import DatasetSettings, PluginTable, SplitSettings, as_table, from_table

log = logging.getLogger(__name__)

NAME = "build-dataset"
HELP = "turn a folder of documents into train.json / val.json (LlamaIndex QA format)"
DESCRIPTION = """Load documents (.pdf, .txt, .md, .jsonl), chunk them, generate questions per chunk,
split by source document and write OUT/train.json and OUT/val.json atomically, in LlamaIndex's
EmbeddingQAFinetuneDataset format plus corpus_metadata (source, page, offsets).

Examples:
  embtune build-dataset docs/ -o data                       # offline: inverse cloze task
  embtune build-dataset docs/ -o data --generator openai --llm-model gpt-4o-mini
  embtune build-dataset docs/ -o data --generator openai --base-url http://localhost:8000/v1 \\
      --llm-model Qwen/Qwen2.5-7B-Instruct --concurrency 32   # vLLM, no key needed

Question generation with --generator openai journals every completed call in --work-dir
(default OUT/.work): if the run is interrupted or crashes, run the same command again and it
resumes without repeating a completed call. The API key comes from the environment only
(OPENAI_API_KEY, or --api-key-env NAME).

Options may also come from the [dataset] table of a --config TOML file (same names with
underscores, e.g. chunk_size = 256, generator = "openai", val_fraction = 0.2, and a
[dataset.generator_options] table for generator-specific settings); the command line wins.

Splitting: whole source documents go to one side (--split-by source); a single document cannot
be split that way: use --split-by page (or chunk), or --val-fraction 0 for train.json only.
Validation sets that share a chunk, query or (with --split-by source) a document with training
are refused."""

# The options that have a flag of the same name (inputs, prompt and generator_options come from the file only).
DEFAULTS: dict[str, Any] = {k: v for k, v in as_table(DatasetSettings()).items()
                            if k not in ("inputs", "prompt", "generator_options")}


@dataclass
class BuildDatasetRun:
    """What ``embtune build-dataset`` does after writing the dataset (not part of the ``[dataset]`` table)."""

    probe: bool = setting(True, "after writing, measure on the training questions whether tuning is likely to help "
                                "(base model vs BM25, chunks cut, saturation, a short adapter probe; default: on)")


SETTINGS = (DatasetSettings, BuildDatasetRun)  # every flag but --config is a field of one of these
INVOCATION_FLAGS = ("config",)


def add_arguments(parser) -> None:
    add_fields(parser, DatasetSettings, skip=[f.name for f in fields(DatasetSettings) if f.name not in ("inputs", "out")])
    parser.add_argument("--config", help="TOML file with a [dataset] table")
    add_fields(parser, BuildDatasetRun)
    add_fields(parser, DatasetSettings, skip=("inputs", "out"))


def resolve_settings(args) -> dict[str, Any]:
    """Command line over the [dataset] config table over defaults (``settings["origins"]``: which is which)."""
    config: dict[str, Any] = {}
    config_path = getattr(args, "config", None)
    sources = Sources(config_path, "dataset")
    if config_path:
        config = resolve_table(section(load_config(config_path), "dataset", config_path), config_path)
        # unknown keys and wrong types refused; a single input (inputs = "docs/") is a list of one
        parsed = from_table(DatasetSettings, config, path=config_path)
        if "inputs" in config:
            config = {**config, "inputs": parsed.inputs}
        sources.config(config)
    settings = dict(DEFAULTS)
    settings.update({k: v for k, v in config.items() if k in DEFAULTS})
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            settings[key] = value
    sources.command_line(args, DEFAULTS)
    settings["inputs"] = list(args.inputs) or list(config.get("inputs", []))
    settings["prompt"] = config.get("prompt")
    settings["generator_options"] = config.get("generator_options", {})
    sources.config(settings["generator_options"], prefix="generator_options.")
    if args.inputs:
        sources.set("inputs", COMMAND_LINE, "INPUTS")
    # A missing API key is fixed where the key's variable is named.
    sources.set("api_key", *sources.where("api_key_env"))
    if not settings["inputs"]:
        raise (ConfigError("no documents given (pass files or folders, or inputs = [...])", path=config_path,
                           field="dataset.inputs") if config_path else
               UsageError("no documents given (pass files or folders)", field="INPUTS"))
    if not settings["out"]:
        raise (ConfigError("no output folder (pass -o/--out, or out = \"...\")", path=config_path,
                           field="dataset.out") if config_path else
               UsageError("no output folder (pass -o/--out)", field="--out"))
    if not 0.0 <= float(settings["val_fraction"]) < 1.0:
        raise sources.error(f"must be in [0, 1), not {settings['val_fraction']}", "val_fraction")
    settings["origins"] = sources
    return settings


def chunker_options(s: dict[str, Any]) -> dict[str, Any]:
    options = {k: s[k] for k in ("chunk_size", "chunk_overlap") if s[k] is not None}
    if s["chunker"] == "sentence" and s["model"]:
        options["model"] = s["model"]
    return options


def generator_options(s: dict[str, Any]) -> dict[str, Any]:
    options: dict[str, Any] = {"seed": s["seed"]}
    if s["questions_per_chunk"] is not None:
        options["questions_per_chunk"] = s["questions_per_chunk"]
    if s["generator"] in ("openai", "local-llm"):
        options["model"] = s["llm_model"]  # None: the generator's default
        prompt = s["prompt"]
        if s["prompt_file"]:
            from embtune_core.data.dataset import read_text

            prompt = read_text(s["prompt_file"])
        options.update(prompt=prompt, temperature=s["temperature"])
    if s["generator"] == "openai":
        options.update(base_url=s["base_url"], concurrency=s["concurrency"], max_retries=s["max_retries"],
                       timeout=s["timeout"],
                       api_key=f"env:{s['api_key_env']}" if s["api_key_env"] else None)
    options.update(s["generator_options"])
    return {k: v for k, v in options.items() if v is not None or k == "api_key"}


def run(args) -> int:
    s = resolve_settings(args)
    origins: Sources = s["origins"]
    started = time.perf_counter()
    registry = get_registry()
    out = Path(s["out"])
    work_dir = Path(s["work_dir"]) if s["work_dir"] else out / ".work"

    # Everything the settings alone can refute is refuted before a document is read: the inputs are
    # listed, the generator and the chunker built (cheap: an LLM is only called, a local one loaded, later).
    check_output_dir(out, origins.where("out")[1])
    check_output_dir(work_dir, origins.where("work_dir")[1])
    collect_files(s["inputs"], registry)
    check_plugin("question_generators", s["generator"], origins, "generator")
    check_plugin("chunkers", s["chunker"], origins, "chunker")
    if s["chunker"] == "sentence" and s["model"]:
        check_model(s["model"], origins, "model")
    chunker = PluginTable(s["chunker"], chunker_options(s))
    generator = PluginTable(s["generator"], generator_options(s))
    try:  # cheap: an LLM is only called, a local one loaded, when it generates
        from embtune_core.settings import check_plugin_options

        check_plugin_options("question_generators", generator.name, generator.options,
                             path=args.config or COMMAND_LINE, table="dataset.generator_options")
        registry.create("question_generators", generator.name, **generator.options)
        registry.create("chunkers", chunker.name, **chunker.options)
    except EmbtuneError as exc:
        raise origins.blame(exc) from None

    done = chunk_documents(s["inputs"], chunker, skip_bad=bool(s["skip_bad"]), registry=registry)
    documents, chunks, skipped = done.documents, done.chunks, done.skipped
    sources = {d.source for d in documents}
    print(f"loaded {len(documents)} documents from {len(sources)} files", file=sys.stderr)
    print(f"{len(chunks)} chunks ({s['chunker']})", file=sys.stderr)

    dataset, report = generate_questions(chunks, generator, work_dir=work_dir)
    if not dataset.queries:
        raise ConfigError(f"the {s['generator']} generator produced no queries from {len(chunks)} chunks",
                          field="generator")

    train_path, val_path = out / "train.json", out / "val.json"
    split = SplitSettings(val_fraction=float(s["val_fraction"]), split_by=s["split_by"], seed=int(s["seed"]))
    train, val = split_dataset(dataset, split)
    write_dataset_split(train, val, train_path, val_path, split)

    summary = {
        "inputs": [str(p) for p in s["inputs"]], "documents": len(documents), "files": len(sources),
        "skipped": [{"path": p, "reason": r} for p, r in skipped], "chunks": len(chunks),
        "chunker": s["chunker"], "generator": s["generator"], "generator_report": report,
        "train": {"queries": len(train.queries), "corpus": len(train.corpus), "path": str(train_path)},
        "val": ({"queries": len(val.queries), "corpus": len(val.corpus), "path": str(val_path)}
                if val is not None else None),
        "split_by": s["split_by"], "seed": s["seed"], "seconds": round(time.perf_counter() - started, 2),
    }
    if args.probe is not False and train.queries:  # --probe is on unless --no-probe
        from embtune_core.encoders.models import DEFAULT_MODEL
        from embtune_core.workflow.probe import describe, tuning_probe

        try:
            probe = tuning_probe(train, s["model"] or DEFAULT_MODEL, seed=int(s["seed"]))
        except EmbtuneError as exc:  # too few documents to hold any out: say so, the dataset is written
            summary["probe"] = {"skipped": exc.problem}
            print(f"will tuning help? not measured: {exc.problem}", file=sys.stderr)
        else:
            summary["probe"] = probe
            for line in describe(probe):
                print(line, file=sys.stderr)
    atomic.write_json(out / "build-report.json", summary)
    if report.get("total_tokens"):
        print(f"token usage: {report['prompt_tokens']} prompt + {report['completion_tokens']} completion "
              f"= {report['total_tokens']} ({report.get('calls', 0)} calls, {report.get('resumed', 0)} resumed "
              "from the journal)", file=sys.stderr)
    dropped = report.get("dropped_questions") or {}
    if any(dropped.values()):
        gone = sum(dropped.values())
        print(f"question filter dropped {gone} of {gone + int(report.get('questions', 0))} generated questions ("
              + ", ".join(f"{n} {why}" for why, n in dropped.items() if n) + "; build-report.json lists examples)",
              file=sys.stderr)
    print(f"wrote {train_path}: {len(train.queries)} queries, {len(train.corpus)} chunks")
    if val is not None:
        print(f"wrote {val_path}: {len(val.queries)} queries, {len(val.corpus)} chunks")
    if skipped:
        print(f"skipped {len(skipped)} bad file(s):")
        for path, reason in skipped:
            print(f"  {path}: {reason}")
    return 0
