"""LlamaIndex ``BaseEmbedding`` for a fine-tuned model, or for a base model plus a query adapter.

The source guides of embtune's methods (fine-tuning and adapter fine-tuning of embeddings) are
LlamaIndex's; :class:`EmbtuneLlamaIndexEmbedding` drops the result back into LlamaIndex
(``Settings.embed_model = ...``, ``VectorStoreIndex(..., embed_model=...)``). It is a thin
``llama_index.core.embeddings.BaseEmbedding`` over :class:`embtune_integrations.langchain.EmbtuneEmbeddings`,
so both integrations return the same vectors for the same arguments: queries through
``embed_query`` (the adapter, when given, transforms queries only), documents through
``embed_documents`` (the base model's vectors, so an index built with the base model stays valid).
Every argument of ``EmbtuneEmbeddings`` is accepted (``adapter``, ``batch_size``, ``device``,
``normalize``, ``prompts``, encoder options such as ``query_prompt`` or ``backend="onnx"``).

Needs the ``llamaindex`` extra: ``pip install 'embtune[llamaindex]'`` (llama-index-core).

Example::

    from llama_index.core import Settings
    from embtune_integrations.llamaindex import EmbtuneLlamaIndexEmbedding

    Settings.embed_model = EmbtuneLlamaIndexEmbedding("out/model")              # fine-tuned folder
    Settings.embed_model = EmbtuneLlamaIndexEmbedding("sentence-transformers/all-MiniLM-L6-v2",
                                                      adapter="out/adapter")    # base + query adapter
"""

from __future__ import annotations

import os
from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import PrivateAttr

from embtune_core.models import DEFAULT_MODEL

__all__ = ["EmbtuneLlamaIndexEmbedding"]


class EmbtuneLlamaIndexEmbedding(BaseEmbedding):
    """LlamaIndex embedding over an embtune model (see the module docstring).

    Args: as :class:`embtune_integrations.langchain.EmbtuneEmbeddings`; ``embed_batch_size`` is
    LlamaIndex's batch size and is also used as the model's batch size. Vectors are lists of floats
    of length :attr:`dimension`. Raises what ``EmbtuneEmbeddings`` raises (InputError for a missing
    model or a mismatched adapter).
    """

    _inner: Any = PrivateAttr()

    def __init__(self, model: str | os.PathLike | Any = DEFAULT_MODEL, *, adapter: Any = None,
                 embed_batch_size: int = 32, **options: Any):
        from embtune_integrations.langchain import EmbtuneEmbeddings

        inner = EmbtuneEmbeddings(model, adapter=adapter, batch_size=embed_batch_size, **options)
        name = inner.model_name if isinstance(inner.model_name, str) else str(inner.model_name)
        super().__init__(model_name=name, embed_batch_size=embed_batch_size)
        self._inner = inner

    @classmethod
    def class_name(cls) -> str:
        return "EmbtuneLlamaIndexEmbedding"

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    @property
    def identity(self) -> str:
        """The query side's encoder identity (model, settings, adapter fingerprint)."""
        return self._inner.identity

    def _get_query_embedding(self, query: str) -> Embedding:
        return self._inner.embed_query(query)

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._inner.embed_documents([text])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return self._inner.embed_documents(list(texts))

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await self._inner.aembed_query(query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return (await self._inner.aembed_documents([text]))[0]

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await self._inner.aembed_documents(list(texts))
