"""``embtune train``: full or partial fine-tuning of a sentence-transformers model with a loss strategy."""

from __future__ import annotations

import argparse

from embtune_core.commands import (
    Sources,
    check_model,
    check_output_dir,
    check_plugin,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
    positive_int_list,
)
from embtune_core.config import load_config, section
from embtune_core.config_paths import resolve_table
from embtune_core.errors import COMMAND_LINE, ConfigError, PluginError, UsageError

NAME = "train"
HELP = "fine-tune a sentence-transformers model on a QA dataset (full or last-N-layers)"
DESCRIPTION = """Fine-tune a sentence-transformers model on a QA dataset (LlamaIndex JSON, BEIR folder or
pairs/triplets JSONL/CSV) with a loss strategy (see `embtune plugins`): mnrl, cached-mnrl, gist,
contrastive, online-contrastive, cosine, triplet; --matryoshka-dims wraps any of them in Matryoshka
training. With --val the model is evaluated every --save-steps steps and the checkpoint with the best
NDCG@10 is kept. A BEIR folder is read with its train split (--split) for --train and its dev split
(--val-split) for --val; a folder without that split is refused, and so is a validation set that
shares queries with the training set. Writes a sentence-transformers model directory with a model card (README.md) to --out;
checkpoints and loss_log.jsonl go to --checkpoint-dir (default: OUT.checkpoints), and --resume continues
from the newest checkpoint there. Settings may come from the [train] table of --config (same names,
underscores); options given on the command line win. Runs unchanged under torchrun / accelerate launch.

example:
  embtune train --train train_dataset.json --val val_dataset.json --loss mnrl --epochs 2 --out models/ft"""


def add_arguments(parser) -> None:
    # Every default is None so we can tell what was given and let it override the config file.
    parser.add_argument("--config", help="TOML file whose [train] table holds these settings")
    parser.add_argument("--train", help="training dataset")
    parser.add_argument("--val", help="validation dataset (evaluation during training, best checkpoint)")
    parser.add_argument("--split", help="qrels split read when --train is a BEIR folder (default: train)")
    parser.add_argument("--val-split", help="qrels split read when --val is a BEIR folder (default: dev)")
    parser.add_argument("--model", help="base model name or directory (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--loss", help="loss strategy (default: mnrl)")
    parser.add_argument("--loss-option", action="append", metavar="KEY=VALUE",
                        help="option for the loss strategy, e.g. mini_batch_size=16 (repeatable)")
    parser.add_argument("--matryoshka-dims", type=positive_int_list, metavar="D1,D2,...",
                        help="wrap the loss in MatryoshkaLoss over these dimensions, e.g. 384,256,128,64")
    parser.add_argument("--epochs", type=positive_float,
                        help="passes over the training data (default: 3; fractions allowed)")
    parser.add_argument("--batch-size", type=positive_int,
                        help="pairs per batch; more in-batch negatives (default: 64, fewer when the data has fewer distinct texts)")
    parser.add_argument("--lr", type=positive_float, help="learning rate (default: 5e-5)")
    parser.add_argument("--warmup-ratio", type=fraction,
                        help="share of steps for linear warm-up (default: 0.1)")
    parser.add_argument("--seed", type=int, help="random seed for data order and initialisation (default: 42)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (overrides --epochs)")
    parser.add_argument(
        "--save-steps", type=positive_int,
        help="checkpoint (and evaluate) every N steps (default: each epoch)"
    )
    parser.add_argument("--recommend", action=argparse.BooleanOptionalAction, default=None,
                        help="after training, compare the base model, the fine-tune, BM25, their tuned hybrids and "
                             "sparse-dense vectors on --val and write the winner to OUT.deploy (default: on)")
    parser.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue from the newest checkpoint in the checkpoint folder",
    )
    layers = parser.add_mutually_exclusive_group()
    layers.add_argument(
        "--train-last-layers",
        type=non_negative_int,
        metavar="N",
        help="partial fine-tuning: train only the last N transformer layers (+ pooling, heads)",
    )
    layers.add_argument(
        "--freeze-layers",
        type=non_negative_int,
        metavar="N",
        help="partial fine-tuning: freeze the embeddings and the first N transformer layers",
    )
    parser.add_argument("--max-seq-length", type=positive_int,
                        help="tokens read of each text in training (default: the model's own); the exported "
                             "model keeps the model's own limit when that is longer")
    parser.add_argument("--export-max-seq-length", type=positive_int,
                        help="token limit the exported model carries (default: the larger of the model's own "
                             "and --max-seq-length)")
    parser.add_argument("--keep-if-worse", action="store_true", default=None,
                        help="export the trained model even when it scores below the base model on --val "
                             "(default: the base model is exported unchanged, and the run says so)")
    from embtune_core.commands.train_options import add_lora_and_tracking_arguments

    add_lora_and_tracking_arguments(parser, layers)
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16", "fp16"), help="auto: bf16/fp16 on a GPU, fp32 on CPU"
    )
    parser.add_argument("--index-corpus", action="append", metavar="CORPUS",
                        help="index-aware fine-tuning: LLM-free pseudo-queries (inverse cloze + crops) from the "
                             "chunk texts of this corpus (the documents your index will hold; no questions or "
                             "labels are read) join the training questions (repeatable). Any dataset, or a bare "
                             "corpus: BEIR corpus.jsonl or folder, {id, text} JSONL, LlamaIndex JSON with only corpus")
    parser.add_argument("--index-pseudo-queries", type=_mix, metavar="GEN=N,...",
                        help="pseudo-queries per index chunk by generator (default: ict=1,crop=1)")
    parser.add_argument("--index-ratio", type=positive_float,
                        help="at most this many pseudo-queries per real training query (default: 1)")
    parser.add_argument("--index-hard-negatives", type=non_negative_int, metavar="N",
                        help="mine N hard negatives over the index with the base model (false-negative guard) for "
                             "every training query that has none (default: 0)")
    parser.add_argument("--document-windows", choices=("off", "best"),
                        help="positives longer than the token limit: off (cut at the limit; default) or best (split "
                             "into windows; each question trains on the window the base model ranks first)")
    parser.add_argument("--checkpoint-dir", help="checkpoints and loss log (default: OUT.checkpoints)")
    parser.add_argument("--out", help="output model directory")


def _mix(text: str) -> dict[str, int]:
    """``ict=1,crop=2`` -> {"ict": 1, "crop": 2} (an argparse type: a bad value is exit 2 naming the option)."""
    import argparse

    mix = {}
    for item in text.split(","):
        name, sep, count = item.partition("=")
        if not sep or not name.strip() or not count.strip().isdigit() or int(count) < 1:
            raise argparse.ArgumentTypeError(f"must be GENERATOR=N[,GENERATOR=N...] with N >= 1, got '{text}'")
        mix[name.strip()] = int(count)
    return mix


def _parse_value(text: str):
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


SETTING_KEYS = ("train", "val", "split", "val_split", "model", "loss", "matryoshka_dims", "epochs", "batch_size", "lr",
                "warmup_ratio", "seed", "max_steps", "save_steps", "resume", "train_last_layers", "freeze_layers",
                "max_seq_length", "export_max_seq_length", "keep_if_worse", "index_corpus", "index_pseudo_queries",
                "index_ratio", "index_hard_negatives", "document_windows", "precision", "checkpoint_dir", "out",
                "lora", "lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_merge",
                "query_prompt", "document_prompt", "report_to", "recommend")


# Settings whose flag is not --<key with dashes>: errors name the flag the user typed.
FLAGS = {"lora_merge": "--merge"}


def settings_from_args(args):
    """TrainSettings from the [train] table of --config, overridden by options given on the command line,
    and the :class:`Sources` saying which setting came from where (for errors raised later)."""
    from embtune_core.training import TrainSettings

    values: dict = {}
    origin = args.config or COMMAND_LINE
    sources = Sources(args.config, "train", origin=origin)
    if args.config:
        values.update(resolve_table(section(load_config(args.config), "train", args.config), args.config))
        sources.config(values)
    for key in SETTING_KEYS:
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    sources.command_line(args, SETTING_KEYS, FLAGS)
    if args.loss_option:
        options = dict(values.get("loss_options") or {})
        for item in args.loss_option:
            key, sep, value = item.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"expected KEY=VALUE, got '{item}'", field="--loss-option")
            options[key.strip()] = _parse_value(value.strip())
        values["loss_options"] = options
        sources.set("loss_options", COMMAND_LINE, "--loss-option")
    try:
        return TrainSettings.from_mapping(values, origin), sources
    except (ConfigError, PluginError) as exc:  # an unknown generator in index_pseudo_queries: exit 4
        raise sources.blame(exc) from None


def check_settings(settings, sources: Sources) -> None:
    """Refute what the settings alone can refute, before train() reads a dataset or loads a model."""
    from embtune_core.losses import create_strategy

    check_output_dir(settings.out, sources.where("out")[1], replaces="modules.json")
    check_output_dir(settings.checkpoints, sources.where("checkpoint_dir")[1])
    check_plugin("loss_strategies", settings.loss, sources, "loss")
    try:
        create_strategy(settings.loss, matryoshka_dims=settings.matryoshka_dims,
                        **{"seed": settings.seed, **settings.loss_options})
    except ConfigError as exc:
        key = "matryoshka_dims" if exc.field == "matryoshka_dims" else "loss_options"
        raise sources.blame(exc, key) from None
    check_model(settings.model, sources, "model")


def run(args) -> int:
    from embtune_core.locking import hold, lock_path_for_output
    from embtune_core.training import train

    settings, sources = settings_from_args(args)
    check_settings(settings, sources)
    import contextlib
    import os

    # One writer per --out and per checkpoint folder (two runs sharing checkpoints would resume each
    # other's state). Under torchrun every rank runs this command: rank 0 alone holds the locks.
    with contextlib.ExitStack() as locks:
        if int(os.environ.get("RANK", "0")) == 0:
            locks.enter_context(hold(lock_path_for_output(settings.out), subject=settings.out,
                                     what=sources.where("out")[1]))
            locks.enter_context(hold(lock_path_for_output(settings.checkpoints), subject=settings.checkpoints,
                                     what=sources.where("checkpoint_dir")[1]))
        summary = train(settings)
    before, after = summary["metrics_before"], summary["metrics_after"]
    if not summary["saved"]:
        return 0  # another rank (rank 0) wrote the model and reports
    print(
        f"model written to {settings.out} ({summary['global_step']} steps, "
        f"train loss {summary['train_loss']:.4f}; {summary['device']}, {summary['precision']}, "
        f"{summary['world_size']} process(es))"
    )
    batches = summary["data"].get("batches") or {}
    if batches:
        rows = summary["data"]["train_rows"]
        print(f"  batches per epoch {batches['per_epoch']} ({batches['mean_rows_per_batch']} rows on average, "
              f"batch size {batches['batch_size']}; each of the {rows} training rows used once per epoch)")
    for note in summary["data"].get("notes") or []:
        print(f"  note: {note}")
    for key in ("hit@5", "mrr@10", "ndcg@10"):
        if key in before or key in after:
            print(f"  {key:8s} {before.get(key, float('nan')):.4f} -> {after.get(key, float('nan')):.4f}")
    if summary.get("exported") == "base":
        print(f"  the trained model scored below the base on --val: {settings.out} holds the base model unchanged "
              "(--keep-if-worse exports the trained one)")
    if settings.recommend:
        recommend_after_training(settings)
    return 0


def recommend_after_training(settings) -> None:
    """The retriever to deploy, chosen on --val among the base model, the fine-tune, BM25, their tuned
    hybrids and sparse-dense vectors (embtune_core.recommend), written to OUT.deploy; without --val there is
    nothing held out to choose on, and it says so."""
    from pathlib import Path

    from embtune_core.dataset import load_split
    from embtune_core.recommend import Candidate, candidate_from_row, hybrid_of, select

    if not settings.val:
        print("  no recommendation: it is chosen on held-out questions (--val); `embtune run` holds out training "
              "documents itself and compares every technique")
        return
    deploy = Path(str(settings.out).rstrip("/\\") + ".deploy")
    dev = load_split(settings.val, split=settings.val_split, field="--val", option="--val-split")
    dense = [Candidate("base", f"model:{settings.model}"), Candidate("fine-tuned", f"model:{settings.out}", reembed=True,
                                                                     artefacts={"model": str(settings.out)})]
    candidates = [*dense, Candidate("bm25", "bm25", single_index=False), *[hybrid_of(c) for c in dense]]
    print("recommendation, chosen on --val:")
    work = Path(str(settings.checkpoints)) / "recommend"
    selection = select(candidates, dev, work_dir=work, echo=lambda line: print(line))
    from embtune_core.deploy import write_deploy_folder

    written = write_deploy_folder(deploy, selection.to_json(), [candidate_from_row(r) for r in selection.rows],
                                  base_model=str(settings.model), echo=lambda line: print(f"  {line}"))
    print(f"  deploy it from {written['folder']} (DEPLOY.md there has the lines for LangChain, LlamaIndex, DocsGPT)")
