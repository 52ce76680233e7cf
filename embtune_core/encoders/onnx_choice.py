"""Which ONNX file an export recommends: the fastest that holds quality, measured on the user's own chunks.

``embtune export MODEL --format onnx --quantize int8 --calibration DATASET`` writes several graphs of one
model (fp32, fused O2, int8, int8 with the calibration's outlier channels in fp32:
:mod:`embtune_core.encoders.onnx_mixed_int8`). Which one is fastest depends on the CPU (int8 gains most with
AVX-512 VNNI) and on the texts (their lengths); whether a quantised one holds quality depends on the
texts too. So the export measures, on chunks of DATASET that calibration did not use:

* speed: documents per second of each file through the same loader the encoders use
  (:func:`embtune_core.encoders.onnx_export.load_onnx_model`), median of 3 passes in alternating order;
* quality: when DATASET has questions about those chunks, NDCG@10 of each file's vectors on them
  (scored as ``embtune evaluate`` scores) against the fp32 graph's; a file may lose at most
  :data:`NDCG_TOLERANCE`. Without questions, the mean cosine of each file's vectors to the fp32 ones must
  reach :data:`COSINE_FLOOR` (the level at which the ``int8`` file measured -0.004 NDCG@10 on the Uber
  chunks; bench/bench_onnx.py).

The fastest file that holds quality becomes the folder's default (``embtune_onnx.json``), which the
``onnx`` backend and ``SentenceTransformer``'s loaders read; the figures go into the manifest and into
the one line the export prints.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

NDCG_TOLERANCE = 0.005
COSINE_FLOOR = 0.997
ROUNDS = 3
HELD_OUT = 128  # chunks measured on (questions: those asked about them)
CALIBRATION = 64  # chunks whose activations set the outlier channels


def split_chunks(dataset: Any) -> tuple[list[str], Any]:
    """(calibration chunk texts, the held-out dataset measured on): the corpus ids in sorted order,
    alternately to each side (at most :data:`CALIBRATION` and :data:`HELD_OUT`), so that the two never
    share a chunk and every run splits alike. The held-out dataset keeps the questions whose relevant
    chunks are all held out."""
    from embtune_core.data.dataset import QADataset

    ids = sorted(dataset.corpus)
    calibration = [dataset.corpus[c] for c in ids[0::2][:CALIBRATION]]
    held = ids[1::2][:HELD_OUT] if len(ids) > 1 else ids[:HELD_OUT]
    kept = set(held)
    relevant = {q: list(docs) for q, docs in dataset.relevant_docs.items()
                if q in dataset.queries and docs and all(d in kept for d in docs)}
    return calibration, QADataset({q: dataset.queries[q] for q in relevant}, {c: dataset.corpus[c] for c in held},
                                  relevant)


def measure(models: dict[str, Any], held_out: Any) -> dict[str, Any]:
    """Speed and quality of each model of ``models`` (name -> a loaded model, as
    :func:`embtune_core.encoders.onnx_export.load_onnx_model` gives for each key of the folder's manifest ``files``;
    ``"fp32"`` first, the reference) on the dataset ``held_out``; see the module docstring."""
    texts = list(held_out.corpus.values())
    variants = list(models)
    for model in models.values():  # warm-up: first-call allocations
        model.encode_document(texts[:8], batch_size=32)
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    vectors: dict[str, np.ndarray] = {}
    for round_ in range(ROUNDS):
        for name in (variants if round_ % 2 == 0 else variants[::-1]):
            started = time.perf_counter()
            vectors[name] = models[name].encode_document(texts, batch_size=32, convert_to_numpy=True,
                                                         normalize_embeddings=True)
            seconds[name].append(time.perf_counter() - started)
    reference = vectors[variants[0]]
    ndcg = _ndcg(models, held_out) if held_out.queries else {}
    table = {}
    for name in variants:
        speed = len(texts) / statistics.median(seconds[name])
        row = {"docs_per_second": round(speed, 2),
               "speedup_vs_fp32": round(speed * statistics.median(seconds[variants[0]]) / len(texts), 3),
               "mean_cosine_to_fp32": round(float((vectors[name] * reference).sum(1).mean()), 6)}
        if ndcg:
            row["ndcg@10"] = round(ndcg[name], 4)
            row["ndcg@10_change"] = round(ndcg[name] - ndcg[variants[0]], 4)
        row["holds_quality"] = (row["ndcg@10_change"] >= -NDCG_TOLERANCE if ndcg
                                else row["mean_cosine_to_fp32"] >= COSINE_FLOOR)
        table[name] = row
    return table


def _ndcg(models: dict[str, Any], dataset: Any) -> dict[str, float]:
    from embtune_core.scoring.evaluation import RetrievalTask, evaluate_embeddings

    task = RetrievalTask.from_dataset(dataset)
    out = {}
    for name, model in models.items():
        queries = model.encode_query(task.query_texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)
        corpus = model.encode_document(task.corpus_texts, batch_size=32, convert_to_numpy=True,
                                       normalize_embeddings=True)
        result = evaluate_embeddings(queries, corpus, task, dims=[queries.shape[1]])
        out[name] = float(next(iter(result.values())).means()["ndcg@10"])
    return out


def choose(table: dict[str, dict[str, Any]]) -> str:
    """The fastest variant that holds quality (the reference always does)."""
    return max((name for name, row in table.items() if row["holds_quality"]),
               key=lambda name: table[name]["docs_per_second"])


def describe(chosen: str, table: dict[str, dict[str, Any]], held_out: Any) -> str:
    row = table[chosen]
    judged = (f"NDCG@10 {row['ndcg@10_change']:+.4f} vs fp32 on {len(held_out.queries)} of your questions"
              if "ndcg@10_change" in row else f"mean cosine {row['mean_cosine_to_fp32']:.4f} to fp32 (no questions "
              f"in the calibration data to measure NDCG@10 with; the floor is {COSINE_FLOOR})")
    others = ", ".join(f"{name} {r['speedup_vs_fp32']:.2f}x{'' if r['holds_quality'] else ' (loses quality)'}"
                       for name, r in table.items() if name != chosen)
    return (f"recommended: {chosen}, {row['speedup_vs_fp32']:.2f}x the fp32 graph's documents/s on "
            f"{len(held_out.corpus)} of your chunks, {judged}; others: {others}")


def calibration_dataset(path: str | Path) -> Any:
    """The user's chunks (and questions, where the file has them) for ``--calibration``: any dataset
    ``embtune evaluate`` reads, or a bare corpus."""
    from embtune_core.data.dataset import QADataset, load_any, load_corpus
    from embtune_core.errors import DatasetError

    try:
        dataset = load_any(path, split="train") if Path(path).is_dir() else load_any(path)
    except DatasetError:
        return QADataset({}, load_corpus(path), {})
    if not dataset.corpus:
        raise DatasetError("holds no chunks to calibrate on", path=path, field="corpus")
    return dataset


def feature_batches(model: Any, texts: list[str], names: list[str], batch: int = 8) -> list[dict[str, np.ndarray]]:
    """The graph inputs for ``texts`` (the model's own tokenizer and limit), ``batch`` texts at a time."""
    from embtune_core.encoders.token_prefix import readable_texts

    texts = readable_texts(model, texts)
    out = []
    for start in range(0, len(texts), batch):
        features = model.preprocess(texts[start:start + batch])
        out.append({name: features[name].numpy() for name in names if name in features})
    return out


__all__ = ["COSINE_FLOOR", "NDCG_TOLERANCE", "calibration_dataset", "choose", "describe", "feature_batches",
           "measure", "split_chunks"]
