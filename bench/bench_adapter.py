"""Speed benchmark: 12 epochs of adapter training on cached embeddings vs. re-embedding every batch.

Three timings in one run, with one model already loaded and warmed up:

1. ``embedding pass``: embed every question and every chunk of the subset once (no cache);
2. ``embtune``: ``train_adapter`` with an empty embedding cache -- it embeds questions and corpus
   once through the cache, then trains 12 epochs (no early stop) on the cached tensors;
3. ``reference``: the loop of LlamaIndex's ``EmbeddingAdapterFinetuneEngine``, re-implemented here:
   for every batch of every epoch, ``model.encode(queries)`` and ``model.encode(positives)``, then
   the linear adapter, in-batch multiple-negatives loss (scale 20) and an AdamW step. (LlamaIndex
   embeds item by item; batching here makes the reference faster, so the ratio is conservative.)

Targets: embtune costs one embedding pass plus under 5 % (``overhead``), and the reference takes
at least 20x longer (``speedup``) at 12 epochs. Both loops use the same model, batch size (32)
and pairs. The data is a subset of the Lyft 10-K QA set (default: the first 60 chunks and their
120 questions) so that the reference loop finishes in a few minutes on 2 CPU cores; the ratio
does not depend on the subset size, since both sides scale with it.

Run::

    python bench/bench_adapter.py                 # writes bench/results/adapter.json
    python bench/bench_adapter.py --chunks 334    # the whole Lyft set (the reference takes ~30 min)
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa"
sys.path.insert(0, str(ROOT))

from embtune_core import atomic  # noqa: E402
from embtune_core.adapter_io import build_adapter  # noqa: E402
from embtune_core.adapter_training import AdapterTrainingConfig, train_adapter  # noqa: E402
from embtune_core.dataset import QADataset  # noqa: E402
from embtune_core.embedding_cache import EmbeddingCache  # noqa: E402
from embtune_core.encoding import encoder_from_spec  # noqa: E402


def subset(dataset: QADataset, n_chunks: int) -> QADataset:
    chunks = list(dataset.corpus)[:n_chunks]
    keep = set(chunks)
    queries = [q for q, ids in dataset.relevant_docs.items() if ids and ids[0] in keep]
    return dataset.subset(queries, corpus_ids=chunks)


def reference_loop(encoder, dataset: QADataset, *, epochs: int, batch_size: int, lr: float) -> float:
    """LlamaIndex's adapter fine-tuning loop: every batch of every epoch is embedded again."""
    pairs = [(dataset.queries[q], dataset.corpus[ids[0]]) for q, ids in dataset.relevant_docs.items() if ids]
    adapter = build_adapter("linear", encoder.dimension, {"bias": False})
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=lr)
    start = time.perf_counter()
    for _ in range(epochs):
        for i in range(0, len(pairs), batch_size):  # LlamaIndex does not shuffle
            batch = pairs[i:i + batch_size]
            query_emb = torch.from_numpy(encoder.encode_queries([q for q, _ in batch]))
            text_emb = torch.from_numpy(encoder.encode_documents([t for _, t in batch]))
            scores = F.normalize(adapter(query_emb), dim=-1) @ F.normalize(text_emb, dim=-1).T * 20.0
            loss = F.cross_entropy(scores, torch.arange(len(batch)))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start


def embedding_pass(encoder, dataset: QADataset) -> float:
    start = time.perf_counter()
    encoder.encode_queries(list(dataset.queries.values()))
    encoder.encode_documents(list(dataset.corpus.values()))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--encoder", default="st:sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--chunks", type=int, default=60, help="Lyft chunks in the subset (default 60)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "adapter.json"))
    opts = parser.parse_args()
    data = Path(opts.data)
    if not (data / "train_dataset.json").is_file():
        print(f"bench/bench_adapter.py: no data at {data}; skipping", file=sys.stderr)
        return 0
    dataset = subset(QADataset.load(data / "train_dataset.json"), opts.chunks)
    encoder = encoder_from_spec(opts.encoder)
    encoder.encode_documents(["warm-up: load the model and its kernels"] * 4)

    pass_before = embedding_pass(encoder, dataset)
    print(f"embedding pass ({len(dataset.queries)} questions + {len(dataset.corpus)} chunks): {pass_before:.1f}s")
    config = AdapterTrainingConfig(adapter="linear", epochs=opts.epochs, batch_size=opts.batch_size,
                                   patience=opts.epochs, seed=0)
    with tempfile.TemporaryDirectory() as empty_cache:
        start = time.perf_counter()
        result = train_adapter(encoder, dataset, config=config, cache=EmbeddingCache(empty_cache))
        ours = time.perf_counter() - start
    print(f"embtune, {opts.epochs} epochs incl. embedding: {ours:.1f}s "
          f"(embedding {result.timings['embed_seconds']:.1f}s, training {result.timings['train_seconds']:.2f}s)")
    reference = reference_loop(encoder, dataset, epochs=opts.epochs, batch_size=opts.batch_size, lr=config.lr)
    print(f"reference loop, {opts.epochs} epochs: {reference:.1f}s")
    pass_after = embedding_pass(encoder, dataset)
    embed_pass = (pass_before + pass_after) / 2
    overhead = ours / embed_pass - 1
    speedup = reference / ours
    print(f"embtune = one embedding pass {100 * overhead:+.1f}%; reference / embtune = {speedup:.1f}x")

    atomic.write_json(opts.out, {
        "benchmark": "adapter training on cached embeddings vs. LlamaIndex-style re-embedding loop",
        "command": "python bench/bench_adapter.py" + (f" --chunks {opts.chunks}" if opts.chunks != 60 else ""),
        "encoder": encoder.identity,
        "subset": {"chunks": len(dataset.corpus), "questions": len(dataset.queries),
                   "note": "first chunks of the Lyft 10-K QA set, so the reference loop ends in minutes on 2 cores"},
        "epochs": opts.epochs, "batch_size": opts.batch_size,
        "seconds": {"embedding_pass_before": round(pass_before, 2), "embedding_pass_after": round(pass_after, 2),
                    "embtune_total": round(ours, 2), "embtune_embedding": round(result.timings["embed_seconds"], 2),
                    "embtune_training": round(result.timings["train_seconds"], 3),
                    "reference_total": round(reference, 2)},
        "overhead_vs_one_embedding_pass": round(overhead, 4),
        "speedup_vs_reference": round(speedup, 2),
        "targets": {"overhead_below": 0.05, "speedup_at_least": 20.0},
        "met": {"overhead": overhead < 0.05, "speedup": speedup >= 20.0},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
    })
    print(f"wrote {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
