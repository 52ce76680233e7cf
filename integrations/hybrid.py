"""BM25 and tuned hybrid retrieval in LangChain, ranking exactly as ``embtune evaluate`` measures them.

* :class:`BM25Retriever`: a LangChain retriever over ``bm25s`` with embtune's BM25 settings
  (:mod:`embtune_core.retrieval.lexical`: lucene variant, k1 1.5, b 0.75, English stop words). Unlike
  ``langchain_community``'s ``BM25Retriever`` (rank_bm25 over whitespace tokens), it scores as the
  ``bm25`` row of embtune's report, and like Lucene it never returns a document that shares no term
  with the query.
* :class:`HybridRetriever`: a vector store's ranking and BM25's fused by a
  :class:`~embtune_core.retrieval.fusion.Fusion` (weighted RRF as LangChain's ``EnsembleRetriever`` computes it,
  or convex fusion of min-max normalised scores), each side's top ``fusion.depth``, best ``k`` returned.
  With the fusion ``embtune run`` chose (``fusion.json`` in its deploy folder) it returns what the
  report's hybrid row measured.

Both take the documents in the vector store's index order, so a document is the same one on both
sides. :func:`hybrid_retriever` builds one from a store (embtune's or LangChain's ``FAISS``).

Example::

    store = load_faiss_store("out/index", EmbtuneEmbeddings("out/model"))
    retriever = hybrid_retriever(store, Fusion.from_json(json.load(open("deploy/fusion.json"))), k=5)
    retriever.invoke("What was the revenue in 2021?")
"""

from __future__ import annotations

from typing import Any

import numpy as np
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, PrivateAttr

from embtune_core.retrieval.fusion import Fusion, fuse


class BM25Retriever(BaseRetriever):
    """BM25 over ``documents`` as embtune scores it (module docstring); the top ``k`` with score > 0."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    documents: list[Document]
    k: int = 4
    _index: Any = PrivateAttr(default=None)

    def model_post_init(self, context: Any) -> None:
        from embtune_core.retrieval.lexical import BM25Index

        self._index = BM25Index([d.page_content for d in self.documents])

    @classmethod
    def from_documents(cls, documents: list[Document], *, k: int = 4) -> BM25Retriever:
        return cls(documents=list(documents), k=k)

    def ranked(self, query: str, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, positions)`` of the top ``depth`` documents (ties by position), zero scores included."""
        scores, indices = self._index.search([query], depth)
        return scores[0], indices[0]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun | None = None
                                ) -> list[Document]:
        scores, indices = self.ranked(query, self.k)
        return [self.documents[i] for i, s in zip(indices, scores) if s > 0]


def _store_documents(store: Any) -> list[Document]:
    documents = []
    for position in range(store.index.ntotal):
        doc = store.docstore.search(store.index_to_docstore_id[position])
        documents.append(doc)
    return documents


class HybridRetriever(BaseRetriever):
    """A FAISS store's ranking fused with BM25's over the same documents (module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    store: Any
    bm25: BM25Retriever
    fusion: Fusion = Fusion()
    k: int = 4

    def _dense(self, query: str, depth: int) -> tuple[np.ndarray, np.ndarray]:
        """The store's top ``depth`` as (similarity, index position): inner product as is, L2 distance negated
        (a monotone map, and affine for unit vectors, so min-max fusion is unchanged)."""
        vector = np.asarray([self.store.embeddings.embed_query(query)], dtype=np.float32)
        if getattr(self.store, "_normalize_L2", False):
            vector /= np.linalg.norm(vector, axis=1, keepdims=True)
        scores, positions = self.store.index.search(vector, depth)
        from langchain_community.vectorstores.utils import DistanceStrategy

        similarity = scores[0] if self.store.distance_strategy == DistanceStrategy.MAX_INNER_PRODUCT else -scores[0]
        return similarity, positions[0]

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun | None = None
                                ) -> list[Document]:
        depth = min(self.fusion.depth, len(self.bm25.documents))
        dense_scores, dense_positions = self._dense(query, depth)
        bm25_scores, bm25_positions = self.bm25.ranked(query, depth)
        _, fused = fuse(dense_scores[None], dense_positions[None], bm25_scores[None], bm25_positions[None],
                        self.fusion, top=self.k)
        return [self.bm25.documents[i] for i in fused[0] if i >= 0]


def hybrid_retriever(store: Any, fusion: Fusion | dict | str | None = None, *, k: int = 4) -> HybridRetriever:
    """A :class:`HybridRetriever` over ``store``'s documents; ``fusion``: a Fusion, its JSON
    (``fusion.json``) or spec (``rrf,k=20,weight=0.7``); default the untuned RRF (k = 60, equal weights)."""
    if isinstance(fusion, dict):
        fusion = Fusion.from_json(fusion)
    elif isinstance(fusion, str):
        fusion = Fusion.parse(fusion)
    documents = _store_documents(store)
    return HybridRetriever(store=store, bm25=BM25Retriever(documents=documents, k=k), fusion=fusion or Fusion(), k=k)
