"""The saved model: its token limit, its files written at once, and its model card (README.md)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from embtune_core.finetuning.training_evaluator import HEADLINE_METRICS
from embtune_core.runtime import atomic

log = logging.getLogger("embtune_core.finetuning.training")

SUMMARY = "embtune_train.json"  # written into the model directory next to README.md



def export_limit(model, settings: Any) -> int | None:
    """Set and return the token limit the exported model carries.

    Training at a short limit is cheaper, but a model saved with it makes every downstream loader
    (sentence-transformers, LangChain, DocsGPT) cut texts at that limit without a word. The export
    keeps the model's own limit, or the training limit when that is longer (a model trained to read
    more should keep reading it); ``export_max_seq_length`` overrides both. Said in one line whenever
    the exported limit differs from the trained one.
    """
    from embtune_core.encoders import token_limits
    from embtune_core.encoders.model_modules import set_token_limit, token_limit

    trained = token_limit(model)
    own = getattr(model, "embtune_own_max_seq_length", None) or trained
    if trained is None and own is None and not settings.export_max_seq_length:
        return None  # a model that reads texts whole (a static model): nothing to set
    limit = settings.export_max_seq_length or max(x for x in (own, trained) if x is not None)
    if limit != trained:
        token_limits.check_limit(model, limit, settings.model, field="train.export_max_seq_length")
        log.warning("trained at %s tokens; the model is exported with a limit of %d tokens (%s)",
                    trained if trained is not None else "all its", limit,
                    "export_max_seq_length" if settings.export_max_seq_length else "the model's own")
        set_token_limit(model, limit, settings.model, option="train.export_max_seq_length")
    return limit


def save_model(model, out: str | Path, summary: dict[str, Any]) -> Path:
    """Write the sentence-transformers directory with its model card, all files at once; refuses (one line,
    nothing written) weights that hold NaN or infinite values."""
    out = Path(out)
    import torch

    bad = [name for name, t in model.state_dict().items()
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        from embtune_core.errors import InputError

        raise InputError(f"the trained weights {', '.join(bad[:2])} hold NaN or infinite values (training diverged: "
                         "lower --lr, or use fp32); no model written", path=out)
    from embtune_core.publishing.portable import portable

    base_model = summary.get("base_model")  # as given: name_base_portably resolves it on this machine
    summary = portable(summary)  # an exported folder records no machine's absolute path
    from embtune_core.encoders.lora import name_base_portably
    from embtune_core.runtime.resources import guard

    with guard(writing=out, what="the model"), atomic.atomic_directory(out) as staging:
        model.save(str(staging), create_model_card=False)
        if base_model:  # a LoRA adapter folder names its base so that it loads elsewhere
            name_base_portably(staging, str(base_model))
        atomic.write_text(staging / "README.md", model_card(summary, model))
        atomic.write_json(staging / SUMMARY, summary)
    return out


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _shown_source(data: dict[str, Any]) -> str:
    """A dataset's file name, or ``FOLDER/qrels/SPLIT.tsv`` for a BEIR folder (its split named)."""
    path, source = Path(data["path"]), Path(data.get("source") or data["path"])
    return path.name if source == path else f"{path.name}/{source.relative_to(path)}"


def model_card(summary: dict[str, Any], model: Any = None) -> str:
    """README.md: sentence-transformers' own card, built from the card data its trainer filled in
    (datasets, loss, evaluator metrics, hyper-parameters, framework versions), with embtune's
    section first (:func:`embtune_section`: base model, data sizes, settings, metrics before and
    after). Without ``model``, or when the library cannot build its card (said in one line), the
    card is embtune's section under a minimal front matter."""
    section = embtune_section(summary)
    if model is not None:
        try:
            from sentence_transformers.base.model_card import generate_model_card

            model.model_card_data.add_tags("embtune")
            front, body = _front_matter(generate_model_card(model))
            return f"{front}\n{section}\n{body.lstrip()}"
        except Exception as exc:  # noqa: BLE001 - the model is trained and saved; the card must not lose it
            log.warning("sentence-transformers could not build its model card (%s: %s); README.md holds "
                        "embtune's section only", type(exc).__name__, " ".join(str(exc).split())[:200])
    front = "\n".join([
        "---",
        "library_name: sentence-transformers",
        "pipeline_tag: sentence-similarity",
        f"base_model: {json.dumps(summary['base_model'])}",
        "tags: [sentence-transformers, sentence-similarity, feature-extraction, embtune]",
        "---",
    ])
    return f"{front}\n\n{section}"


def _front_matter(card: str) -> tuple[str, str]:
    """(YAML front matter with its ``---`` lines, the rest) of a model card."""
    if card.startswith("---"):
        end = card.find("\n---", 3)
        if end >= 0:
            return card[:end + 4], card[end + 4:]
    return "", card


def embtune_section(summary: dict[str, Any]) -> str:
    """embtune's part of the card: base model, data sizes, loss, settings and metrics before and after."""
    s = summary["settings"]
    loss = summary["loss"]
    lines = [
        f"# Fine-tuned {summary['base_model']}",
        "",
        (
            f"Fine-tuned with embtune from **{summary['base_model']}** for retrieval (RAG). Load it with "
            '`SentenceTransformer("<this folder>")`, or in DocsGPT set `EMBEDDINGS_NAME=<this folder>`.'
        ),
        "Documents must be re-embedded with this model: query and document embeddings both changed.",
        "",
        "## Data",
        "",
        "| split | file | queries | corpus | relevant pairs | negatives |",
        "|---|---|---|---|---|---|",
    ]
    for split in ("train", "val"):
        d = summary["data"].get(split)
        if d:
            lines.append(
                f"| {split} | {_shown_source(d)} | {d['queries']} | {d['corpus']} | "
                f"{d['relevant_pairs']} | {d['negatives']} |"
            )
    lines += [
        "",
        f"Training rows ({loss['data_format']}): {summary['data']['train_rows']}",
        *[f"- {note}" for note in summary["data"].get("notes") or []],
        "",
        "## Loss",
        "",
        f"`{loss['name']}`",
    ]
    hidden = ("name", "data_format", "inner", "needs_negatives", "in_batch_negatives")
    options = {k: v for k, v in loss.items() if k not in hidden}
    if options:
        lines.append("(" + ", ".join(f"{k}={v}" for k, v in sorted(options.items())) + ")")
    lines += ["", "## Hyper-parameters", "", "| setting | value |", "|---|---|"]
    for key in (
        "epochs",
        "max_steps",
        "batch_size",
        "lr",
        "warmup_ratio",
        "weight_decay",
        "seed",
        "save_steps",
        "train_last_layers",
        "precision",
        "matryoshka_dims",
    ):
        lines.append(f"| {key} | {s.get(key)} |")
    from embtune_core.encoders.token_limits import describe

    trained = summary.get("trained_max_seq_length") or summary.get("max_seq_length") or s.get("max_seq_length")
    cut = describe(summary.get("truncation"))
    lines.append(f"| max_seq_length in training (tokens read of each text) | {trained}{f' ({cut})' if cut else ''} |")
    lines.append(f"| max_seq_length of this model (what loaders read) | {summary.get('max_seq_length')} |")
    batches = summary["data"].get("batches")
    if batches:
        lines.append(f"| batches per epoch | {batches['per_epoch']} ({batches['mean_rows_per_batch']} rows on "
                     f"average; every row used once per epoch) |")
    memory = summary.get("memory")
    if memory:
        how = (f"{memory['mini_batch_size']} at a time (GradCache: the same loss and in-batch negatives)"
               if memory["gradient_cache"] else "all at once")
        lines.append(f"| texts of each batch embedded | {how} |")
    if summary.get("device"):
        lines.append(f"| device, precision used | {summary['device']}, {summary['precision']} |")
    lines.append(f"| processes (DDP world size) | {summary['world_size']} |")
    lines.append(f"| optimisation steps | {summary['global_step']} |")
    if summary.get("partial_fine_tuning"):
        p = summary["partial_fine_tuning"]
        lines.append(
            f"| trained parameters | {p['trainable_parameters']} of {p['total_parameters']} "
            f"(last {p['trained_layers']} of {p['transformer_layers']} layers + pooling/heads) |"
        )
    if summary.get("lora"):
        from embtune_core.encoders.lora import card_lines

        lines += card_lines(summary["lora"])
    before, after = summary.get("metrics_before") or {}, summary.get("metrics_after") or {}
    if before or after:
        lines += ["", "## Evaluation (validation set)", "", "| metric | before | after |", "|---|---|---|"]
        keys = [k for k in HEADLINE_METRICS if k in before or k in after]
        keys += sorted(k for k in set(before) | set(after) if k not in keys and k != "loss")
        for key in keys:
            lines.append(f"| {key} | {_fmt(before.get(key, ''))} | {_fmt(after.get(key, ''))} |")
        if summary.get("best_checkpoint"):
            lines += ["", f"Best checkpoint by NDCG@10: `{Path(summary['best_checkpoint']).name}`."]
        if trained != summary.get("max_seq_length"):
            lines += ["", f"'after' was measured at the training limit ({trained} tokens)."]
        if summary.get("exported") == "base":
            lines += ["", ("**This folder holds the base model unchanged**: the trained model scored below it on "
                           "the validation set ('after'), and embtune never exports a model worse than the base.")]
    lines.append("")
    return "\n".join(lines)

