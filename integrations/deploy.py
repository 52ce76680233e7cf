"""Serve what ``embtune run`` recommended, from its deploy folder, in LangChain (and through it DocsGPT).

``<run>/deploy`` (:mod:`embtune_core.publishing.deploy`) holds the recommended system's parts: a fine-tuned
model, a query adapter, tuned document vectors (NUDGE), BM25 joined in one vector (sparse-dense) or
a BM25 fusion. These functions rebuild exactly the system the report measured:

* :func:`deployed_embeddings`: its LangChain ``Embeddings`` (documents through the index tuning and
  the BM25 part, queries through the adapter), for any vector store; ``single_index=True`` gives the
  best single-index system instead, when the recommended one needs BM25 beside its index;
* :func:`deployed_retriever`: the retriever over your chunks -- a FAISS store of those embeddings
  (inner product), fused with BM25 when the system is a hybrid, or BM25 alone.

Example::

    retriever = deployed_retriever("runs/my-run/deploy", documents, k=5)
    retriever.invoke("What was the revenue in 2021?")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embtune_core.publishing.deploy import deployed_encoder, deployed_spec


def deployed_embeddings(folder: str | Path, *, single_index: bool = False, **options: Any):
    """The deployed system's :class:`~embtune_integrations.langchain.EmbtuneEmbeddings`."""
    from embtune_integrations.langchain import EmbtuneEmbeddings

    return EmbtuneEmbeddings(deployed_encoder(folder, single_index=single_index, **options))


def deployed_retriever(folder: str | Path, documents: Sequence[Any], *, k: int = 4, single_index: bool = False):
    """The deployed system as a LangChain retriever over ``documents`` (Documents or strings)."""
    from langchain_core.documents import Document

    spec = deployed_spec(folder, single_index=single_index)
    docs = [d if isinstance(d, Document) else Document(page_content=str(d)) for d in documents]
    if spec == "bm25":
        from embtune_integrations.hybrid import BM25Retriever

        return BM25Retriever.from_documents(docs, k=k)
    if "+windows:max" in spec:  # scored by its best window: one vector per window (MaxP)
        if spec.startswith("hybrid:"):
            from embtune_core.errors import InputError

            raise InputError("a BM25 hybrid over best-window scores has no LangChain retriever yet; serve the "
                             "single-index system (single_index=True) or the windows retriever alone",
                             path=folder, field="recommended")
        from embtune_core.retrieval.systems import parse_system
        from embtune_integrations.langchain import EmbtuneEmbeddings
        from embtune_integrations.multi_vector import window_retriever

        parsed = parse_system(f"x={spec}")
        return window_retriever(docs, EmbtuneEmbeddings(parsed.encoder_spec.removeprefix("st:"), normalize=True), k=k)
    from embtune_integrations.faiss_store import build_faiss_store

    store = build_faiss_store(docs, deployed_embeddings(folder, single_index=single_index),
                              distance_strategy="max_inner_product")
    if spec.startswith("hybrid:"):
        from embtune_integrations.hybrid import hybrid_retriever

        record = json.loads((Path(folder) / "recommendation.json").read_text(encoding="utf-8"))
        fusion = json.loads((Path(folder) / record["parts"]["fusion"]).read_text(encoding="utf-8"))
        fusion.pop("spec", None)
        return hybrid_retriever(store, fusion, k=k)
    return store.as_retriever(search_kwargs={"k": int(k)})
