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

Timings are wall clock and process CPU time; both sides run with one torch thread by default, so a
shared machine treats them alike. Run::

    python bench/bench_adapter.py                 # writes bench/results/adapter.json
    python bench/bench_adapter.py --chunks 334    # the whole Lyft set (the reference takes ~30 min)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa"
sys.path.insert(0, str(ROOT))

from embtune_core.adapters.adapter_io import build_adapter
from embtune_core.adapters.adapter_training import AdapterTrainingConfig, train_adapter
from embtune_core.data.dataset import QADataset
from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.encoders.encoding import encoder_from_spec
from embtune_core.plugins import get_registry
from embtune_core.runtime import atomic


def subset(dataset: QADataset, n_chunks: int) -> QADataset:
    chunks = list(dataset.corpus)[:n_chunks]
    keep = set(chunks)
    queries = [q for q, ids in dataset.relevant_docs.items() if ids and ids[0] in keep]
    return dataset.subset(queries, corpus_ids=chunks)


class Clock:
    """Wall time and process CPU time (all threads) of a block: the machine is shared, and CPU time
    is what other people's jobs disturb least."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def reference_loop(encoder, dataset: QADataset, *, epochs: int, batch_size: int, lr: float) -> list[Clock]:
    """LlamaIndex's adapter fine-tuning loop: every batch of every epoch is embedded again."""
    pairs = [(dataset.queries[q], dataset.corpus[ids[0]]) for q, ids in dataset.relevant_docs.items() if ids]
    adapter = build_adapter("linear", encoder.dimension, {"bias": False})
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=lr)
    clocks = []
    for _ in range(epochs):
        with Clock() as clock:
            for i in range(0, len(pairs), batch_size):  # LlamaIndex does not shuffle
                batch = pairs[i:i + batch_size]
                query_emb = torch.from_numpy(encoder.encode_queries([q for q, _ in batch]))
                text_emb = torch.from_numpy(encoder.encode_documents([t for _, t in batch]))
                scores = F.normalize(adapter(query_emb), dim=-1) @ F.normalize(text_emb, dim=-1).T * 20.0
                loss = F.cross_entropy(scores, torch.arange(len(batch)))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        clocks.append(clock)
    return clocks


def embedding_pass(encoder, dataset: QADataset) -> Clock:
    with Clock() as clock:
        encoder.encode_queries(list(dataset.queries.values()))
        encoder.encode_documents(list(dataset.corpus.values()))
    return clock


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--encoder", default="st:sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--chunks", type=int, default=60, help="Lyft chunks in the subset (default 60)")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="embedding pass / embtune runs (median kept)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads for both sides (default 1: the same conditions for both on a "
                             "shared machine; 0 keeps torch's default)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "adapter.json"))
    opts = parser.parse_args()
    data = Path(opts.data)
    if not (data / "train_dataset.json").is_file():
        print(f"bench/bench_adapter.py: no data at {data}; skipping", file=sys.stderr)
        return 0
    dataset = subset(QADataset.load(data / "train_dataset.json"), opts.chunks)
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    encoder = encoder_from_spec(opts.encoder)
    encoder.encode_documents(["warm-up: load the model and its kernels"] * 4)
    get_registry()  # plugin discovery is a one-off per process, paid by neither side

    config = AdapterTrainingConfig(adapter="linear", epochs=opts.epochs, batch_size=opts.batch_size,
                                   patience=opts.epochs, seed=0)
    passes, ours, results = [], [], []
    for repeat in range(opts.repeats):  # interleaved, alternating order, so bursts of load hit both alike
        if repeat % 2 == 0:
            passes.append(embedding_pass(encoder, dataset))
        with tempfile.TemporaryDirectory() as empty_cache, Clock() as clock:
            results.append(train_adapter(encoder, dataset, config=config, cache=EmbeddingCache(empty_cache)))
        ours.append(clock)
        if repeat % 2 == 1:
            passes.append(embedding_pass(encoder, dataset))
        print(f"repeat {repeat}: embedding pass ({len(dataset.queries)} questions + {len(dataset.corpus)} chunks) "
              f"{passes[-1].wall:.1f}s wall / {passes[-1].cpu:.1f}s cpu; embtune {opts.epochs} epochs incl. "
              f"embedding {clock.wall:.1f}s wall / {clock.cpu:.1f}s cpu (of which embedding "
              f"{results[-1].timings['embed_seconds']:.1f}s, training {results[-1].timings['train_seconds']:.2f}s)")
    reference = reference_loop(encoder, dataset, epochs=opts.epochs, batch_size=opts.batch_size, lr=config.lr)
    reference_wall, reference_cpu = sum(c.wall for c in reference), sum(c.cpu for c in reference)
    print(f"reference loop, {opts.epochs} epochs: {reference_wall:.1f}s wall / {reference_cpu:.1f}s cpu")
    figures = {}
    for kind in ("wall", "cpu"):
        embed_pass = _median([getattr(c, kind) for c in passes])
        embtune = _median([getattr(c, kind) for c in ours])
        total = reference_wall if kind == "wall" else reference_cpu
        figures[kind] = {"embedding_pass_median": round(embed_pass, 2), "embtune_median": round(embtune, 2),
                         "embedding_pass_all": [round(getattr(c, kind), 2) for c in passes],
                         "embtune_all": [round(getattr(c, kind), 2) for c in ours],
                         "reference_total": round(total, 2),
                         "reference_per_epoch": [round(getattr(c, kind), 2) for c in reference],
                         "overhead_vs_one_embedding_pass": round(embtune / embed_pass - 1, 4),
                         "speedup_vs_reference": round(total / embtune, 2)}
        print(f"{kind:4s}: embtune = one embedding pass {100 * (embtune / embed_pass - 1):+.1f}%; "
              f"reference / embtune = {total / embtune:.1f}x")
    training = [r.timings["train_seconds"] for r in results]

    atomic.write_json(opts.out, {
        "benchmark": "adapter training on cached embeddings vs. LlamaIndex-style re-embedding loop",
        "command": "python bench/bench_adapter.py" + (f" --chunks {opts.chunks}" if opts.chunks != 60 else ""),
        "encoder": encoder.identity,
        "subset": {"chunks": len(dataset.corpus), "questions": len(dataset.queries),
                   "note": "first chunks of the Lyft 10-K QA set, so the reference loop ends in minutes on 2 cores"},
        "epochs": opts.epochs, "batch_size": opts.batch_size,
        "repeats": opts.repeats,
        "seconds": figures,
        "embtune_training_only_seconds": [round(t, 3) for t in training],
        "overhead_vs_one_embedding_pass": figures["wall"]["overhead_vs_one_embedding_pass"],
        "speedup_vs_reference": figures["wall"]["speedup_vs_reference"],
        "targets": {"overhead_below": 0.05, "speedup_at_least": 20.0},
        "met": {kind: {"overhead": f["overhead_vs_one_embedding_pass"] < 0.05,
                       "speedup": f["speedup_vs_reference"] >= 20.0} for kind, f in figures.items()},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads(), "cuda": torch.cuda.is_available()},
    })
    print(f"wrote {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
