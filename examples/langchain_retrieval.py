"""Compare the base retriever with the tuned one (fine-tuned model and/or base + query adapter) in LangChain.

Both retrievers are LangChain FAISS retrievers over the same chunks, asked the same questions;
the script prints hit rate and MRR at k for each, and the questions whose top hit changed.

* ``--model DIR``: a fine-tuned model directory. Its documents are embedded again (a fine-tuned
  model changes document vectors), into a second index.
* ``--adapter DIR``: a query adapter trained for ``--base``. The base index is reused as is
  (saved and reloaded without pickle, then served with the adapted embeddings): no re-indexing.
* ``--train-adapter``: train a small linear adapter first (on ``--train-dataset``, default the
  built-in training questions), for a self-contained demo.

Without ``--dataset`` it uses a small built-in dataset (a fictional company handbook; the
evaluation questions are not the training ones). Everything runs offline: ``--base`` defaults to
the packaged all-MiniLM-L6-v2.

Examples::

    python examples/langchain_retrieval.py --train-adapter                       # built-in demo
    python examples/langchain_retrieval.py --adapter out/adapter --dataset val_dataset.json --k 5
    python examples/langchain_retrieval.py --model out/model --adapter out/adapter --report out/compare.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

CHUNKS = {
    "leave": "Employees accrue 2.5 days of paid vacation per month worked, up to 30 days a year. Unused days carry "
             "over until March 31 of the following year.",
    "sick": "If you are ill, notify your manager before 10 am. From the fourth consecutive day of absence a "
            "doctor's certificate is required.",
    "expenses": "Travel costs are reimbursed within 30 days when the claim is filed in the finance portal with "
                "receipts attached. Economy class is the default for flights under six hours.",
    "laptop": "New hires receive a 14-inch laptop on their first day. Hardware is replaced every three years or "
              "sooner when the IT desk confirms a defect.",
    "vpn": "Remote access to internal systems requires the corporate VPN and a hardware security key; "
           "passwords alone are never accepted.",
    "parental": "Parents are entitled to 16 weeks of fully paid leave after a birth or adoption, which can be "
                "taken in up to three blocks within the first year.",
    "pension": "The company matches pension contributions up to 5% of base salary; matching starts after the "
               "probation period of six months.",
    "office": "The Lisbon office is open from 7 am to 9 pm on weekdays. Badges are needed at the main entrance "
              "after 6 pm.",
    "training": "Each employee has an annual learning budget of 1,500 euros for courses, books and conferences, "
                "approved by their manager.",
    "security": "Report a lost badge, phone or laptop to the security team within one hour, by phone or in the "
                "incident channel.",
}
# (question, chunk) -- the first two per chunk train an adapter, the third evaluates.
QUESTIONS = [
    ("How many holidays do I get each year?", "leave"), ("Do vacation days expire?", "leave"),
    ("What happens to the days off I did not use?", "leave"),
    ("When do I need a note from a physician?", "sick"), ("Who do I tell when I am unwell?", "sick"),
    ("I caught the flu, what should I do in the morning?", "sick"),
    ("How do I get my money back for a business trip?", "expenses"), ("Can I fly business class?", "expenses"),
    ("Where do I submit receipts for a work journey?", "expenses"),
    ("What computer will I get when I start?", "laptop"), ("How often is equipment renewed?", "laptop"),
    ("My notebook is broken, can it be swapped?", "laptop"),
    ("How do I connect from home?", "vpn"), ("Is a password enough to log in remotely?", "vpn"),
    ("What do I need to work outside the office network?", "vpn"),
    ("How long is maternity or paternity leave?", "parental"), ("Can I split my baby leave?", "parental"),
    ("How much time off after adopting a child?", "parental"),
    ("Does the employer contribute to retirement savings?", "pension"),
    ("When does the retirement match begin?", "pension"), ("What percentage of pay is matched for retirement?", "pension"),
    ("What are the opening hours in Lisbon?", "office"), ("Do I need my card to get in at night?", "office"),
    ("Can I work in the building on a weekday evening?", "office"),
    ("Is there money for conferences?", "training"), ("Who approves a course I want to take?", "training"),
    ("How much can I spend on books and classes?", "training"),
    ("I lost my phone, who do I call?", "security"), ("How fast must a missing badge be reported?", "security"),
    ("What should I do if my work laptop is stolen?", "security"),
]


def builtin_datasets():
    """(train, evaluation) QADatasets over the same chunks; the evaluation questions are unseen."""
    from embtune_core.data.dataset import QADataset

    metadata = {cid: {"source": f"handbook/{cid}.md"} for cid in CHUNKS}

    def make(rows, prefix):
        queries = {f"{prefix}{i}": q for i, (q, _) in enumerate(rows)}
        relevant = {f"{prefix}{i}": [c] for i, (_, c) in enumerate(rows)}
        return QADataset(queries, dict(CHUNKS), relevant, extras={"corpus_metadata": metadata})

    train = [row for i, row in enumerate(QUESTIONS) if i % 3 != 2]
    evaluation = [row for i, row in enumerate(QUESTIONS) if i % 3 == 2]
    return make(train, "t"), make(evaluation, "e")


def evaluate(retriever, dataset, k: int) -> tuple[dict[str, float], dict[str, list[str]]]:
    """Hit rate and MRR at k of a LangChain retriever; also each question's ranked chunk ids."""
    hits, reciprocal, ranked = 0.0, 0.0, {}
    for qid, question in dataset.queries.items():
        ids = [doc.id for doc in retriever.invoke(question)][:k]
        ranked[qid] = ids
        relevant = set(dataset.relevant_docs.get(qid, []))
        rank = next((i for i, cid in enumerate(ids, 1) if cid in relevant), None)
        if rank is not None:
            hits += 1
            reciprocal += 1.0 / rank
    n = max(1, len(dataset.queries))
    return {f"hit_rate@{k}": hits / n, f"mrr@{k}": reciprocal / n}, ranked


def _top(ids: list[str], relevant: set[str]) -> str:
    if not ids:
        return "-"
    return f"{ids[0]} (relevant)" if ids[0] in relevant else ids[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", default="sentence-transformers/all-MiniLM-L6-v2", help="base model (name or folder)")
    parser.add_argument("--model", help="fine-tuned model folder to compare")
    parser.add_argument("--adapter", help="query adapter folder (trained for --base) to compare")
    parser.add_argument("--train-adapter", action="store_true", help="train a linear adapter first (demo)")
    parser.add_argument("--train-dataset", help="QA dataset for --train-adapter (default: built-in)")
    parser.add_argument("--dataset", help="QA dataset to evaluate on (LlamaIndex JSON, BEIR folder, pairs)")
    parser.add_argument("--limit", type=int, help="evaluate on the first N questions only")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", help="cpu, cuda, ... (default: automatic)")
    parser.add_argument("--out", default=None, help="working folder for indexes and a trained adapter (default: temporary)")
    parser.add_argument("--report", help="write the figures to this JSON file")
    parser.add_argument("--show", type=int, default=3, help="print this many questions whose top hit changed")
    args = parser.parse_args(argv)
    if not (args.model or args.adapter or args.train_adapter):
        parser.error("give --model, --adapter or --train-adapter (something tuned to compare with the base model)")

    from langchain_core.documents import Document

    from embtune_core.data.dataset import load_any
    from embtune_core.errors import EmbtuneError
    from embtune_core.runtime import atomic
    from embtune_integrations.faiss_store import (
        as_retriever,
        build_faiss_store,
        load_faiss_store,
        save_faiss_store,
    )
    from embtune_integrations.langchain import EmbtuneEmbeddings

    try:
        builtin_train, builtin_eval = builtin_datasets()
        dataset = load_any(args.dataset) if args.dataset else builtin_eval
        if args.limit:
            dataset = dataset.subset(list(dataset.queries)[:args.limit])
        work = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="embtune-compare-"))
        options = {"batch_size": args.batch_size, "device": args.device}
        base = EmbtuneEmbeddings(args.base, **options)

        adapter_dir = args.adapter
        if args.train_adapter:
            from embtune_core.adapters.adapter_training import AdapterTrainingConfig, train_adapter

            train = load_any(args.train_dataset) if args.train_dataset else builtin_train
            adapter_dir = str(work / "adapter")
            result = train_adapter(base.base_encoder, train, config=AdapterTrainingConfig(adapter="linear", epochs=30),
                                   output_dir=adapter_dir)
            print(f"trained adapter -> {adapter_dir} (validation mrr@10 {result.baseline['mrr@10']:.3f} -> "
                  f"{result.best['mrr@10']:.3f}, best epoch {result.best_epoch})")

        metadata = dataset.corpus_metadata
        documents = [Document(id=cid, page_content=text, metadata=metadata.get(cid, {}))
                     for cid, text in dataset.corpus.items()]
        print(f"{len(documents)} chunks, {len(dataset.queries)} questions, k={args.k}")

        retrievers = {}
        t0 = time.perf_counter()
        base_index = save_faiss_store(build_faiss_store(documents, base), work / "index-base")
        retrievers["base"] = as_retriever(load_faiss_store(base_index, base), k=args.k)
        timings = {"index base": time.perf_counter() - t0}
        if adapter_dir:
            adapted = EmbtuneEmbeddings(args.base, adapter=adapter_dir, **options)
            # Same document vectors as the base model: the saved base index serves the adapter unchanged.
            retrievers["base + adapter"] = as_retriever(load_faiss_store(base_index, adapted), k=args.k)
        if args.model:
            t0 = time.perf_counter()
            tuned = EmbtuneEmbeddings(args.model, **options)
            tuned_index = save_faiss_store(build_faiss_store(documents, tuned), work / "index-tuned")
            retrievers["fine-tuned"] = as_retriever(load_faiss_store(tuned_index, tuned), k=args.k)
            timings["index fine-tuned"] = time.perf_counter() - t0

        results, rankings = {}, {}
        for name, retriever in retrievers.items():
            results[name], rankings[name] = evaluate(retriever, dataset, args.k)
        keys = list(results["base"])
        print(f"\n{'retriever':<16}" + "".join(f"{key:>14}" for key in keys))
        for name, figures in results.items():
            print(f"{name:<16}" + "".join(f"{figures[key]:>14.3f}" for key in keys))

        for name in [n for n in retrievers if n != "base"]:
            changed = [q for q in dataset.queries if rankings[name][q][:1] != rankings["base"][q][:1]]
            print(f"\n{name}: top hit changed for {len(changed)} of {len(dataset.queries)} questions")
            for qid in changed[:args.show]:
                relevant = set(dataset.relevant_docs.get(qid, []))
                print(f"  {dataset.queries[qid][:70]!r}\n    base: {_top(rankings['base'][qid], relevant)}   "
                      f"{name}: {_top(rankings[name][qid], relevant)}")
        if args.report:
            atomic.write_json(args.report, {"k": args.k, "questions": len(dataset.queries), "chunks": len(documents),
                                            "base": args.base, "model": args.model, "adapter": adapter_dir,
                                            "results": results, "seconds": timings})
            print(f"\nwrote {args.report}")
    except EmbtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
