"""embtune integrations (import name ``embtune_integrations``): LangChain, FAISS and DocsGPT shims.

* :mod:`embtune_integrations.langchain` -- ``EmbtuneEmbeddings``, a LangChain ``Embeddings`` for a
  fine-tuned model directory, or a base model plus a query adapter (queries only).
* :mod:`embtune_integrations.faiss_store` -- build, save (no pickle) and load LangChain FAISS stores,
  on the GPU when a GPU FAISS build is present; retrievers.
* :mod:`embtune_integrations.multi_vector` -- ``window_retriever``: long documents indexed as windows and
  returned whole by their best window (MaxP), LangChain's ``MultiVectorRetriever`` over an embtune store.
* :mod:`embtune_integrations.docsgpt` -- ``embtune:<dir>`` embeddings names for DocsGPT, installed at
  start-up (``python -m embtune_integrations.docsgpt install-hook``).

Submodules import their heavy dependencies themselves; importing this package costs nothing.
"""
