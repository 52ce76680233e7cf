"""``embtune train-adapter``: train a query adapter on cached embeddings of a frozen encoder."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass

from embtune_core.adapters.adapter_settings import AdapterTrainingConfig
from embtune_core.cli_fields import add_fields, flags_of, given, positive_int, setting
from embtune_core.commands import Sources, check_encoder, check_output_dir, check_plugin
from embtune_core.config import load_config, section
from embtune_core.config_paths import resolve_table
from embtune_core.encoders.encoder_options import EncoderFlags
from embtune_core.errors import COMMAND_LINE, ConfigError, UsageError
from embtune_plugins.adapters import TwoLayerOptions

# adapter_training (and with it torch) is imported in run(): `embtune --help` and every other
# command would otherwise pay about a second and a half for it. Its settings are declared without
# torch (embtune_core.adapters.adapter_settings).

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

@dataclass
class AdapterRunInputs:
    """What one ``embtune train-adapter`` reads and writes, beside the ``[adapter]`` table's settings
    (:class:`~embtune_core.adapters.adapter_settings.AdapterTrainingConfig`) and the encoder's options."""

    train: str = setting(help="training dataset (LlamaIndex JSON, BEIR folder, pairs)", required=True)
    out: str = setting(help="output adapter folder (replaced atomically)", required=True)
    val: str | None = setting(None, "validation dataset for early stopping (default: held out of --train)")
    split: str = setting("train", "qrels split read when --train is a BEIR folder (default: train)")
    val_split: str = setting("dev", "qrels split read when --val is a BEIR folder (default: dev)")
    max_seq_length: int | None = setting(
        None, "token limit of a local sentence-transformers encoder (default: the model's own); evaluate and "
              "serve the adapter at the same limit", metavar="TOKENS", parse=positive_int)
    index_corpus: list[str] | None = setting(
        None, "the chunks the adapter will search (repeatable): any dataset, or a bare corpus (BEIR corpus.jsonl "
              "or folder, {id, text} JSONL, LlamaIndex JSON with only corpus); only their texts are read: "
              "LLM-free pseudo-queries made from them (inverse cloze x5 + crops x5 per chunk) join the training "
              "pairs. Transductive, and on new documents far stronger (bench/adapter_10k.py)",
        metavar="CORPUS", append=True)
    encoder: str | None = setting(None, "encoder spec, e.g. st:sentence-transformers/all-MiniLM-L6-v2 or "
                                        "openai:text-embedding-3-small@http://127.0.0.1:8000/v1", group="encoder")
    model: str | None = setting(None, "sentence-transformers model name or folder (same as --encoder st:MODEL)",
                                group="encoder")
    host_vectors: bool = setting(
        False, "compute query and document vectors as DocsGPT and LangChain's HuggingFaceEmbeddings do: plain "
               "encode(), no prompts, no normalisation but the model's own, and rank by L2 distance as their FAISS "
               "indexes do (train the adapter for an index those hosts built); sentence-transformers encoders only")
    api_key_env: str | None = setting(None, "environment variable holding the API key (openai encoder)")
    cache_dir: str | None = setting(None, "embedding cache folder (default: $EMBTUNE_CACHE/embeddings)")


# Every flag but --config is a field of one of these (tests/test_layout.py); --hidden and --activation
# are the two-layer adapter's declared options (embtune_plugins.adapters).
SETTINGS = (AdapterRunInputs, AdapterTrainingConfig, EncoderFlags, TwoLayerOptions)
INVOCATION_FLAGS = ("config",)
ADAPTER_OPTION_FLAGS = ("hidden", "activation")


def add_arguments(parser) -> None:
    groups: dict = {}
    add_fields(parser, AdapterRunInputs, groups=groups)
    add_fields(parser, EncoderFlags)  # --query-prompt, --document-prompt, --backend (local models)
    add_fields(parser, AdapterTrainingConfig)
    add_fields(parser, TwoLayerOptions)
    parser.add_argument("--config", help="TOML file with an [adapter] table")


def build_config(args):
    """AdapterTrainingConfig from the command line over the [adapter] table, and where each setting came from."""
    origin = args.config or COMMAND_LINE
    sources = Sources(args.config, "adapter", origin=origin)
    table: dict = {}
    if args.config:
        table = resolve_table(section(load_config(args.config), "adapter", args.config), args.config)
        sources.config({key.replace("-", "_"): value for key, value in table.items()})
        if "type" in table:
            sources.set("adapter", args.config, "adapter.type")
    values = dict(table)
    flags = given(args, AdapterTrainingConfig)
    if "adapter" in flags:
        values.pop("type", None)
    values.update(flags)
    sources.command_line(args, (*flags_of(AdapterTrainingConfig), *ADAPTER_OPTION_FLAGS))
    if getattr(args, "host_vectors", False) and "index_metric" not in values and "index-metric" not in values:
        values["index_metric"] = "l2"  # the hosts' FAISS indexes (LangChain's default, DocsGPT's FaissStore)
    options = {**(values.get("adapter_options") or values.get("adapter-options") or {}),
               **given(args, TwoLayerOptions)}
    if options:
        values.pop("adapter-options", None)
        values["adapter_options"] = options
    try:
        return AdapterTrainingConfig.from_mapping(values, origin), sources
    except ConfigError as exc:
        raise sources.blame(exc) from None


def run(args) -> int:
    inputs = AdapterRunInputs(**given(args, AdapterRunInputs))
    # Everything the arguments alone can refute is refuted before a dataset or a model is read; what
    # needs no torch first (checking the config imports adapter_training, and torch with it).
    if inputs.model:
        spec, key = f"st:{inputs.model}", "model"
    elif inputs.encoder:
        spec, key = inputs.encoder, "encoder"
    else:
        raise UsageError("give --encoder SPEC or --model NAME", field="--encoder")
    check_encoder(spec, Sources().command_line(args, (key,)), key)
    check_output_dir(inputs.out, "--out", replaces="adapter_config.json")
    if inputs.cache_dir:
        check_output_dir(inputs.cache_dir, "--cache-dir")
    config, sources = build_config(args)
    check_plugin("adapters", config.adapter, sources, "adapter")

    from embtune_core.adapters.adapter_training import train_adapter
    from embtune_core.data.dataset import check_disjoint_queries, load_split, source_of
    from embtune_core.encoders.embedding_cache import EmbeddingCache
    from embtune_core.encoders.encoding import encoder_from_spec

    options = {"api_key": f"env:{inputs.api_key_env}"} if inputs.api_key_env else {}
    if inputs.max_seq_length:
        from embtune_core.encoders.encoding import parse_encoder_spec

        if parse_encoder_spec(spec)[0] != "sentence-transformers":
            raise UsageError("applies to local sentence-transformers encoders only", field="--max-seq-length")
        options["max_seq_length"] = inputs.max_seq_length
    if inputs.host_vectors:
        from embtune_core.encoders.encoding import parse_encoder_spec

        if parse_encoder_spec(spec)[0] != "sentence-transformers":
            raise UsageError("applies to local sentence-transformers encoders only", field="--host-vectors")
        options.update(normalize=False, prompts=False)
    from embtune_core.encoders.encoder_options import from_args

    options.update(from_args(args, spec))
    encoder = encoder_from_spec(spec, **options)
    train = load_split(inputs.train, split=inputs.split, field="--train")
    val = load_split(inputs.val, split=inputs.val_split, field="--val", option="--val-split") if inputs.val else None
    if val is not None:
        check_disjoint_queries(train, val, path=inputs.val, field="--val")
    augment = None
    if inputs.index_corpus:
        from embtune_core.adapters.pseudo_queries import index_pseudo_queries
        from embtune_core.data.dataset import load_corpora

        corpus = load_corpora(inputs.index_corpus)  # only chunk texts: a bare corpus will do
        # train_adapter leaves out any that is word for word a question the epoch is chosen on (--val)
        augment = index_pseudo_queries(corpus, seed=config.seed)
    from embtune_core.runtime.locking import hold, lock_path_for_output

    with hold(lock_path_for_output(inputs.out), subject=inputs.out, what="--out"):
        result = train_adapter(encoder, train, val, config=config, cache=EmbeddingCache(inputs.cache_dir),
                               output_dir=inputs.out, augment=augment)
    metric = config.selection_metric
    record = result.adapter.config.training
    summary = {
        "adapter": config.adapter, "out": str(result.output_dir), "best_epoch": result.best_epoch,
        "train_source": source_of(inputs.train, inputs.split),
        "val_source": source_of(inputs.val, inputs.val_split) if inputs.val else "held out of the training set",
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
