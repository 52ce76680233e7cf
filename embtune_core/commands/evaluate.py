"""``embtune evaluate``: compare retrieval systems on one dataset; write JSON, Markdown and HTML reports."""

from __future__ import annotations

import sys
from dataclasses import dataclass, fields

from embtune_core.cli_fields import add_fields, from_command_line, given, setting
from embtune_core.commands import Sources, check_encoder, check_output_dir
from embtune_core.encoders.encoder_options import EncoderFlags
from embtune_core.errors import ConfigError, EmbtuneError, UsageError
from embtune_core.retrieval.systems import (
    build_system,
    check_token_limit,
    evaluate,
    known_width,
    parse_system,
)
from embtune_core.settings import EvaluateSettings

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
MRR@10, NDCG@10, MAP@100). A BEIR folder (graded qrels) is scored as pytrec_eval scores it, which
is what BEIR, MTEB and pyserini report: grades as NDCG gains, grade >= 1 relevant for the other
measures, judged documents missing from the corpus counted, a query's own-id document left out,
ties by document id descending; LlamaIndex JSON and pairs files as sentence-transformers'
InformationRetrievalEvaluator. The report's first note names the convention. Each mean has a bootstrap confidence interval over queries; each system
is compared with the FIRST one (paired randomisation test and paired t-test); the report's
verdict decides significance after Holm–Bonferroni correction over the comparisons made. Embeddings are cached,
so a repeated evaluation does not re-encode. --out writes report.json (per-query scores),
report.md and report.html (self-contained, with charts), each atomically."""

@dataclass
class EvaluateRun:
    """What one ``embtune evaluate`` compares, on what, and where it writes, beside the measuring
    settings (:class:`~embtune_core.settings.EvaluateSettings`) and the encoder's options."""

    dataset: str = setting(help="QA dataset: LlamaIndex JSON, BEIR folder, pairs/triplets .jsonl/.csv",
                           positional=True)
    system: list[str] = setting(help="a system to evaluate (repeat; the first is the baseline); see the syntax "
                                     "above", metavar="NAME=SPEC", append=True, required=True, default_factory=list)
    out: str | None = setting(None, "write report.json, report.md, report.html here", metavar="DIR")
    split: str = setting("test", "BEIR qrels split (default: test)")
    index: list[str] | None = setting(
        None, "also search these chunks (e.g. the training split), as the deployed index holds them (repeat for "
              "several): any dataset, or a bare corpus (BEIR corpus.jsonl or folder, {id, text} JSONL, LlamaIndex "
              "JSON with only corpus)", metavar="CORPUS", append=True)
    seed: int = setting(0, "seed of the bootstrap and randomisation test")


SETTINGS = (EvaluateRun, EvaluateSettings, EncoderFlags)  # every argument is a field of one of these
INVOCATION_FLAGS = ()


def add_arguments(parser) -> None:
    add_fields(parser, EvaluateRun, skip=("seed",))
    add_fields(parser, EvaluateSettings, skip=("confidence", "resamples", "permutations"))
    add_fields(parser, EncoderFlags)  # --query-prompt, --document-prompt, --backend (local models)
    add_fields(parser, EvaluateSettings, skip=[f.name for f in fields(EvaluateSettings)
                                               if f.name not in ("confidence", "resamples", "permutations")])
    add_fields(parser, EvaluateRun, skip=[f.name for f in fields(EvaluateRun) if f.name != "seed"])


def run(args) -> int:
    run_args = EvaluateRun(**given(args, EvaluateRun))
    from embtune_core.data.dataset import load_any
    from embtune_core.reporting.report import report_json, report_markdown, write_reports

    # Everything the arguments alone can refute is refuted before the dataset or a model is read.
    if run_args.out:
        check_output_dir(run_args.out, "--out")
    try:
        specs = [parse_system(text) for text in run_args.system]
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
            from embtune_core.adapters.adapter_io import load_adapter

            try:
                adapters[spec.name] = load_adapter(spec.adapter_dir)
            except EmbtuneError as exc:
                raise type(exc)(exc.problem, path=exc.path, field=exc.field or "--system") from None
    settings = EvaluateSettings(**from_command_line(args, EvaluateSettings))
    check_token_limit(specs, settings.max_seq_length)  # a limit the model cannot read: refused before anything loads
    dims = settings.dims
    dataset = load_any(run_args.dataset, split=run_args.split)
    from embtune_core.data.dataset import load_corpora

    extra = load_corpora(run_args.index or [])  # only chunk texts: a bare corpus (BEIR corpus.jsonl...) will do
    from embtune_core.encoders import encoder_options

    systems = [build_system(spec, settings, adapter=adapters.get(spec.name),
                            encoder_options=encoder_options.from_args(args, multi_vector=True)) for spec in specs]
    for spec, system in zip(specs, systems):
        width = known_width(spec, system)
        if dims and width and min(dims) > width:  # else evaluate_systems checks, once it has embedded
            raise UsageError(f"system '{system.name}' has {width}-dimensional embeddings, narrower than "
                             f"every requested dimension {sorted(dims, reverse=True)}", field="--dims")
    evaluation = evaluate(systems, dataset, settings, dataset_name=str(run_args.dataset), seed=run_args.seed,
                          extra_corpus=extra)
    from pathlib import Path

    from embtune_core.reporting.report_verdict import command_context

    split = run_args.split if Path(run_args.dataset).is_dir() else None
    evaluation.context.update(command_context(run_args.dataset, split=split, index=run_args.index))

    if Path(run_args.dataset).is_dir():
        evaluation.split = run_args.split
    data = report_json(evaluation)
    markdown = report_markdown(data)
    if run_args.out:
        paths = write_reports(evaluation, run_args.out, data=data)
        sys.stdout.write(markdown.split("\n## All metrics")[0] + "\n")  # the full table is in the files
        print(f"wrote {paths['json']}, {paths['markdown']}, {paths['html']}")
    else:
        sys.stdout.write(markdown)
    return 0
