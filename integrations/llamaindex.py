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

**Pickling, copies, parallel ingestion.** LlamaIndex pickles transformations into worker processes
(``IngestionPipeline(...).run(num_workers=2)``, a ``spawn`` pool) and rebuilds a component there with
``__init__(**fields)``; it drops private attributes that do not pickle. The embedding therefore keeps
what it was made from as fields (``model``, ``adapter``, ``encoder_options``: names, folders and plain
settings, never an API key, which ``encoder_options`` may only name as ``"env:VARIABLE"``), and each
worker loads the model itself; the rebuilt copy must have the identity the original had (the files
did not change in between), else it refuses in one line. ``copy.deepcopy`` rebuilds the same way.
Made from an object in memory (a loaded ``SentenceTransformer``), it pickles that object instead.

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
from pydantic import Field, PrivateAttr

from embtune_core.encoders.models import DEFAULT_MODEL

__all__ = ["EmbtuneLlamaIndexEmbedding"]


class EmbtuneLlamaIndexEmbedding(BaseEmbedding):
    """LlamaIndex embedding over an embtune model (see the module docstring).

    Args: as :class:`embtune_integrations.langchain.EmbtuneEmbeddings`; ``embed_batch_size`` is
    LlamaIndex's batch size and is also used as the model's batch size; other keyword arguments that
    are not LlamaIndex's own fields (``device``, ``normalize``, ``prompts``, ``query_prompt``...) go to
    the model (or pass them as ``encoder_options={...}``). Vectors are lists of floats of length
    :attr:`dimension`. Raises what ``EmbtuneEmbeddings`` raises (InputError for a missing model or a
    mismatched adapter).
    """

    model: str | None = Field(default=None, description="model folder, name or encoder spec (None: an object "
                                                        "passed in memory)")
    adapter: str | None = Field(default=None, description="query adapter folder, if any")
    encoder_options: dict[str, Any] = Field(default_factory=dict,
                                            description="further options of EmbtuneEmbeddings (plain values)")
    # What the vectors depend on (model files, settings, adapter weights), not only where they lie: part
    # of the fields, so LlamaIndex's ingestion cache (keyed on to_dict()) misses when a folder is retrained.
    identity: str = Field(default="", description="encoder identity (content fingerprints); computed, not set")
    _inner: Any = PrivateAttr()

    def __init__(self, model: str | os.PathLike | Any = DEFAULT_MODEL, *, adapter: Any = None,
                 embed_batch_size: int = 32, encoder_options: dict[str, Any] | None = None, **kwargs: Any):
        from embtune_core.errors import InputError
        from embtune_integrations.langchain import EmbtuneEmbeddings

        # LlamaIndex rebuilds a component with __init__(**fields): its own fields go to BaseEmbedding,
        # the rest are the model's options.
        own = {key: kwargs.pop(key) for key in list(kwargs) if key in BaseEmbedding.model_fields}
        kwargs.pop("identity", None)  # recomputed from the files below
        options = {**(encoder_options or {}), **kwargs}
        if model is None:
            raise InputError("no model: pass a model folder, name or encoder spec", field="model")
        inner = EmbtuneEmbeddings(model, adapter=adapter, batch_size=embed_batch_size, **options)
        named = isinstance(model, (str, os.PathLike)) and (adapter is None or isinstance(adapter, (str, os.PathLike)))
        own.setdefault("model_name", inner.model_name if isinstance(inner.model_name, str) else str(inner.model_name))
        super().__init__(embed_batch_size=embed_batch_size, model=os.fspath(model) if named else None,
                         adapter=os.fspath(adapter) if named and adapter is not None else None,
                         encoder_options=options if named else {}, identity=inner.identity, **own)
        self._inner = inner

    @classmethod
    def class_name(cls) -> str:
        return "EmbtuneLlamaIndexEmbedding"

    def __getstate__(self) -> dict[str, Any]:
        """LlamaIndex's state, where the model travels as its fields only (the worker loads it) with the
        identity it had; made from an object in memory, the object itself."""
        state = super().__getstate__()
        if self.model is not None:
            state["__pydantic_private__"] = {"_inner": None}
            state["embtune_identity"] = self.identity
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuilt from the fields, as LlamaIndex does, but a failure is an error (LlamaIndex would fall back
        to an object without its model) and so is a model whose files changed since pickling."""
        from embtune_core.errors import InputError

        identity = state.get("embtune_identity")
        if identity is None:
            super().__setstate__(state)
            return
        self.__init__(**state["__dict__"])
        if self._inner.identity != identity:
            raise InputError(f"{self.model}: rebuilt in this process, the embeddings compute other vectors than the "
                             f"pickled ones (model or adapter files changed: '{identity}' then, "
                             f"'{self._inner.identity}' now)", field="model")

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> EmbtuneLlamaIndexEmbedding:
        """A copy with a model of its own: rebuilt from the fields, or (made from an object) its state copied."""
        import copy

        if self.model is None:
            clone = type(self).__new__(type(self))
            memo = {} if memo is None else memo
            memo[id(self)] = clone
            object.__setattr__(clone, "__dict__", copy.deepcopy(self.__dict__, memo))
            object.__setattr__(clone, "__pydantic_fields_set__", set(self.__pydantic_fields_set__))
            object.__setattr__(clone, "__pydantic_extra__", copy.deepcopy(self.__pydantic_extra__, memo))
            object.__setattr__(clone, "__pydantic_private__", copy.deepcopy(self.__pydantic_private__, memo))
            return clone
        fields = {name: getattr(self, name) for name in type(self).model_fields
                  if name not in ("callback_manager", "identity")}
        clone = type(self)(**copy.deepcopy(fields, memo))
        clone.callback_manager = self.callback_manager
        return clone

    @property
    def dimension(self) -> int:
        return self._inner.dimension

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
