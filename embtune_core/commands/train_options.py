"""Options of ``embtune train`` for LoRA (:mod:`embtune_core.lora`), prompts (:mod:`embtune_core.prompts`)
and experiment tracking (:mod:`embtune_core.tracking`), kept here so the command module stays small."""

from __future__ import annotations

import argparse

from embtune_core.commands import fraction, positive_float, positive_int


def _names(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must be comma-separated module names, got '{text}'")
    return names


def add_lora_and_tracking_arguments(parser, layers=None) -> None:
    """``--lora`` (in the partial-fine-tuning group ``layers``: one or the other), its settings,
    ``--query-prompt``/``--document-prompt`` and ``--report-to``. Defaults are None (the config wins)."""
    group = layers if layers is not None else parser
    group.add_argument("--lora", action="store_true", default=None,
                       help="LoRA: train low-rank adapters inside every transformer layer, base weights frozen "
                            "(needs peft: pip install 'embtune[lora]')")
    parser.add_argument("--lora-rank", type=positive_int, metavar="R", help="LoRA rank r (default: 8)")
    parser.add_argument("--lora-alpha", type=positive_float, help="LoRA scaling alpha (default: 16)")
    parser.add_argument("--lora-dropout", type=fraction, help="dropout on the LoRA path (default: 0.1)")
    parser.add_argument("--lora-target-modules", type=_names, metavar="NAME[,NAME...]",
                        help="linear layers to adapt, e.g. query,key,value,dense (default: peft's choice for "
                             "the architecture, query,value for BERT)")
    parser.add_argument("--merge", dest="lora_merge", action="store_true", default=None,
                        help="with --lora: fold the adapter into the weights and write a plain model folder "
                             "(loads without peft: DocsGPT, LangChain, ONNX export)")
    from embtune_core.prompts import add_arguments

    add_arguments(parser)
    parser.add_argument("--report-to", metavar="NAME[,NAME]",
                        help="experiment tracking: none (default), tensorboard (event files in the checkpoint "
                             "folder's runs/), wandb, mlflow; loss_log.jsonl is written either way")
