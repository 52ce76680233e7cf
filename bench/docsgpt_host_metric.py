"""Query adapters served against an index built the way DocsGPT builds it, for three kinds of base model.

DocsGPT's FaissStore is LangChain's ``FAISS.from_documents(docs, embeddings)``: an L2 index
(``IndexFlatL2``) over the raw ``encode()`` vectors of its ``EmbeddingsWrapper`` (the same vectors as
``HuggingFaceEmbeddings`` with default settings). Here that index is built over the Uber 10-K chunks
for three bases made from the packaged MiniLM (no hub):

* ``normalizing``: all-MiniLM-L6-v2 as shipped (ends in ``Normalize``, no prompts);
* ``non-normalizing``: the same transformer and mean pooling without the ``Normalize`` module (vectors of
  norm about 2 to 4, as the model in issue 27);
* ``prompted``: MiniLM with ``prompts = {"query": "query: ", "document": "passage: "}`` (plain
  ``encode()``, which DocsGPT calls, applies neither).

For each, ``embtune train-adapter --host-vectors`` (defaults: linear adapter, 12 epochs at most, the
epoch chosen on questions held out of the Lyft training set) trains on the Lyft questions; then every
Uber question is searched in the one index, with the base model's query vector (``HuggingFaceEmbeddings``)
and with embtune's DocsGPT shim (``embtune:<adapter>``, the vectors DocsGPT's backend would compute).
hit@1 per question, paired: the mean difference with its 95% paired bootstrap interval and the two-sided
paired randomisation (sign-flip) p-value (:func:`embtune_core.scoring.stats.compare`), and McNemar's exact test
on the discordant questions (scipy's binomial test). "Never below the base by more than noise": the
upper end of the interval is >= 0.

For the non-normalising base, the adapter issue 27 reported (trained by inner product with unit-length
output, ``--index-metric inner_product``) is scored too, applied by hand: the shim now refuses it.

    python bench/docsgpt_host_metric.py       # writes bench/results/docsgpt_host_metric.json (minutes)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "llamaindex-10k-qa"
sys.path.insert(0, str(ROOT))

from embtune_core.cli import main as embtune
from embtune_core.data.dataset import QADataset
from embtune_core.encoders.models import resolve
from embtune_core.runtime import atomic
from embtune_core.scoring import stats


def make_bases(folder: Path) -> dict[str, str]:
    from sentence_transformers import SentenceTransformer

    minilm = resolve("sentence-transformers/all-MiniLM-L6-v2").target
    model = SentenceTransformer(minilm)
    SentenceTransformer(modules=[model[0], model[1]]).save(str(folder / "non-normalizing"))
    prompted = SentenceTransformer(minilm)
    prompted.prompts = {"query": "query: ", "document": "passage: "}
    prompted.save(str(folder / "prompted"))
    return {"normalizing": minilm, "non-normalizing": str(folder / "non-normalizing"),
            "prompted": str(folder / "prompted")}


def docsgpt_store(base: str, corpus: dict[str, str]):
    """What DocsGPT's worker ingests: FAISS.from_documents with its wrapper's (HuggingFaceEmbeddings') vectors."""
    from langchain_community.vectorstores import FAISS
    from langchain_core.documents import Document
    from langchain_huggingface import HuggingFaceEmbeddings

    docs = [Document(page_content=text, metadata={"id": cid}) for cid, text in corpus.items()]
    return FAISS.from_documents(docs, HuggingFaceEmbeddings(model_name=base))


def hits_at_1(store, query_vectors: np.ndarray, dataset: QADataset, query_ids: list[str]) -> np.ndarray:
    """1 where the store's first document for a query vector is relevant (L2 search, as DocsGPT's)."""
    _, rows = store.index.search(np.ascontiguousarray(query_vectors, dtype=np.float32), 1)
    ids = [store.docstore.search(store.index_to_docstore_id[int(r)]).metadata["id"] for r in rows[:, 0]]
    return np.asarray([int(cid in dataset.relevant_docs[q]) for cid, q in zip(ids, query_ids)], dtype=np.float64)


def paired(base: np.ndarray, adapted: np.ndarray) -> dict:
    from scipy.stats import binomtest

    result = stats.compare(base, adapted)
    better, worse = int(np.sum((adapted == 1) & (base == 0))), int(np.sum((adapted == 0) & (base == 1)))
    mcnemar = binomtest(better, better + worse, 0.5).pvalue if better + worse else 1.0
    return {"difference": result["difference"], "ci95": [result["ci_low"], result["ci_high"]],
            "p_randomization": result["p_randomization"], "mcnemar_exact_p": float(mcnemar),
            "questions_better": better, "questions_worse": worse,
            "not_below_base_beyond_noise": bool(result["ci_high"] >= 0)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "docsgpt_host_metric.json"))
    opts = parser.parse_args()
    data = Path(opts.data)
    if not (data / "train_dataset.json").is_file():
        print(f"shared data not found at {data}", file=sys.stderr)
        return 3
    from langchain_huggingface import HuggingFaceEmbeddings

    from embtune_core.adapters.adapter_io import load_adapter
    from embtune_integrations.docsgpt import embeddings_from_name

    val = QADataset.load(data / "val_dataset.json")
    query_ids = [q for q in val.queries if val.relevant_docs.get(q)]
    questions = [val.queries[q] for q in query_ids]
    started = time.time()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bases = make_bases(tmp)
        for kind, base in bases.items():
            t0 = time.time()
            adapter = tmp / f"adapter-{kind}"
            code = embtune(["train-adapter", "--model", base, "--host-vectors", "--train",
                            str(data / "train_dataset.json"), "--out", str(adapter)])
            if code:
                raise SystemExit(f"train-adapter failed for {kind}: exit {code}")
            config = json.loads((adapter / "adapter_config.json").read_text())
            store = docsgpt_store(base, val.corpus)
            base_queries = np.asarray(HuggingFaceEmbeddings(model_name=base).embed_documents(questions))
            shim = embeddings_from_name(f"embtune:{adapter}", base_model=base)
            adapted_queries = np.asarray([shim.embed_query(q) for q in questions])  # DocsGPT: one question a call
            base_hits = hits_at_1(store, base_queries, val, query_ids)
            adapted_hits = hits_at_1(store, adapted_queries, val, query_ids)
            norms = np.linalg.norm(store.index.reconstruct_n(0, store.index.ntotal), axis=1)
            entry = {"base_model": kind, "index": f"FAISS.from_documents + HuggingFaceEmbeddings, "
                                                 f"{type(store.index).__name__}, {store.index.ntotal} Uber chunks",
                     "document_norms": [float(norms.min()), float(np.median(norms)), float(norms.max())],
                     "questions": len(query_ids), "adapter": {k: config[k] for k in ("index_metric", "normalize_output")}
                     | {"best_epoch": config["training"]["best_epoch"]},
                     "hit@1": {"base": float(base_hits.mean()), "adapted": float(adapted_hits.mean())},
                     "paired": paired(base_hits, adapted_hits)}
            if kind == "non-normalizing":  # the adapter issue 27 reported, applied by hand (the shim refuses it)
                old = tmp / "adapter-inner-product"
                code = embtune(["train-adapter", "--model", base, "--host-vectors", "--index-metric", "inner_product",
                                "--train", str(data / "train_dataset.json"), "--out", str(old)])
                if code:
                    raise SystemExit(f"train-adapter --index-metric inner_product failed: exit {code}")
                old_hits = hits_at_1(store, load_adapter(old).transform(base_queries), val, query_ids)
                try:
                    embeddings_from_name(f"embtune:{old}", base_model=base)
                    refusal = None
                except Exception as exc:  # noqa: BLE001 - the one-line refusal is what is recorded
                    refusal = str(exc)
                entry["inner_product_adapter"] = {"hit@1": float(old_hits.mean()), "paired": paired(base_hits, old_hits),
                                                  "shim": refusal}
            entry["seconds"] = round(time.time() - t0, 1)
            results[kind] = entry
            print(json.dumps(entry, indent=2), flush=True)
    import faiss
    import langchain_community
    import sentence_transformers
    import torch

    out = {"command": "python bench/docsgpt_host_metric.py", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
           "machine": {"platform": platform.platform(), "python": platform.python_version(),
                       "torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
                       "langchain_community": langchain_community.__version__, "faiss": faiss.__version__},
           "test": "hit@1 per Uber question, paired: mean difference with its 95% paired bootstrap CI (2000 "
                   "resamples), two-sided sign-flip randomisation p (10000), McNemar exact p on discordant questions",
           "bases": results, "seconds": round(time.time() - started, 1)}
    atomic.write_json(opts.out, out)
    print(f"wrote {opts.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
