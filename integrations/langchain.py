"""LangChain ``Embeddings`` for a fine-tuned model, or for a base model plus a query adapter.

:class:`EmbtuneEmbeddings` is a ``langchain_core.embeddings.Embeddings`` built from

* a fine-tuned model directory (what ``embtune train`` writes), or any model name, resolved
  offline through :mod:`embtune_core.encoders.models` (``sentence-transformers/all-MiniLM-L6-v2`` loads
  the packaged copy), or any encoder spec of :mod:`embtune_core.encoders.encoding`
  (``openai:text-embedding-3-small@http://127.0.0.1:8000/v1``); or
* the same plus ``adapter=<adapter directory>``: the trained adapter transforms *query* vectors
  only (``embed_query``), so ``embed_documents`` returns exactly the base model's vectors and a
  vector store already built with the base model stays valid. Loading refuses an adapter trained
  for another base model, or on query vectors computed another way (see below).

**Vectors as the host computes them (the default).** DocsGPT's ``EmbeddingsWrapper`` and
LangChain's ``HuggingFaceEmbeddings`` (default ``encode_kwargs``) both call the model's plain
``encode(texts)``: no prompt but the model's default one, no normalisation of their own (unit
length only when the model ends in a ``Normalize`` module). With the defaults ``normalize=False``
and ``prompts=False``, :meth:`EmbtuneEmbeddings.embed_documents` and, without an adapter,
``embed_query`` return exactly those vectors (float32, equal to ~1e-7), so an index the host built
stays valid. ``normalize=True`` gives unit-length vectors whatever the model; ``prompts=True`` uses
the model's ``"query"``/``"document"`` prompts (``encode_query``/``encode_document``, embtune's
evaluation default): both change the vectors of some models, so an index built by the host then
no longer matches. An adapter is checked against the convention it was trained on (recorded in its
config): train it with ``embtune train-adapter --host-vectors`` for a host that computes vectors
plainly.

Inputs: ``batch_size`` (texts per forward pass), ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``;
default: the model's choice), ``normalize`` and ``prompts`` (above). ``dimension`` is the vector
length (DocsGPT sizes its indexes with it).
``aembed_documents`` / ``aembed_query`` run the model in a worker thread so an event loop keeps
serving while it computes.

Example::

    from embtune_integrations.langchain import EmbtuneEmbeddings

    tuned = EmbtuneEmbeddings("out/model")                       # fine-tuned directory
    adapted = EmbtuneEmbeddings("sentence-transformers/all-MiniLM-L6-v2", adapter="out/adapter")
    vectors = adapted.embed_documents(["Uber's revenue grew 57% in 2021."])   # base model's vectors
    query = adapted.embed_query("How fast did Uber grow?")                     # adapted
    adapted.dimension                                                           # 384
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.embeddings import Embeddings
from langchain_core.runnables.config import run_in_executor

from embtune_core.encoders.encoding import (
    AdaptedEncoder,
    EncoderProtocol,
    encoder_from_spec,
    parse_encoder_spec,
)
from embtune_core.encoders.models import DEFAULT_MODEL
from embtune_core.errors import InputError
from embtune_core.plugins import get_registry

log = logging.getLogger(__name__)

__all__ = ["EmbtuneEmbeddings"]


class EmbtuneEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` over an embtune encoder, optionally with a query adapter.

    Args:
        model: a model directory, a model name (resolved offline first) or an encoder spec; or an
            already built encoder (anything with ``identity``, ``dimension``, ``encode_queries``,
            ``encode_documents``), a loaded ``SentenceTransformer`` or another LangChain
            ``Embeddings`` (e.g. an API model, to put an adapter in front of it).
        adapter: an adapter directory saved by embtune (safetensors + JSON config), or a loaded
            adapter; applied to queries only.
        batch_size: texts per batch.
        device: torch device for a local model (``None``: sentence-transformers picks one).
        normalize: scale every vector to unit length (default False: the model's own output, as
            the host computes it; a model ending in ``Normalize`` gives unit vectors either way).
        prompts: apply the model's query/document prompts (default False: plain ``encode()``,
            as DocsGPT and ``HuggingFaceEmbeddings`` do). Local sentence-transformers models only.
        **encoder_options: further options for the encoder factory (``query_prompt``...);
            ``document_windows="mean"`` reads documents longer than the model's token limit whole
            (one token-weighted mean of window vectors each, :mod:`embtune_core.encoders.long_documents`).

    Raises:
        InputError: a bad ``batch_size``, a missing model or adapter folder, or an adapter trained
            on another encoder or on query vectors computed another way (one line naming which).
        UsageError: ``document_windows="max"`` (several vectors per document: a LangChain
            ``Embeddings`` returns one).
    """

    def __init__(self, model: str | os.PathLike | EncoderProtocol = DEFAULT_MODEL, *,
                 adapter: str | os.PathLike | Any | None = None, batch_size: int = 32,
                 device: str | None = None, normalize: bool = False, prompts: bool = False,
                 **encoder_options: Any):
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}", field="batch_size")
        if encoder_options.get("document_windows") == "max":
            from embtune_core.errors import UsageError

            raise UsageError("'max' keeps several vectors per document and embed_documents returns one; "
                             "use 'mean'", field="document_windows")
        self.batch_size = int(batch_size)
        self.device = device
        self.normalize = bool(normalize)
        self.prompts = bool(prompts)
        # What rebuilds these embeddings in another process (pickle) or as a deep copy: the names and
        # settings they were made from, when they were made from names (see __getstate__).
        self._recipe: tuple[str, dict[str, Any]] | None = None
        if isinstance(model, (str, os.PathLike)) and (adapter is None or isinstance(adapter, (str, os.PathLike))):
            self._recipe = (os.fspath(model), {
                "adapter": os.fspath(adapter) if adapter is not None else None, "batch_size": self.batch_size,
                "device": device, "normalize": self.normalize, "prompts": self.prompts, **encoder_options})
        if isinstance(model, (str, os.PathLike)):
            options: dict[str, Any] = {"batch_size": self.batch_size, "normalize": self.normalize,
                                       **encoder_options}
            if encoder_from_spec_family(os.fspath(model)) == "sentence-transformers":
                options.setdefault("prompts", self.prompts)
            if device is not None:
                options["device"] = device
            self.base_encoder: EncoderProtocol = encoder_from_spec(os.fspath(model), **options)
            self.model_name = os.fspath(model)
        elif hasattr(model, "encode_documents") and hasattr(model, "identity"):
            self.base_encoder = model
            self.model_name = getattr(model, "name", type(model).__name__)
        else:  # a loaded SentenceTransformer, or another LangChain Embeddings object
            family = "langchain" if isinstance(model, Embeddings) else "sentence-transformers"
            options = {"embeddings" if family == "langchain" else "model": model,
                       "batch_size": self.batch_size, "normalize": self.normalize, **encoder_options}
            if family == "sentence-transformers":
                options.setdefault("prompts", self.prompts)
                if device is not None:
                    options["device"] = device
            self.base_encoder = get_registry().create("encoders", family, **options)
            self.model_name = getattr(model, "embtune_model_name", type(model).__name__)
        if not self.prompts:
            stored = _stored_prompts(model)
            if stored:
                # Host-identical vectors by default (HuggingFaceEmbeddings applies no prompt), but a model
                # trained with prompts retrieves best with them: say so rather than drift silently.
                log.warning("%s stores prompts %s that prompts=False does not apply (as HuggingFaceEmbeddings); "
                            "embtune evaluate applied them: pass prompts=True to get the vectors it measured",
                            self.model_name, stored)
        self.adapter_path: str | None = None
        if adapter is None:
            self.encoder: EncoderProtocol = self.base_encoder
        else:
            if isinstance(adapter, (str, os.PathLike)):
                from embtune_core.adapters.adapter_io import load_adapter

                self.adapter_path = os.fspath(adapter)
                adapter = load_adapter(self.adapter_path)  # AdaptedEncoder checks base and width
            self.encoder = AdaptedEncoder(self.base_encoder, adapter)
        # Fast tokenizers raise "Already borrowed" when two threads use one at once; the async
        # methods run in threads, so calls into the model take turns.
        self._lock = threading.Lock()

    # -- pickling and copying ------------------------------------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """Embeddings made from names pickle as those names and settings (plus the identity they had), so
        a worker process (LlamaIndex's ``IngestionPipeline(num_workers=...)``, multiprocessing) loads the
        model itself rather than receiving its weights; others pickle their state, less the lock."""
        if self._recipe is not None:
            return {"recipe": self._recipe, "identity": self.identity}
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild from the recipe (refused in one line when the files now give other vectors), or restore
        the state with a fresh lock."""
        if "recipe" not in state:
            self.__dict__.update(state)
            self._lock = threading.Lock()
            return
        model, options = state["recipe"]
        self.__init__(model, **options)
        if self.identity != state["identity"]:
            raise InputError(f"{self!r} rebuilt here computes other vectors than the copy that was pickled "
                             f"(its model or adapter files changed in between: '{state['identity']}' then, "
                             f"'{self.identity}' now)", field="model")

    def __deepcopy__(self, memo: dict[int, Any]) -> EmbtuneEmbeddings:
        """A deep copy: rebuilt from the recipe (a model of its own), or the state copied without the lock."""
        import copy

        clone = type(self).__new__(type(self))
        memo[id(self)] = clone
        state = self.__getstate__()
        clone.__setstate__(state if "recipe" in state else copy.deepcopy(state, memo))
        return clone

    # -- identity -------------------------------------------------------------------------------
    @property
    def dimension(self) -> int:
        """Length of every vector (of queries and documents alike)."""
        return int(self.encoder.dimension)

    @property
    def identity(self) -> str:
        """The query side's identity: model, settings and adapter fingerprint."""
        return self.encoder.identity

    @property
    def document_identity(self) -> str:
        """What produced the document vectors: the base encoder's identity (an adapter never
        changes documents), so a store indexed with the base model matches an adapted one."""
        return self.base_encoder.identity

    @property
    def document_convention(self) -> dict[str, Any] | None:
        """How document vectors come out (``unit_length``, prompts), where the encoder can say."""
        convention = getattr(self.base_encoder, "convention", None)
        return dict(convention) if isinstance(convention, dict) else None

    @property
    def has_adapter(self) -> bool:
        return self.encoder is not self.base_encoder

    @property
    def adapter(self) -> Any:
        """The query adapter (:class:`~embtune_core.adapters.adapter_io.SavedAdapter`), or None."""
        return getattr(self.encoder, "adapter", None) if self.has_adapter else None

    def check_index(self, metric: str, *, unit_vectors: bool | None, where: str) -> None:
        """Refuse, in one line, to serve an adapter against an index that ranks by another metric than the
        one it was trained for (``"inner_product"`` or ``"l2"``) over vectors that are not unit length
        (:meth:`~embtune_core.adapters.adapter_io.SavedAdapter.check_index`). ``unit_vectors=None``: judged from the
        base model's convention, else from one probe document. Nothing to check without an adapter."""
        adapter = self.adapter
        if adapter is None:
            return
        if unit_vectors is None:
            convention = self.document_convention
            if convention is not None and "unit_length" in convention:
                unit_vectors = bool(convention["unit_length"])
            else:
                probe = np.asarray(self.embed_documents(["embtune unit-length probe"])[0], dtype=np.float32)
                unit_vectors = abs(float(np.linalg.norm(probe)) - 1.0) <= 1e-3
        adapter.check_index(metric, unit_vectors=unit_vectors, where=where)

    # -- LangChain interface --------------------------------------------------------------------
    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Document vectors (the base model's, also when an adapter is set)."""
        texts = _as_texts(texts, "embed_documents")
        if not texts:
            return []
        with self._lock:
            return _to_lists(self.encoder.encode_documents(texts))

    def embed_query(self, text: str) -> list[float]:
        """One query vector, through the adapter when one is set."""
        if not isinstance(text, str):
            raise InputError(f"embed_query expects a string, got {type(text).__name__}", field="text")
        with self._lock:
            return _to_lists(self.encoder.encode_queries([text]))[0]

    def embed_queries(self, texts: Sequence[str]) -> list[list[float]]:
        """Several query vectors in one batched call (not part of LangChain's interface)."""
        texts = _as_texts(texts, "embed_queries")
        if not texts:
            return []
        with self._lock:
            return _to_lists(self.encoder.encode_queries(texts))

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """:meth:`embed_documents` in a worker thread; the event loop keeps running meanwhile."""
        return await run_in_executor(None, self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """:meth:`embed_query` in a worker thread; the event loop keeps running meanwhile."""
        return await run_in_executor(None, self.embed_query, text)

    def __call__(self, text: str | list[str]):
        """``embed_query`` for a string, ``embed_documents`` for a list (DocsGPT's wrappers allow both)."""
        if isinstance(text, str):
            return self.embed_query(text)
        if isinstance(text, list):
            return self.embed_documents(text)
        raise InputError(f"expected a string or a list of strings, got {type(text).__name__}", field="text")

    def __repr__(self) -> str:
        adapter = f", adapter={self.adapter_path!r}" if self.adapter_path else (
            ", adapter=<in memory>" if self.has_adapter else "")
        return f"{type(self).__name__}({self.model_name!r}{adapter})"


def encoder_from_spec_family(spec: str) -> str:
    """The encoder family a spec names (``sentence-transformers``, ``openai``, a plugin's)."""
    return parse_encoder_spec(spec)[0]


def _as_texts(texts: Any, method: str) -> list[str]:
    if isinstance(texts, str):
        raise InputError(f"{method} expects a list of strings, got one string; use embed_query for one text",
                         field="texts")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"{method}: item {i} is {type(text).__name__}, not a string", field="texts")
    return texts


def _to_lists(vectors: np.ndarray) -> list[list[float]]:
    # float32 -> Python floats; LangChain and DocsGPT expect plain lists.
    return np.asarray(vectors, dtype=np.float32).tolist()


def _stored_prompts(model: Any) -> dict[str, str]:
    """The non-empty ``query``/``document`` prompts a model folder (config_sentence_transformers.json) or a
    loaded SentenceTransformer carries; {} when none or unknown (nothing is loaded to find out)."""
    prompts: Any = None
    if isinstance(model, (str, os.PathLike)):
        config = Path(os.fspath(model)) / "config_sentence_transformers.json"
        if config.is_file():
            try:
                prompts = json.loads(config.read_text(encoding="utf-8")).get("prompts")
            except (OSError, ValueError, AttributeError):
                prompts = None
    elif not isinstance(model, Embeddings):
        prompts = getattr(model, "prompts", None)
    if not isinstance(prompts, dict):
        return {}
    return {k: v for k, v in prompts.items() if k in ("query", "document") and isinstance(v, str) and v}
