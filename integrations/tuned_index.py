"""Serve a document-side tuned index (``embtune tune-index``, NUDGE-N) in LangChain and DocsGPT.

A tuned index is the same store with some document vectors moved (:mod:`embtune_core.retrieval.index_tuning`):
queries are embedded exactly as before (the base model, or base + query adapter), so anything that
searches a FAISS store serves it unchanged. This module rewrites the vectors of a store:

* :func:`tune_faiss_store` applies a tuning to a LangChain ``FAISS`` store in place -- an embtune store
  (:func:`embtune_integrations.faiss_store.load_faiss_store`) or the ``FAISS`` DocsGPT loads -- reading
  the stored vectors back from the flat index, never re-embedding; a document is matched by its
  docstore id and the hash of its text, so a chunk edited since tuning keeps its own vector;
* :func:`store_corpus` gives a store's (ids, texts, vectors), which is what ``tune-index --store`` tunes;
* :func:`write_tuned_index_file` writes only ``index.faiss`` for a LangChain/DocsGPT folder
  (``index.faiss`` + ``index.pkl``): the pickle, which holds texts and ids, is copied byte for byte and
  never unpickled here, and ``index.embtune-tuned.json`` names the documents moved. DocsGPT then loads
  the folder as always.

The stores record which documents the tuning moved, so loading one checks the embeddings on a document
it did not move (the load-time identity check of :mod:`embtune_integrations.faiss_store`).

Each tuned vector keeps its stored vector's length, so an L2 index over raw vectors (DocsGPT's
``FaissStore``) keeps every document's norm and only directions change.

Example::

    store = load_faiss_store("out/index", EmbtuneEmbeddings("sentence-transformers/all-MiniLM-L6-v2"))
    moved = tune_faiss_store(store, load_index_tuning("out/uber-nudge"))
    save_faiss_store(store, "out/index-tuned")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from embtune_core.errors import InputError


def _vectors(index: Any) -> np.ndarray:
    faiss = __import__("faiss")
    cpu = faiss.index_gpu_to_cpu(index) if hasattr(faiss, "GpuIndex") and isinstance(index, faiss.GpuIndex) else index
    if not isinstance(cpu, (faiss.IndexFlatIP, faiss.IndexFlatL2, faiss.IndexFlat)):
        raise InputError(f"a {type(cpu).__name__} does not store its vectors exactly; tuning needs a flat index "
                         "(IndexFlatIP or IndexFlatL2, what LangChain's FAISS builds)", field="index")
    return faiss.rev_swig_ptr(cpu.get_xb(), cpu.ntotal * cpu.d).reshape(cpu.ntotal, cpu.d).copy() \
        if cpu.ntotal else np.empty((0, cpu.d), np.float32)


def store_corpus(store: Any) -> tuple[list[str], list[str], np.ndarray]:
    """``(ids, texts, vectors)`` of a LangChain ``FAISS`` store, in index order (vectors as stored)."""
    vectors = _vectors(store.index)
    ids, texts = [], []
    for position in range(vectors.shape[0]):
        doc_id = store.index_to_docstore_id[position]
        doc = store.docstore.search(doc_id)
        if isinstance(doc, str) or doc is None:
            raise InputError(f"vector {position} points to document '{doc_id}', which the docstore lacks",
                             field="docstore")
        ids.append(str(doc_id))
        texts.append(doc.page_content)
    return ids, texts, vectors


def tune_faiss_store(store: Any, tuned: Any) -> int:
    """Apply ``tuned`` (a :class:`~embtune_core.retrieval.index_tuning.TunedIndex`) to ``store``'s vectors in place;
    returns how many documents moved. The index is rebuilt with the same type, metric and order."""
    ids, texts, vectors = store_corpus(store)
    new, applied = tuned.apply(ids, texts, vectors)
    _replace_vectors(store, new)
    moved = {doc_id for doc_id, a, b in zip(ids, vectors, new) if not np.array_equal(a, b)}
    store.embtune_moved_ids = (getattr(store, "embtune_moved_ids", None) or set()) | moved
    return applied


def _replace_vectors(store: Any, vectors: np.ndarray) -> None:
    faiss = __import__("faiss")
    old = store.index
    on_gpu = hasattr(faiss, "GpuIndex") and isinstance(old, faiss.GpuIndex)
    fresh = (faiss.IndexFlatIP if old.metric_type == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2)(old.d)
    fresh.add(np.ascontiguousarray(vectors, dtype=np.float32))
    store.index = fresh
    if on_gpu:
        from embtune_integrations.faiss_store import to_gpu

        to_gpu(store)


def write_tuned_index_file(folder: str | Path, tuned: Any, out: str | Path, *, ids: list[str],
                           texts: list[str], index_name: str = "index") -> int:
    """A LangChain/DocsGPT store folder (``index.faiss`` + ``index.pkl``) copied to ``out`` with its vectors
    tuned: ``index.pkl`` byte for byte, ``index.faiss`` rewritten; ``ids`` and ``texts`` are the store's, in
    index order (from a trusted load of that folder). Returns how many documents moved."""
    from embtune_core.runtime import atomic

    faiss = __import__("faiss")
    folder, out = Path(folder), Path(out)
    index = faiss.read_index(str(folder / f"{index_name}.faiss"))
    vectors = _vectors(index)
    if len(ids) != vectors.shape[0] or len(texts) != vectors.shape[0]:
        raise InputError(f"{len(ids)} ids for {vectors.shape[0]} vectors", path=folder / f"{index_name}.faiss")
    new, applied = tuned.apply(ids, texts, vectors)
    fresh = (faiss.IndexFlatIP if index.metric_type == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2)(index.d)
    fresh.add(np.ascontiguousarray(new, dtype=np.float32))
    from embtune_integrations.faiss_store import TUNED_SIDECAR

    moved = sorted(doc_id for doc_id, a, b in zip(ids, vectors, new) if not np.array_equal(a, b))
    with atomic.atomic_directory(out) as staging:
        faiss.write_index(fresh, str(staging / f"{index_name}.faiss"))
        (staging / f"{index_name}.pkl").write_bytes((folder / f"{index_name}.pkl").read_bytes())
        (staging / f"{index_name}.{TUNED_SIDECAR}").write_text(json.dumps({"tuned_document_ids": moved}) + "\n",
                                                               encoding="utf-8")
    return applied
