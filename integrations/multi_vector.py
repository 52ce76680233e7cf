"""MaxP retrieval in LangChain: long documents indexed as windows, returned whole by their best window.

``embtune evaluate --document-windows max`` scores a document longer than the model's token limit by
its best window (MaxP, Dai & Callan 2019; :mod:`embtune_core.encoders.long_documents`). This module builds
the same thing for a deployment: every document is split into the same windows (the same function,
the model's own tokenizer), the windows go into an embtune FAISS store
(:func:`embtune_integrations.faiss_store.build_faiss_store`; GPU when present), and LangChain's own
``MultiVectorRetriever`` (``langchain_classic``, installed with ``langchain-community``) returns the
parent documents in the order of their best window -- exactly the ranking evaluate measured.

Inputs: ``documents`` (LangChain ``Document`` objects or strings), ``embeddings`` an
:class:`~embtune_integrations.langchain.EmbtuneEmbeddings` over a local sentence-transformers model
(with or without a query adapter; ``document_windows`` left off: the windows are made here), ``k``
parents per query. The parents live in memory (``InMemoryStore``); save the window store with
:func:`~embtune_integrations.faiss_store.save_faiss_store` if you need it on disk (each window's
metadata holds its parent's id under ``embtune_parent`` and its position under ``embtune_window``).

Raises :class:`~embtune_core.errors.UsageError` for embeddings that cannot split documents (an API
model) or that already pool windows.

Example::

    from embtune_integrations.langchain import EmbtuneEmbeddings
    from embtune_integrations.multi_vector import window_retriever

    retriever = window_retriever(chunks, EmbtuneEmbeddings("out/model"), k=5)
    retriever.invoke("What was Uber's 2021 revenue?")     # up to 5 whole chunks, best window first
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document

from embtune_core.errors import UsageError

PARENT_KEY = "embtune_parent"
WINDOW_KEY = "embtune_window"


def _retriever_class():
    from langchain_classic.retrievers.multi_vector import MultiVectorRetriever

    class TopKMultiVectorRetriever(MultiVectorRetriever):
        """``MultiVectorRetriever`` that searches enough windows to rank ``top_k`` parents exactly
        and returns those ``top_k`` (the parent order is the order of each one's best window)."""

        top_k: int = 4

        def _get_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return super()._get_relevant_documents(query, run_manager=run_manager)[:self.top_k]

        async def _aget_relevant_documents(self, query: str, *, run_manager: Any) -> list[Document]:
            return (await super()._aget_relevant_documents(query, run_manager=run_manager))[:self.top_k]

    return TopKMultiVectorRetriever


def window_retriever(documents: Sequence[Document | str], embeddings: Any, *, k: int = 4,
                     use_gpu: bool | None = None):
    """A LangChain retriever returning whole ``documents`` ranked by their best window (see the module
    docstring); ``k`` parents per query."""
    from langchain_core.stores import InMemoryStore

    from embtune_core.encoders.long_documents import WindowedEncoder, windows_to_search
    from embtune_integrations.faiss_store import build_faiss_store

    base = getattr(embeddings, "base_encoder", None)
    if base is None or isinstance(base, WindowedEncoder) or not hasattr(base, "token_limit"):
        raise UsageError("needs EmbtuneEmbeddings over a local sentence-transformers model, document_windows off "
                         "(the windows are made here)", field="embeddings")
    parents = [d if isinstance(d, Document) else Document(page_content=str(d)) for d in documents]
    ids = [d.id or str(uuid.uuid4()) for d in parents]
    windows = WindowedEncoder(base, "max").windows([d.page_content for d in parents])
    children, seen = [], {}
    for text, owner in zip(windows.texts, windows.owner.tolist()):
        position = seen[owner] = seen.get(owner, -1) + 1
        children.append(Document(page_content=text, metadata={**parents[owner].metadata, PARENT_KEY: ids[owner],
                                                                WINDOW_KEY: position}))
    store = build_faiss_store(children, embeddings, use_gpu=use_gpu)
    docstore = InMemoryStore()
    docstore.mset([(doc_id, Document(page_content=d.page_content, metadata=d.metadata, id=doc_id))
                   for doc_id, d in zip(ids, parents)])
    fetch = windows_to_search(windows.owner, min(int(k), len(parents))) if parents else int(k)
    return _retriever_class()(vectorstore=store, docstore=docstore, id_key=PARENT_KEY, search_kwargs={"k": fetch},
                              top_k=int(k))
