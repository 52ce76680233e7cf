"""``embtune train``: full or partial fine-tuning of a sentence-transformers model with a loss strategy."""

from __future__ import annotations

from embtune_core.config import load_config, section
from embtune_core.errors import ConfigError

NAME = "train"
HELP = "fine-tune a sentence-transformers model on a QA dataset (full or last-N-layers)"
DESCRIPTION = """Fine-tune a sentence-transformers model on a QA dataset (LlamaIndex JSON, BEIR folder or
pairs/triplets JSONL/CSV) with a loss strategy (see `embtune plugins`): mnrl, cached-mnrl, gist,
contrastive, online-contrastive, cosine, triplet; --matryoshka-dims wraps any of them in Matryoshka
training. With --val the model is evaluated every --save-steps steps and the checkpoint with the best
NDCG@10 is kept. Writes a sentence-transformers model directory with a model card (README.md) to --out;
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
    parser.add_argument("--model", help="base model name or directory (default: packaged all-MiniLM-L6-v2)")
    parser.add_argument("--loss", help="loss strategy (default: mnrl)")
    parser.add_argument("--loss-option", action="append", metavar="KEY=VALUE",
                        help="option for the loss strategy, e.g. mini_batch_size=16 (repeatable)")
    parser.add_argument("--matryoshka-dims", type=_int_list, metavar="D1,D2,...",
                        help="wrap the loss in MatryoshkaLoss over these dimensions, e.g. 384,256,128,64")
    parser.add_argument("--epochs", type=float, help="passes over the training data (default: 1; fractions allowed)")
    parser.add_argument("--batch-size", type=int, help="pairs per batch; more in-batch negatives (default: 16)")
    parser.add_argument("--lr", type=float, help="learning rate (default: 2e-5)")
    parser.add_argument("--warmup-ratio", type=float, help="share of steps for linear warm-up (default: 0.1)")
    parser.add_argument("--seed", type=int, help="random seed for data order and initialisation (default: 42)")
    parser.add_argument("--max-steps", type=int, help="stop after this many steps (overrides --epochs)")
    parser.add_argument(
        "--save-steps", type=int, help="checkpoint (and evaluate) every N steps (default: each epoch)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="continue from the newest checkpoint in the checkpoint folder",
    )
    layers = parser.add_mutually_exclusive_group()
    layers.add_argument(
        "--train-last-layers",
        type=int,
        metavar="N",
        help="partial fine-tuning: train only the last N transformer layers (+ pooling, heads)",
    )
    layers.add_argument(
        "--freeze-layers",
        type=int,
        metavar="N",
        help="partial fine-tuning: freeze the embeddings and the first N transformer layers",
    )
    parser.add_argument("--max-seq-length", type=int, help="truncate inputs to this many tokens (default: the model's)")
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16", "fp16"), help="auto: bf16/fp16 on a GPU, fp32 on CPU"
    )
    parser.add_argument("--checkpoint-dir", help="checkpoints and loss log (default: OUT.checkpoints)")
    parser.add_argument("--out", help="output model directory")


def _int_list(text: str) -> list[int]:
    try:
        dims = [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise ConfigError(
            f"expected comma-separated integers, got '{text}'", field="--matryoshka-dims"
        ) from None
    return dims


def _parse_value(text: str):
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def settings_from_args(args):
    """TrainSettings from the [train] table of --config, overridden by options given on the command line."""
    from embtune_core.training import TrainSettings

    values: dict = {}
    origin = "<command line>"
    if args.config:
        origin = args.config
        values.update(section(load_config(args.config), "train", args.config))
    for key in (
        "train",
        "val",
        "model",
        "loss",
        "matryoshka_dims",
        "epochs",
        "batch_size",
        "lr",
        "warmup_ratio",
        "seed",
        "max_steps",
        "save_steps",
        "resume",
        "train_last_layers",
        "freeze_layers",
        "max_seq_length",
        "precision",
        "checkpoint_dir",
        "out",
    ):
        value = getattr(args, key, None)
        if value is not None:
            values[key] = value
    if args.loss_option:
        options = dict(values.get("loss_options") or {})
        for item in args.loss_option:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"expected KEY=VALUE, got '{item}'", field="--loss-option")
            options[key.strip()] = _parse_value(value.strip())
        values["loss_options"] = options
    return TrainSettings.from_mapping(values, origin)


def run(args) -> int:
    from embtune_core.training import train

    settings = settings_from_args(args)
    summary = train(settings)
    before, after = summary["metrics_before"], summary["metrics_after"]
    if not summary["saved"]:
        return 0  # another rank (rank 0) wrote the model and reports
    print(
        f"model written to {settings.out} ({summary['global_step']} steps, "
        f"train loss {summary['train_loss']:.4f})"
    )
    for key in ("hit@5", "mrr@10", "ndcg@10"):
        if key in before or key in after:
            print(f"  {key:8s} {before.get(key, float('nan')):.4f} -> {after.get(key, float('nan')):.4f}")
    return 0
