"""``embtune evaluate``: compare retrieval systems on one dataset; write JSON, Markdown and HTML reports."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from embtune_core.commands import (
    Sources,
    check_encoder,
    check_output_dir,
    open_fraction,
    positive_int,
    positive_int_list,
)
from embtune_core.errors import ConfigError, EmbtuneError, UsageError

NAME = "evaluate"
HELP = "compare systems (models, adapters, APIs) on a QA dataset: IR metrics, CIs, significance, reports"
DESCRIPTION = """Evaluate any number of retrieval systems on one QA dataset and compare them in one table.

Each --system is NAME=SPEC (NAME labels it in the report; without "NAME=" the spec is the label):

  SPEC := ENCODER | ENCODER+adapter:ADAPTER_DIR | bm25 | hybrid:ENCODER[+adapter:ADAPTER_DIR]
  bm25 (or lexical:bm25)              BM25 from the bm25s library (lucene variant, k1=1.5, b=0.75,
                                      English stop words): the lexical baseline
  hybrid:ENCODER[+adapter:DIR]        that dense system and BM25 fused by reciprocal rank fusion
                                      (k=60, Cormack et al. 2009)
  ENCODER:
    model:NAME_OR_DIR                 a sentence-transformers model (hub name or local folder;
                                      packaged MiniLM/mpnet resolve offline); same as st:NAME_OR_DIR
    openai:MODEL[@BASE_URL]           an OpenAI-compatible embeddings API (key from OPENAI_API_KEY)
    PLUGIN:VALUE                      any registered encoder plugin, called with model=VALUE
  +adapter:ADAPTER_DIR                a trained query adapter applied to query embeddings only
                                      (refused if it was trained on another encoder)

Examples:
  embtune evaluate val.json --system base=model:sentence-transformers/all-MiniLM-L6-v2 \\
      --system tuned=model:runs/x/model \\
      --system adapted=model:sentence-transformers/all-MiniLM-L6-v2+adapter:runs/x/adapter \\
      --dims 384,256,128,64 --out reports/val
  embtune evaluate val.json --system base=model:sentence-transformers/all-MiniLM-L6-v2 --system bm25 \\
      --system hybrid=hybrid:model:sentence-transformers/all-MiniLM-L6-v2 --index train.json

--index DATASET adds that dataset's corpus (e.g. the training chunks) to the documents searched, so
the queries are answered against the whole index a deployment holds; the report says which corpus
was searched.

Every query is searched exactly over the whole corpus (FAISS, cosine similarity; GPU when
available), at each --dims dimension (Matryoshka: truncate, then renormalise). Metrics: LlamaIndex
hit rate@k and MRR@k (--k), and sentence-transformers' IR metrics (accuracy/precision/recall@1,3,5,10,
MRR@10, NDCG@10, MAP@100). Each mean has a bootstrap confidence interval over queries; each system
is compared with the FIRST one (paired randomisation test and paired t-test); the report's
verdict decides significance after Holm–Bonferroni correction over the comparisons made. Embeddings are cached,
so a repeated evaluation does not re-encode. --out writes report.json (per-query scores),
report.md and report.html (self-contained, with charts), each atomically."""

_NAME_PREFIX = re.compile(r"^([A-Za-z0-9_.-]+)=(.+)$")
_ADAPTER_MARK = "+adapter:"


@dataclass
class SystemSpec:
    name: str
    encoder_spec: str
    adapter_dir: str | None
    text: str
    lexical: bool = False  # BM25 alone
    fusion: str | None = None  # "rrf": hybrid of ENCODER and BM25


def parse_system(text: str) -> SystemSpec:
    """``NAME=ENCODER[+adapter:DIR]`` as its parts (see DESCRIPTION)."""
    text = text.strip()
    match = _NAME_PREFIX.match(text)
    name, spec = (match.group(1), match.group(2)) if match else (text, text)
    if not match:
        from embtune_core.secrets_scrub import scrub

        name = scrub(name)  # the label shows in every table: never a URL's credentials
    if spec.strip().lower() in ("bm25", "lexical:bm25"):
        return SystemSpec(name, "", None, spec, lexical=True)
    if spec.startswith("lexical:"):
        raise ConfigError(f"'{text}': unknown lexical system (known: lexical:bm25)", field="--system")
    if spec.startswith("hybrid:"):
        inner = parse_system(spec[len("hybrid:"):])
        if inner.lexical or inner.fusion:
            raise ConfigError(f"'{text}': a hybrid fuses BM25 with a dense system (hybrid:model:NAME)",
                              field="--system")
        return SystemSpec(name, inner.encoder_spec, inner.adapter_dir, spec, fusion="rrf")
    encoder_spec, mark, adapter_dir = spec.rpartition(_ADAPTER_MARK) if _ADAPTER_MARK in spec else (spec, "", "")
    if mark and not adapter_dir:
        raise ConfigError(f"'{text}': nothing after '+adapter:' (expected the adapter folder)", field="--system")
    if not encoder_spec:
        raise ConfigError(f"'{text}': no encoder before '+adapter:' (e.g. model:NAME+adapter:DIR)",
                          field="--system")
    if encoder_spec.startswith("model:"):
        if not encoder_spec[len("model:"):].strip():
            raise ConfigError(f"'{text}': no model after 'model:' (a model name or folder)", field="--system")
        encoder_spec = "st:" + encoder_spec[len("model:"):]
    if encoder_spec.startswith("adapter:"):
        raise ConfigError(f"'{text}': name the base encoder first, e.g. model:NAME+adapter:DIR", field="--system")
    return SystemSpec(name, encoder_spec, adapter_dir or None, spec)


def add_arguments(parser) -> None:
    parser.add_argument("dataset", help="QA dataset: LlamaIndex JSON, BEIR folder, pairs/triplets .jsonl/.csv")
    parser.add_argument("--system", action="append", required=True, metavar="NAME=SPEC",
                        help="a system to evaluate (repeat; the first is the baseline); see the syntax above")
    parser.add_argument("--dims", type=positive_int_list, default=None, metavar="D[,D...]",
                        help="embedding dimensions to evaluate (Matryoshka truncation); default: each system's full")
    parser.add_argument("--k", type=positive_int_list, default="5", metavar="K[,K...]",
                        help="cut-offs for LlamaIndex hit rate@k and MRR@k (default: 5)")
    parser.add_argument("--out", default=None, metavar="DIR", help="write report.json, report.md, report.html here")
    parser.add_argument("--split", default="test", help="BEIR qrels split (default: test)")
    parser.add_argument("--index", action="append", default=None, metavar="DATASET",
                        help="also search this dataset's corpus (e.g. the training split), as the deployed "
                             "index holds it (repeat for several)")
    parser.add_argument("--batch-size", type=positive_int, default=None, help="encoder batch size")
    parser.add_argument("--device", default=None, help="device for local models (cpu, cuda, mps)")
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                        help="dtype local models run in (default: fp32); logged with the device when a model loads")
    parser.add_argument("--max-seq-length", type=positive_int, default=None, metavar="TOKENS",
                        help="token limit of local sentence-transformers models (default: each model's own); "
                             "chunks longer than the limit are cut, so raise it for long chunks")
    from embtune_core.encoder_options import add_arguments as add_encoder_arguments

    add_encoder_arguments(parser)  # --query-prompt, --document-prompt, --backend (local models)
    parser.add_argument("--confidence", type=open_fraction, default=0.95,
                        help="confidence level of the intervals")
    parser.add_argument("--resamples", type=positive_int, default=2000,
                        help="bootstrap resamples (default: 2000)")
    parser.add_argument("--permutations", type=positive_int, default=10000,
                        help="randomisation-test permutations (default: 10000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and randomisation test")


def build_system(spec: SystemSpec, *, batch_size: int | None = None, device: str | None = None,
                 max_seq_length: int | None = None, adapter=None, precision: str | None = None,
                 encoder_options: dict | None = None):
    """The :class:`~embtune_core.evaluation.System` a parsed spec names (``adapter``: its folder, loaded)."""
    from embtune_core.encoding import encoder_from_spec, parse_encoder_spec
    from embtune_core.evaluation import System

    if spec.lexical:
        from embtune_core.lexical import BM25Spec

        return System(spec.name, BM25Spec(), None, spec.text)
    encoder_name, _ = parse_encoder_spec(spec.encoder_spec)
    options = {}
    if batch_size is not None:
        options["batch_size"] = batch_size
    if encoder_name == "sentence-transformers":
        if device is not None:
            options["device"] = device
        if max_seq_length is not None:
            options["max_seq_length"] = max_seq_length
        if precision is not None:
            options["precision"] = precision
        options.update(encoder_options or {})  # prompts, backend (embtune_core.encoder_options)
    elif encoder_options:
        import logging

        logging.getLogger(__name__).warning("system '%s': %s apply to local sentence-transformers models only; "
                                            "not applied to it", spec.name, ", ".join(sorted(encoder_options)))
    encoder = encoder_from_spec(spec.encoder_spec, **options)
    if spec.adapter_dir:
        if adapter is None:
            from embtune_core.adapter_io import load_adapter

            adapter = load_adapter(spec.adapter_dir)
        adapter.check_base(encoder)
    return System(spec.name, encoder, adapter, spec.text, fusion=spec.fusion)


def known_width(spec: SystemSpec, system) -> int | None:
    """A system's embedding width when it is known without loading a model or calling an API: from its
    adapter, or from the config files of a local sentence-transformers folder; None when unsure."""
    import json
    from pathlib import Path

    from embtune_core.encoding import parse_encoder_spec
    from embtune_core.models import resolve

    if spec.lexical:
        return None
    if system.adapter is not None:
        return int(system.adapter.config.dimension)
    name, options = parse_encoder_spec(spec.encoder_spec)
    if name != "sentence-transformers" or getattr(system.encoder, "truncate_dim", None):
        return None
    folder = Path(resolve(str(options["model"]), assemble=False).target)
    width = None
    try:
        for module in json.loads((folder / "modules.json").read_text(encoding="utf-8")):
            kind = str(module.get("type", "")).rsplit(".", 1)[-1]
            config_path = folder / str(module.get("path", "")) / "config.json"
            if kind == "Pooling":  # sentence-transformers 6 writes pooling_mode, older ones a flag per mode
                config = json.loads(config_path.read_text(encoding="utf-8"))
                mode = config.get("pooling_mode")
                modes = ((1 if isinstance(mode, str) else len(mode)) if mode is not None
                         else sum(bool(v) for k, v in config.items() if k.startswith("pooling_mode_")))
                dimension = config.get("embedding_dimension") or config["word_embedding_dimension"]
                width = int(dimension) * max(1, modes)
            elif kind == "Dense":
                width = int(json.loads(config_path.read_text(encoding="utf-8"))["out_features"])
            elif kind not in ("Transformer", "Normalize"):
                return None  # a module whose output width we do not know how to read
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return width


def run(args) -> int:
    from embtune_core.dataset import load_any
    from embtune_core.evaluation import MetricSettings, evaluate_systems
    from embtune_core.report import report_json, report_markdown, write_reports

    # Everything the arguments alone can refute is refuted before the dataset or a model is read.
    if args.out:
        check_output_dir(args.out, "--out")
    try:
        specs = [parse_system(text) for text in args.system]
    except ConfigError as exc:
        raise UsageError(exc.problem, field=exc.field) from None
    names = [spec.name for spec in specs]
    if len(set(names)) < len(names):
        raise UsageError(f"system name '{next(n for n in names if names.count(n) > 1)}' is used twice "
                         "(label each with NAME=SPEC)", field="--system")
    adapters = {}
    for spec in specs:
        if spec.lexical:
            continue
        check_encoder(spec.encoder_spec, Sources().command_line(args, ("system",)), "system")
        if spec.adapter_dir:
            from embtune_core.adapter_io import load_adapter

            try:
                adapters[spec.name] = load_adapter(spec.adapter_dir)
            except EmbtuneError as exc:
                raise type(exc)(exc.problem, path=exc.path, field=exc.field or "--system") from None
    if args.max_seq_length:  # a limit the model cannot read: refused before anything loads
        from embtune_core.encoding import parse_encoder_spec
        from embtune_core.models import resolve
        from embtune_core.token_limits import check_limit

        for spec in specs:
            name, options = parse_encoder_spec(spec.encoder_spec)
            if name == "sentence-transformers":
                resolution = resolve(str(options["model"]), assemble=False)
                if resolution.is_local:
                    check_limit(resolution.target, args.max_seq_length, str(options["model"]))
    from embtune_core import encoder_options

    dims = args.dims
    settings = MetricSettings(hit_rate_at=tuple(args.k))
    dataset = load_any(args.dataset, split=args.split)
    extra = {}
    for path in args.index or []:
        extra.update(load_any(path, split=args.split).corpus)
    systems = [build_system(spec, batch_size=args.batch_size, device=args.device,
                            max_seq_length=args.max_seq_length, adapter=adapters.get(spec.name),
                            precision=args.precision, encoder_options=encoder_options.from_args(args))
               for spec in specs]
    for spec, system in zip(specs, systems):
        width = known_width(spec, system)
        if dims and width and min(dims) > width:  # else evaluate_systems checks, once it has embedded
            raise UsageError(f"system '{system.name}' has {width}-dimensional embeddings, narrower than "
                             f"every requested dimension {sorted(dims, reverse=True)}", field="--dims")
    evaluation = evaluate_systems(systems, dataset, dims=dims, settings=settings, dataset_name=str(args.dataset),
                                  confidence=args.confidence, seed=args.seed, n_resamples=args.resamples,
                                  n_permutations=args.permutations, extra_corpus=extra or None)
    from pathlib import Path

    from embtune_core.report_verdict import command_context

    evaluation.context.update(command_context(args.dataset, split=args.split if Path(args.dataset).is_dir() else None,
                                              index=args.index))

    if Path(args.dataset).is_dir():
        evaluation.split = args.split
    data = report_json(evaluation)
    markdown = report_markdown(data)
    if args.out:
        paths = write_reports(evaluation, args.out, data=data)
        sys.stdout.write(markdown.split("\n## All metrics")[0] + "\n")  # the full table is in the files
        print(f"wrote {paths['json']}, {paths['markdown']}, {paths['html']}")
    else:
        sys.stdout.write(markdown)
    return 0
