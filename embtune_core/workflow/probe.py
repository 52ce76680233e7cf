"""Will tuning help? A cheap look at the user's data before the compute is spent.

Four measurements on the *training* questions only (documents held out by source, as every choice in
embtune is made), each with what it predicts:

1. **Base model against BM25** on the held-out documents (NDCG@10). BM25 well ahead means the
   questions hinge on exact words (names, figures, codes): tuning the dense model alone rarely closes
   such a gap, a BM25 hybrid or a sparse-dense vector usually wins (measured on the shared 10-K set:
   BM25 0.818 against MiniLM's 0.641 there, and only the BM25 systems beat it).
2. **Chunks cut at the token limit**: the share of chunks longer than the model reads. Above about a
   third, reading them whole (windows) is worth more than any training option (bench/RESULTS.md).
3. **Saturation**: the base model's recall@10. Near 1, tuning can only reorder the top ten.
4. **A one-minute adapter probe**: a linear query adapter trained on cached vectors of the training
   questions (its epoch chosen inside them), its NDCG@10 change on the held-out documents. A gain says
   the questions carry a signal the model can learn; none says the dense model has little to learn.

The result (figures, one line per prediction, and an overall expectation) is printed by
``embtune build-dataset`` and ``embtune run`` and kept in the report's context.

Example::

    probe = tuning_probe(train_dataset, "sentence-transformers/all-MiniLM-L6-v2")
    print(probe["expectation"]); probe["figures"]["bm25_minus_base"]
"""

from __future__ import annotations

import logging
import time
from typing import Any

from embtune_core.data.dataset import QADataset

log = logging.getLogger(__name__)

BM25_GAP = 0.02  # BM25 ahead of the base by more than this (NDCG@10): lexical matching matters
CUT_SHARE = 1 / 3  # more chunks than this cut at the limit: read them whole first
SATURATED_RECALL = 0.95  # base recall@10 above this: tuning can only reorder the top ten
ADAPTER_GAIN = 0.005  # the probe adapter gaining more than this (NDCG@10): the data teaches something
PROBE_EPOCHS = 4


def tuning_probe(dataset: QADataset, model: str, *, seed: int = 42, dev_fraction: float = 0.2, cache: Any = None,
                 encoder_options: dict[str, Any] | None = None, adapter: bool = True) -> dict[str, Any]:
    """Measure and predict (module docstring) on ``dataset``'s training questions; no validation data is read."""
    from dataclasses import replace

    from embtune_core.adapters.adapter_training import (
        AdapterTrainingConfig,
        split_for_validation,
        train_adapter,
    )
    from embtune_core.encoders.embedding_cache import EmbeddingCache
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_core.retrieval.lexical import BM25Spec
    from embtune_core.scoring.evaluation import MetricSettings, System, evaluate_systems

    started = time.perf_counter()
    cache = cache or EmbeddingCache()
    encoder = encoder_from_spec(model, **(encoder_options or {}))
    fit, dev = split_for_validation(dataset, dev_fraction, seed=seed)
    counter = getattr(encoder, "count_over_limit", None)
    over, limit = counter(list(dataset.corpus.values()), "document") if counter is not None else (0, None)
    systems = [System("base", encoder, spec=model), System("bm25", BM25Spec(), spec="bm25")]
    evaluation = evaluate_systems(systems, dev, settings=MetricSettings(hit_rate_at=(5,)), dataset_name="probe",
                                  cache=cache, progress_bar=False, n_resamples=1, n_permutations=1)
    full = {s.name: s.dims[max(s.dims)].per_query for s in evaluation.systems}
    base, bm25 = float(full["base"]["ndcg@10"].mean()), float(full["bm25"]["ndcg@10"].mean())
    recall = float(full["base"]["recall@10"].mean())
    figures: dict[str, Any] = {
        "held_out_questions": len(evaluation.task.query_ids), "base_ndcg@10": round(base, 4),
        "bm25_ndcg@10": round(bm25, 4), "bm25_minus_base": round(bm25 - base, 4),
        "chunks_cut": over, "chunks": len(dataset.corpus), "token_limit": limit,
        "cut_share": round(over / max(1, len(dataset.corpus)), 4), "base_recall@10": round(recall, 4)}
    if adapter and fit.queries:
        config = replace(AdapterTrainingConfig(), epochs=PROBE_EPOCHS, seed=seed)
        result = train_adapter(encoder, fit, config=config, cache=cache)
        adapted = System("probe-adapter", encoder, result.adapter, spec=model)
        after = evaluate_systems([adapted], dev, settings=MetricSettings(hit_rate_at=(5,)), dataset_name="probe",
                                 cache=cache, progress_bar=False, n_resamples=1, n_permutations=1)
        gain = float(after.systems[0].dims[max(after.systems[0].dims)].per_query["ndcg@10"].mean()) - base
        figures["adapter_probe_gain"] = round(gain, 4)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    predictions = predict(figures)
    return {"figures": figures, "predictions": predictions, "expectation": expectation(figures)}


def predict(figures: dict[str, Any]) -> list[str]:
    """One line per measurement: what it predicts (thresholds in the module constants)."""
    lines = []
    gap = figures["bm25_minus_base"]
    if gap > BM25_GAP:
        lines.append(f"BM25 beats the base model by {gap:+.3f} NDCG@10 on held-out training documents: exact words "
                     "matter here; expect a BM25 hybrid or sparse-dense system to win, tuning the dense model alone "
                     "rarely closes such a gap")
    else:
        lines.append(f"the base model is level with or ahead of BM25 ({-gap:+.3f} NDCG@10): dense retrieval suits "
                     "these questions")
    if figures["cut_share"] > CUT_SHARE:
        lines.append(f"{figures['cut_share']:.0%} of chunks are longer than the {figures['token_limit']} tokens the "
                     "model reads: reading them whole (windows) should matter more than any training option")
    if figures["base_recall@10"] >= SATURATED_RECALL:
        lines.append(f"the base model already has the answer in its top 10 for {figures['base_recall@10']:.0%} of "
                     "questions: tuning can only reorder them; expect small gains")
    if "adapter_probe_gain" in figures:
        gain = figures["adapter_probe_gain"]
        lines.append(f"a {PROBE_EPOCHS}-epoch linear adapter gained {gain:+.3f} NDCG@10 on held-out documents: "
                     + ("the questions teach the model something; a fine-tune usually gains more"
                        if gain > ADAPTER_GAIN else "the dense model has little to learn from these questions"))
    return lines


def expectation(figures: dict[str, Any]) -> str:
    """The overall expectation in one line."""
    teaches = figures.get("adapter_probe_gain", 0.0) > ADAPTER_GAIN
    if figures["bm25_minus_base"] > BM25_GAP:
        return "expect a BM25 hybrid (or sparse-dense vector) to be recommended" + (
            ", with tuning adding on top" if teaches else "")
    if figures["base_recall@10"] >= SATURATED_RECALL and not teaches:
        return "expect little from tuning: the base model is near its ceiling"
    return "expect tuning to help" if teaches else "expect small gains from tuning"


def describe(probe: dict[str, Any]) -> list[str]:
    """The probe as lines for a terminal or a report's context."""
    f = probe["figures"]
    head = (f"will tuning help? base NDCG@10 {f['base_ndcg@10']:.3f}, BM25 {f['bm25_ndcg@10']:.3f}, "
            f"{f['chunks_cut']} of {f['chunks']} chunks cut, base recall@10 {f['base_recall@10']:.3f}"
            + (f", adapter probe {f['adapter_probe_gain']:+.3f}" if "adapter_probe_gain" in f else "")
            + f" ({f['held_out_questions']} held-out training questions, {f['seconds']:.0f} s)")
    return [head, *[f"  - {line}" for line in probe["predictions"]], f"  => {probe['expectation']}"]
