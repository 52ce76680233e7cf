"""``embtune train-adapter``: train a query adapter on cached embeddings of a frozen encoder."""

from __future__ import annotations

import dataclasses
import json
import sys

from embtune_core.commands import (
    Sources,
    check_encoder,
    check_output_dir,
    check_plugin,
    non_negative_float,
    non_negative_int,
    open_fraction,
    positive_float,
    positive_float_list,
    positive_int,
    positive_int_list,
)
from embtune_core.config import load_config, section
from embtune_core.config_paths import resolve_table
from embtune_core.errors import COMMAND_LINE, ConfigError, UsageError

# adapter_training (and with it torch) is imported in run(): `embtune --help` and every other
# command would otherwise pay about a second and a half for it.

NAME = "train-adapter"
HELP = "train a query adapter (linear, two-layer, plugin) on a frozen encoder; documents untouched"
DESCRIPTION = """Train a small transform applied to query embeddings only, on top of a frozen encoder (a
sentence-transformers model or an OpenAI-compatible embeddings API). Documents and existing vector
indexes stay as they are. Corpus and queries are embedded once through the embedding cache, so
epochs cost almost nothing and a re-run embeds nothing.

The adapter (safetensors + adapter_config.json) is written atomically to --out. Without --val, a
validation split is held out of --train by source document; the epoch with the best validation
MRR@10 is kept, and epoch 0 is the base model itself, so the adapter never scores below it there.

Options come from the command line, else the [adapter] table of --config, else the defaults:

  [adapter]
  type = "two-layer"           # adapter name
  adapter_options = { hidden = 384, activation = "gelu" }
  epochs = 12
  batch_size = 32
  lr = 1e-3
  temperature = 0.05
  identity_reg = 1.0
  seed = 42
  index_metric = "l2"          # the index the adapter will search ranks by L2 distance (the default
                               # with --host-vectors; inner_product otherwise)

Encoder specs: st:MODEL (sentence-transformers name or folder), openai:MODEL[@BASE_URL] (key
from OPENAI_API_KEY or --api-key-env), or a bare model name.

example:
  embtune train-adapter --train train_dataset.json --encoder st:sentence-transformers/all-MiniLM-L6-v2 \\
      --adapter linear --epochs 12 --out adapters/minilm-linear"""

_FLAG_FIELDS = ("epochs", "batch_size", "lr", "temperature", "temperature_grid", "identity_reg", "seed", "val_fraction", "patience",
                "hard_negative_weight", "selection_metric", "matryoshka_dims", "device", "index_metric")


def add_arguments(parser) -> None:
    parser.add_argument("--train", required=True, help="training dataset (LlamaIndex JSON, BEIR folder, pairs)")
    parser.add_argument("--val", help="validation dataset for early stopping (default: held out of --train)")
    parser.add_argument("--split", default="train",
                        help="qrels split read when --train is a BEIR folder (default: train)")
    parser.add_argument("--val-split", default="dev",
                        help="qrels split read when --val is a BEIR folder (default: dev)")
    parser.add_argument("--max-seq-length", type=positive_int, metavar="TOKENS",
                        help="token limit of a local sentence-transformers encoder (default: the model's own); "
                             "evaluate and serve the adapter at the same limit")
    parser.add_argument("--index-corpus", action="append", metavar="CORPUS",
                        help="the chunks the adapter will search (repeatable): any dataset, or a bare corpus (BEIR "
                             "corpus.jsonl or folder, {id, text} JSONL, LlamaIndex JSON with only corpus); only "
                             "their texts are read: LLM-free pseudo-queries made from them (inverse cloze x5 + crops x5 per "
                             "chunk) join the training pairs. Transductive, and on new documents far stronger "
                             "(bench/adapter_10k.py)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--encoder", help="encoder spec, e.g. st:sentence-transformers/all-MiniLM-L6-v2 or "
                                         "openai:text-embedding-3-small@http://127.0.0.1:8000/v1")
    group.add_argument("--model", help="sentence-transformers model name or folder (same as --encoder st:MODEL)")
    parser.add_argument("--host-vectors", action="store_true",
                        help="compute query and document vectors as DocsGPT and LangChain's HuggingFaceEmbeddings do: "
                             "plain encode(), no prompts, no normalisation but the model's own, and rank by L2 "
                             "distance as their FAISS indexes do (train the adapter for an index those hosts built); "
                             "sentence-transformers encoders only")
    parser.add_argument("--index-metric", choices=("inner_product", "l2"),
                        help="the metric of the index the adapter will search: inner_product (embtune's stores; "
                             "default) or l2 (FAISS IndexFlatL2: LangChain's FAISS.from_documents, DocsGPT; the "
                             "default with --host-vectors). Equal on unit-length vectors")
    from embtune_core.encoder_options import add_arguments as add_encoder_arguments

    add_encoder_arguments(parser)  # --query-prompt, --document-prompt, --backend (local models)
    parser.add_argument("--api-key-env", help="environment variable holding the API key (openai encoder)")
    parser.add_argument("--adapter", help="adapter type: linear, two-layer or a plugin's (default: linear)")
    parser.add_argument("--hidden", type=positive_int,
                        help="two-layer: hidden size (default: the embedding dimension)")
    parser.add_argument("--activation", help="two-layer: relu, gelu, silu, tanh, sigmoid, leaky_relu")
    parser.add_argument("--epochs", type=non_negative_int, help="maximum training epochs (default 12)")
    parser.add_argument("--batch-size", type=positive_int,
                        help="questions per batch, never two with one positive (default 32)")
    parser.add_argument("--lr", type=positive_float, help="AdamW learning rate")
    parser.add_argument("--temperature", type=positive_float,
                        help="softmax temperature of the contrastive loss")
    parser.add_argument("--temperature-grid", type=positive_float_list, metavar="T1,T2,...",
                        help="other temperatures to try (one adapter each); the validation split chooses, "
                             "e.g. 0.1,0.2")
    parser.add_argument("--identity-reg", type=non_negative_float,
                        help="weight of the penalty toward the identity map")
    parser.add_argument("--hard-negative-weight", type=non_negative_float,
                        help="weight of the mined hard-negative term")
    parser.add_argument("--val-fraction", type=open_fraction,
                        help="share of source documents held out (no --val)")
    parser.add_argument("--patience", type=non_negative_int,
                        help="epochs without validation gain before stopping")
    parser.add_argument("--matryoshka-dims", type=positive_int_list, metavar="D1,D2,...",
                        help="train over these embedding widths (Matryoshka loss on the query side) and keep only "
                             "an epoch that matches or beats the base at every one of them, e.g. 384,256,128,64")
    parser.add_argument("--selection-metric", help="mrr@10 (default), hit_rate@1, hit_rate@5, hit_rate@10")
    parser.add_argument("--seed", type=int, help="seed for initialisation, shuffling and the split (default 42)")
    parser.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--cache-dir", help="embedding cache folder (default: $EMBTUNE_CACHE/embeddings)")
    parser.add_argument("--config", help="TOML file with an [adapter] table")
    parser.add_argument("--out", required=True, help="output adapter folder (replaced atomically)")


def build_config(args):
    """AdapterTrainingConfig from the command line over the [adapter] table, and where each setting came from."""
    from embtune_core.adapter_training import AdapterTrainingConfig

    values: dict = {}
    origin = args.config or COMMAND_LINE
    sources = Sources(args.config, "adapter", origin=origin)
    if args.config:
        values.update(resolve_table(section(load_config(args.config), "adapter", args.config), args.config))
        sources.config({key.replace("-", "_"): value for key, value in values.items()})
        if "type" in values:
            sources.set("adapter", args.config, "adapter.type")
    for name in _FLAG_FIELDS:
        value = getattr(args, name, None)
        if value is not None:
            values[name] = value
    sources.command_line(args, (*_FLAG_FIELDS, "adapter", "hidden", "activation"))
    if args.adapter:
        values.pop("type", None)
        values["adapter"] = args.adapter
    if getattr(args, "host_vectors", False) and "index_metric" not in values and "index-metric" not in values:
        values["index_metric"] = "l2"  # the hosts' FAISS indexes (LangChain's default, DocsGPT's FaissStore)
    options = dict(values.get("adapter_options") or values.get("adapter-options") or {})
    if args.hidden is not None:
        options["hidden"] = args.hidden
    if args.activation:
        options["activation"] = args.activation
    if options:
        values.pop("adapter-options", None)
        values["adapter_options"] = options
    try:
        return AdapterTrainingConfig.from_mapping(values, origin), sources
    except ConfigError as exc:
        raise sources.blame(exc) from None


def run(args) -> int:
    # Everything the arguments alone can refute is refuted before a dataset or a model is read; what
    # needs no torch first (checking the config imports adapter_training, and torch with it).
    if args.model:
        spec, key = f"st:{args.model}", "model"
    elif args.encoder:
        spec, key = args.encoder, "encoder"
    else:
        raise UsageError("give --encoder SPEC or --model NAME", field="--encoder")
    check_encoder(spec, Sources().command_line(args, (key,)), key)
    check_output_dir(args.out, "--out", replaces="adapter_config.json")
    if args.cache_dir:
        check_output_dir(args.cache_dir, "--cache-dir")
    config, sources = build_config(args)
    check_plugin("adapters", config.adapter, sources, "adapter")

    from embtune_core.adapter_training import train_adapter
    from embtune_core.dataset import check_disjoint_queries, load_split, source_of
    from embtune_core.embedding_cache import EmbeddingCache
    from embtune_core.encoding import encoder_from_spec

    options = {"api_key": f"env:{args.api_key_env}"} if args.api_key_env else {}
    if args.max_seq_length:
        from embtune_core.encoding import parse_encoder_spec

        if parse_encoder_spec(spec)[0] != "sentence-transformers":
            raise UsageError("applies to local sentence-transformers encoders only", field="--max-seq-length")
        options["max_seq_length"] = args.max_seq_length
    if getattr(args, "host_vectors", False):
        from embtune_core.encoding import parse_encoder_spec

        if parse_encoder_spec(spec)[0] != "sentence-transformers":
            raise UsageError("applies to local sentence-transformers encoders only", field="--host-vectors")
        options.update(normalize=False, prompts=False)
    from embtune_core.encoder_options import from_args

    options.update(from_args(args, spec))
    encoder = encoder_from_spec(spec, **options)
    train = load_split(args.train, split=args.split, field="--train")
    val = load_split(args.val, split=args.val_split, field="--val", option="--val-split") if args.val else None
    if val is not None:
        check_disjoint_queries(train, val, path=args.val, field="--val")
    augment = None
    if args.index_corpus:
        from embtune_core.dataset import load_corpora
        from embtune_core.pseudo_queries import index_pseudo_queries

        corpus = load_corpora(args.index_corpus)  # only chunk texts: a bare corpus will do
        # train_adapter leaves out any that is word for word a question the epoch is chosen on (--val)
        augment = index_pseudo_queries(corpus, seed=config.seed)
    from embtune_core.locking import hold, lock_path_for_output

    with hold(lock_path_for_output(args.out), subject=args.out, what="--out"):
        result = train_adapter(encoder, train, val, config=config, cache=EmbeddingCache(args.cache_dir),
                               output_dir=args.out, augment=augment)
    metric = config.selection_metric
    record = result.adapter.config.training
    summary = {
        "adapter": config.adapter, "out": str(result.output_dir), "best_epoch": result.best_epoch,
        "train_source": source_of(args.train, args.split),
        "val_source": source_of(args.val, args.val_split) if args.val else "held out of the training set",
        "validation_before": result.baseline, "validation_after": result.best,
        "seconds": {k: round(v, 2) for k, v in result.timings.items()},
        "config": {k: v for k, v in dataclasses.asdict(config).items() if v is not None},
        "temperature": record["temperature"],  # the one trained with; "config" holds what was asked
        # How it ranks: the index's metric it was trained for, and whether adapted queries are unit length.
        "index_metric": result.adapter.config.index_metric, "normalize_output": result.adapter.config.normalize_output,
        **{key: record[key] for key in ("temperature_search", "augment_dropped_as_val_questions") if key in record},
    }
    print(json.dumps(summary, indent=2))
    print(f"{config.adapter} adapter -> {result.output_dir}: validation {metric} "
          f"{result.baseline[metric]:.4f} -> {result.best[metric]:.4f} (epoch {result.best_epoch}), "
          f"hit_rate@5 {result.baseline['hit_rate@5']:.4f} -> {result.best['hit_rate@5']:.4f}", file=sys.stderr)
    return 0
