"""The words a run's report carries about the run itself (``embtune run``, :mod:`embtune_core.workflow.pipeline`):
what produced the validation set, what each trained system saw of the validation documents and
whether the figures are independent of the questions' writer, and how the fine-tune was trained.

Kept apart from the code that runs the stages; each function reads the run (its typed settings,
plans, manifest and stage outputs) and writes into an :class:`~embtune_core.scoring.evaluation.Evaluation`'s
``context``, its systems' ``details`` and its ``training`` curves.
"""

from __future__ import annotations

from typing import Any


def context(run: Any, train_stage: Any) -> dict[str, str]:
    """What produced the validation set, in words, for the report's context block."""
    data, chunk, generate, split = run.t["data"], run.written["chunk"], run.t["generate"], run.t["split"]
    context: dict[str, str] = {}
    if "inputs" in data:
        raw = data["inputs"]
        context["dataset"] = "validation split of generated questions over " + ", ".join(
            str(p) for p in ([raw] if isinstance(raw, str) else raw))
        context["query generator"] = str(generate.get("generator", "ict")) + "".join(
            f", {k} = {v}" for k, v in generate.items() if k not in ("generator", "api_key"))
        dropped = (run.manifest["stages"].get("generate") or {}).get("dropped_questions") or {}
        if any(dropped.values()):
            context["questions dropped by the filter"] = ", ".join(f"{n} {why}" for why, n in dropped.items())
        context["chunker"] = str(chunk.get("chunker", "sentence")) + "".join(
            f", {k} = {v}" for k, v in chunk.items() if k != "chunker")
        context["split rule"] = ("val_inputs documents" if data.get("val_inputs") else
                                 "by source document, val_fraction = " + str(split.get("val_fraction", 0.2)))
    else:
        context["dataset"] = f"validation: {data.get('val', 'held out of ' + str(data.get('train')))}"
    context["run date"] = str(run.manifest.get("started", ""))
    context["config"] = str(run.config_path)
    return context


def describe_independence(run: Any, evaluation: Any) -> None:
    """Which generator wrote the validation questions against which made the pseudo-queries that index-aware
    systems read from the validation chunks: the same generator would score them on the kind of query they
    trained on, so the report says whether the figures are independent."""
    from embtune_core.finetuning.index_training import DEFAULT_MIX as TRAIN_MIX

    mixes: set[str] = set()
    if run.settings["train"] is not None:
        value = run.settings["train"].index_pseudo_queries
        if value not in (None, False):
            mixes |= set(TRAIN_MIX if value is True else value)
    if run.settings["adapter"] is not None:
        mixes |= set(run.plans["adapter"].index_mix or ())
    if run.settings["index_tuning"] is not None:
        mixes |= set(run.settings["index_tuning"].mix())
    if not mixes:
        return
    data = run.t["data"]
    writer = str(run.t["generate"].get("generator", "ict")) if "inputs" in data else None
    made = ", ".join(sorted(mixes))
    if writer is None:
        evaluation.context["independence"] = (
            f"index-aware systems read pseudo-queries ({made}) from the validation chunks' texts; the validation "
            "questions came with the dataset: check that no generator of theirs is among these")
    elif writer in mixes:
        evaluation.context["independence"] = (
            f"NOT independent for index-aware systems: the validation questions were written by {writer}, which "
            f"also made pseudo-queries ({made}) from the validation chunks they trained on (word-for-word copies "
            "left out); use another generator for one of them to measure them independently")
    else:
        evaluation.context["independence"] = (
            f"yes: index-aware systems trained on pseudo-queries ({made}) from the validation chunks' texts and are "
            f"scored on questions {writer} wrote, another generator")


def describe_information(run: Any, evaluation: Any) -> None:
    """What each trained system saw of the validation documents, so unequal terms are never hidden."""
    saw = {}
    if run.t["train"] and run.settings["train"] is not None:  # named in the config and run
        saw["fine-tuned"] = run.settings["train"].index_pseudo_queries not in (None, False)
    if run.t["adapter"] and run.settings["adapter"] is not None:
        saw["adapter"] = bool(run.plans["adapter"].index_mix)
    for result in evaluation.systems:
        if saw.get(result.name):
            result.details.append("trained also on LLM-free pseudo-queries from the texts of every indexed chunk, "
                                  "validation chunks included (no validation question or label)")
    describe_independence(run, evaluation)
    adapter = run.manifest["stages"].get("adapter") or {}
    if adapter.get("final_adapter"):
        evaluation.context["adapter to deploy"] = (
            f"final fit: {adapter['final_fit']['epochs']} epochs on every question "
            f"({adapter['final_fit']['queries']}, validation included): {adapter['final_adapter']}; the "
            "adapter figures here are the validation estimate, from the adapter that never saw them")
    if len(set(saw.values())) > 1:
        ahead = [name for name, seen in saw.items() if seen]
        evaluation.context["like for like"] = (
            f"NO: {', '.join(ahead)} trained on pseudo-queries from the validation chunks' texts, "
            f"{', '.join(n for n in saw if n not in ahead)} did not")
    elif saw and all(saw.values()):
        evaluation.context["like for like"] = ("yes: every trained system saw pseudo-queries from the texts of "
                                               "all indexed chunks, validation chunks included")


def describe_training(run: Any, evaluation: Any, train_stage: Any) -> None:
    """The fine-tuned system's training settings and its curve (loss_log.jsonl), into the report."""
    from embtune_core.finetuning.checkpoints import LOSS_LOG
    from embtune_core.reporting.report_training import from_loss_log

    table = run.written["train"]
    line = ("fine-tuned from " + str(table.get("model", run._base_model())) + "".join(
        f", {k} = {table[k]}" for k in ("loss", "epochs", "max_steps", "batch_size", "lr", "matryoshka_dims")
        if k in table))
    outputs = train_stage.outputs()
    selection = outputs.get("selection") or {}
    for result in evaluation.systems:
        if result.name == "fine-tuned":
            result.details.append(line)
            if selection:
                result.details.append(f"checkpoint chosen on {selection['dev_queries']} questions of held-out "
                                      f"training documents; trained on {selection['fit_queries']}")
            if outputs.get("exported") == "base":
                result.details.append("the trained model scored below the base on those questions, so this "
                                      "system IS the base model (never exported worse)")
    final = outputs.get("final_fit") or {}
    if outputs.get("final_model"):
        evaluation.context["exported artefact"] = (
            f"final fit: the same settings retrained for {final['epochs']} epochs on every document "
            f"({final['queries']} questions, validation included; stages/.../final); the figures here are "
            "the validation estimate, from the fine-tune that never saw the validation questions")
    curve = from_loss_log(train_stage.work / "checkpoints" / LOSS_LOG, name="fine-tuned (full fine-tuning)")
    if curve is not None:
        evaluation.training.insert(0, curve)
