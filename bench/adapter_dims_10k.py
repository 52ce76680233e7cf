"""Query adapters at every Matryoshka width: trained on Lyft, tested on Uber at 384/256/128/64 dimensions.

For each adapter variant (linear, two-layer, two-layer + index pseudo-queries from the Uber chunk
texts) and each seed, the adapter is trained twice with the defaults of `embtune train-adapter`:
at full width only, and with ``matryoshka_dims = [384, 256, 128, 64]`` (the Matryoshka loss over
those widths and the rule that keeps an epoch only when it matches or beats the base at each of
them on held-out Lyft questions). Both are scored on the Uber questions at each width (the first
``d`` components, renormalised, as `embtune evaluate --dims` does): NDCG@10 and hit@5.

    python bench/adapter_dims_10k.py            # writes bench/results/adapter_dims_10k.json (minutes)
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa"
sys.path.insert(0, str(ROOT))

from embtune_core.adapters.adapter_training import AdapterTrainingConfig, train_adapter
from embtune_core.adapters.pseudo_queries import index_pseudo_queries
from embtune_core.data.dataset import QADataset
from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.encoders.encoding import encoder_from_spec
from embtune_core.retrieval.search import exact_search
from embtune_core.runtime import atomic
from embtune_core.scoring import metrics
from embtune_core.scoring.evaluation import truncate

DIMS = [384, 256, 128, 64]


def scores(queries: np.ndarray, corpus: np.ndarray, relevant: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """{dim: {"ndcg@10", "hit@5"}} of exact search at each width."""
    out = {}
    for dim in DIMS:
        _, indices = exact_search(truncate(queries, dim), truncate(corpus, dim), k=10)
        hits = metrics.hit_matrix(indices, relevant)
        n_relevant = np.array([len(r) for r in relevant])
        out[str(dim)] = {"ndcg@10": float(metrics.ndcg(hits, n_relevant, 10).mean()),
                         "hit@5": float(metrics.hit_rate(hits, 5).mean())}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--encoder", default="st:sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=AdapterTrainingConfig.temperature,
                        help="InfoNCE temperature of every variant (default: the adapter's default)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "adapter_dims_10k.json"))
    opts = parser.parse_args()
    data = Path(opts.data)
    if not (data / "train_dataset.json").is_file():
        print(f"bench/adapter_dims_10k.py: no data at {data}; skipping", file=sys.stderr)
        return 0
    started = time.perf_counter()
    lyft, uber = QADataset.load(data / "train_dataset.json"), QADataset.load(data / "val_dataset.json")
    encoder, cache = encoder_from_spec(opts.encoder), EmbeddingCache()
    corpus_ids, query_ids = list(uber.corpus), [q for q in uber.queries if uber.relevant_docs.get(q)]
    row = {cid: i for i, cid in enumerate(corpus_ids)}
    corpus = cache.embed(encoder, [uber.corpus[c] for c in corpus_ids], kind="document", desc="Uber corpus")
    queries = cache.embed(encoder, [uber.queries[q] for q in query_ids], kind="query", desc="Uber questions")
    relevant = [np.array([row[c] for c in uber.relevant_docs[q]]) for q in query_ids]
    base = scores(queries, corpus, relevant)
    index = index_pseudo_queries(uber.corpus)  # Uber chunk texts only
    variants = {}
    for label, kind, augment in (("linear", "linear", None), ("two-layer", "two-layer", None),
                                 ("two-layer + index pseudo-queries", "two-layer", index)):
        for training, dims in (("full width only", None), ("matryoshka_dims 384,256,128,64", DIMS)):
            runs = []
            for seed in range(opts.seeds):
                config = AdapterTrainingConfig(adapter=kind, seed=seed, matryoshka_dims=dims,
                                               temperature=opts.temperature)
                result = train_adapter(encoder, lyft, config=config, cache=cache, augment=augment)
                runs.append(scores(result.adapter.transform(queries), corpus, relevant))
            mean = {d: {m: float(np.mean([r[d][m] for r in runs])) for m in ("ndcg@10", "hit@5")} for d in base}
            worst = {d: {m: float(min(r[d][m] - base[d][m] for r in runs)) for m in ("ndcg@10", "hit@5")}
                     for d in base}
            variants[f"{label}, {training}"] = {
                "mean": mean, "gain_mean": {d: {m: mean[d][m] - base[d][m] for m in mean[d]} for d in base},
                "worst_seed_gain": worst,
                "never_below_base_ndcg@10": all(worst[d]["ndcg@10"] >= 0 for d in base)}
            print(label, training, {d: round(variants[f"{label}, {training}"]["gain_mean"][d]["ndcg@10"], 4)
                                    for d in base})
    atomic.write_json(opts.out, {
        "benchmark": "query adapters on frozen MiniLM at every Matryoshka width, Lyft 10-K -> Uber 10-K",
        "command": " ".join(["python", "bench/adapter_dims_10k.py", *sys.argv[1:]]), "seeds": opts.seeds,
        "temperature": opts.temperature, "dims": DIMS, "base_uber": base,
        "variants": variants, "wall_seconds": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "processor": platform.processor() or platform.machine()}})
    print(f"wrote {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
