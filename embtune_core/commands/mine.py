"""``embtune mine``: add hard negatives to a QA dataset."""

from __future__ import annotations

import sys
from typing import Any

from embtune_core.commands import (
    Sources,
    check_encoder,
    check_output_file,
    check_plugin,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_int,
)
from embtune_core.config import load_config, section
from embtune_core.config_paths import resolve_table
from embtune_core.data.build import mine_negatives
from embtune_core.data.dataset import load_split, source_of
from embtune_core.errors import EmbtuneError
from embtune_core.plugins import get_registry
from embtune_core.runtime import atomic
from embtune_core.settings import PluginTable, plugin_table

NAME = "mine"
HELP = "add hard negatives to a QA dataset (embedding rank with a false-negative guard)"
DESCRIPTION = """Rank the corpus for each query with an encoder, skip the query's positives and the top
--range-min ranks, drop candidates scoring above 95% of the positive's score (NV-Retriever's
TopK-PercPos false-negative guard; --relative-margin 0.05) and keep --num-negatives per query.
Writes the dataset with a "negatives" key (which LlamaIndex ignores) atomically to --out, and
prints how many candidates the guard dropped.

Example:
  embtune mine data/train.json -o data/train-negatives.json \\
      --encoder sentence-transformers/all-MiniLM-L6-v2 --num-negatives 5

--encoder takes a model name or folder, or a spec such as st:NAME or openai:MODEL[@BASE_URL].
Options may also come from the [mine] table of a --config TOML file; the command line wins."""

DEFAULTS: dict[str, Any] = {"miner": "embedding-rank", "encoder": "sentence-transformers/all-MiniLM-L6-v2"}


def add_arguments(parser) -> None:
    parser.add_argument("dataset", help="QA dataset (LlamaIndex JSON, BEIR folder, pairs JSONL/CSV)")
    parser.add_argument("-o", "--out", required=True, help="output dataset JSON")
    parser.add_argument("--config", help="TOML file with a [mine] table")
    parser.add_argument("--split", default="train",
                        help="qrels split read when DATASET is a BEIR folder (default: train)")
    parser.add_argument("--miner", help="negative miner plugin (default: embedding-rank)")
    parser.add_argument("--encoder", "--model", dest="encoder",
                        help="model name/folder or encoder spec (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--num-negatives", type=positive_int, help="negatives per query (default: 5)")
    parser.add_argument("--range-min", type=non_negative_int,
                        help="skip this many top-ranked non-positives (default: 0)")
    parser.add_argument("--range-max", type=positive_int, help="consider ranks below this (default: 50)")
    parser.add_argument("--relative-margin", type=fraction,
                        help="drop candidates above positive*(1-m) (default: 0.05; 0 disables)")
    parser.add_argument("--margin", type=non_negative_float,
                        help="also drop candidates above positive-m (default: off)")
    from embtune_core.encoders.encoder_options import add_arguments as add_encoder_arguments

    add_encoder_arguments(parser)  # --query-prompt, --document-prompt, --backend (local models)
    parser.add_argument("--no-cache", dest="use_cache", action="store_false", default=None,
                        help="do not use the embedding cache")


OPTION_FLAGS = ("num_negatives", "range_min", "range_max", "relative_margin", "margin", "use_cache")


def resolve_settings(args) -> tuple[PluginTable, Sources]:
    """The [mine] table of --config (one model with ``embtune run``'s [mine], see
    :func:`embtune_core.settings.plugin_table`) under the options given on the command line."""
    sources = Sources(args.config, "mine")
    table = PluginTable(DEFAULTS["miner"], {}, encoder=DEFAULTS["encoder"])
    if args.config:
        config = resolve_table(section(load_config(args.config), "mine", args.config), args.config)
        table = plugin_table("mine", config, path=args.config)
        table.encoder = table.encoder or DEFAULTS["encoder"]
        sources.config(config)
    sources.command_line(args, (*OPTION_FLAGS, "miner", "encoder"), {"use_cache": "--no-cache"})
    table.name = args.miner or table.name
    table.encoder = args.encoder or table.encoder
    table.options.update({k: getattr(args, k) for k in OPTION_FLAGS if getattr(args, k, None) is not None})
    return table, sources


def run(args) -> int:
    table, sources = resolve_settings(args)
    # Everything the arguments alone can refute is refuted before the dataset or a model is read.
    check_output_file(args.out, "--out")
    check_plugin("negative_miners", table.name, sources, "miner")
    check_encoder(table.encoder, sources, "encoder")
    try:  # bad option values are refuted before the dataset is read
        get_registry().create("negative_miners", table.name, **table.options)
    except EmbtuneError as exc:
        raise sources.blame(exc) from None
    from embtune_core.encoders.encoder_options import from_args

    options = from_args(args, table.encoder or "st:")
    dataset = load_split(args.dataset, split=args.split, field="dataset")
    encoder = None
    if options:  # prompts or a backend: the encoder is built with them (they enter its identity)
        from embtune_core.encoders.encoding import encoder_from_spec

        encoder = encoder_from_spec(table.encoder, **options)
    mined, report = mine_negatives(dataset, table, encoder)
    mined.save(args.out)
    if report:
        report["source"] = source_of(args.dataset, args.split)
    if report:
        atomic.write_json(f"{args.out}.mine-report.json", report)
        print(f"false-negative guard dropped {report['dropped_by_guard']} of {report['candidates_examined']} "
              f"candidates examined; kept {report['negatives_kept']} negatives for {report['queries']} queries "
              f"({report['queries_with_fewer_negatives']} with fewer than {report['num_negatives']})",
              file=sys.stderr)
    print(f"wrote {args.out}: {len(mined.queries)} queries, "
          f"{sum(len(v) for v in mined.negatives.values())} negatives")
    return 0
