"""``embtune train``: full or partial fine-tuning of a sentence-transformers model with a loss strategy."""

from __future__ import annotations

from embtune_core.cli_fields import add_fields, flags_of, from_command_line
from embtune_core.commands import Sources, check_model, check_output_dir, check_plugin
from embtune_core.config import load_config, section
from embtune_core.config_paths import resolve_table
from embtune_core.errors import COMMAND_LINE, ConfigError, PluginError
from embtune_core.finetuning.training_args import TrainSettings

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


SETTINGS = TrainSettings  # every flag but --config is a field of it (tests/test_layout.py)
INVOCATION_FLAGS = ("config",)


def add_arguments(parser) -> None:
    """``--config`` and one flag per field of :class:`TrainSettings` (its help, type and checks); every
    default is None, so what was given overrides the config file and nothing else does."""
    parser.add_argument("--config", help="TOML file whose [train] table holds these settings")
    add_fields(parser, TrainSettings)


def settings_from_args(args):
    """TrainSettings from the [train] table of --config, overridden by options given on the command line,
    and the :class:`Sources` saying which setting came from where (for errors raised later)."""
    table: dict = {}
    origin = args.config or COMMAND_LINE
    sources = Sources(args.config, "train", origin=origin)
    if args.config:
        table = resolve_table(section(load_config(args.config), "train", args.config), args.config)
        sources.config(table)
    values = from_command_line(args, TrainSettings, table)
    sources.command_line(args, flags_of(TrainSettings), flags_of(TrainSettings))
    try:
        return TrainSettings.from_mapping(values, origin), sources
    except (ConfigError, PluginError) as exc:  # an unknown generator in index_pseudo_queries: exit 4
        raise sources.blame(exc) from None


def check_settings(settings, sources: Sources) -> None:
    """Refute what the settings alone can refute, before train() reads a dataset or loads a model."""
    from embtune_core.finetuning.losses import create_strategy

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
    from embtune_core.finetuning.training import train
    from embtune_core.runtime.locking import hold, lock_path_for_output

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
    hybrids and sparse-dense vectors (embtune_core.workflow.recommend), written to OUT.deploy; without --val there is
    nothing held out to choose on, and it says so."""
    from pathlib import Path

    from embtune_core.data.dataset import load_split
    from embtune_core.workflow.recommend import Candidate, candidate_from_row, hybrid_of, select

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
    from embtune_core.publishing.deploy import write_deploy_folder

    written = write_deploy_folder(deploy, selection.to_json(), [candidate_from_row(r) for r in selection.rows],
                                  base_model=str(settings.model), echo=lambda line: print(f"  {line}"))
    print(f"  deploy it from {written['folder']} (DEPLOY.md there has the lines for LangChain, LlamaIndex, DocsGPT)")
