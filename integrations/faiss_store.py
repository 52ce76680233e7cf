"""Build, save and load LangChain FAISS vector stores without pickle; GPU FAISS when present.

LangChain's ``FAISS`` (``langchain_community.vectorstores.FAISS``) keeps its docstore in a pickle
(``index.pkl``) and has no GPU handling. This module wraps it:

* :func:`build_faiss_store` embeds documents in blocks (with a progress bar) into a ``FAISS``
  store. The index lives on the GPU when a GPU build of FAISS and a GPU are present
  (``use_gpu=None`` decides with :func:`embtune_core.retrieval.search.gpu_available`), else on the CPU.
* :func:`save_faiss_store` writes a folder, atomically (all files or none):
  ``index.faiss`` (``faiss.write_index`` of a CPU copy: a GPU index is copied back to the CPU
  first), ``docstore.json`` (``id``, ``page_content``, ``metadata`` per vector, in index order)
  and ``manifest.json`` (format, embedding identity, dimension, distance strategy, checksums).
* :func:`load_faiss_store` reads that folder back and never unpickles anything. It refuses
  embeddings whose document vectors differ from those the store was built with, so a store built
  with the base model loads with base + adapter embeddings (the adapter changes queries only) but
  not with an unrelated model.
* :func:`as_retriever` returns the LangChain retriever.

Embeddings checked by what they return
--------------------------------------
The checks work for any LangChain ``Embeddings`` (``HuggingFaceEmbeddings``, ``FakeEmbeddings``, a
user's own subclass), not only embtune's, because they look at vectors, not attributes. When a store
is loaded (embtune's format or, with the opt-in, a LangChain pickle store):

* **width**: one probe text goes through ``embed_query``; a vector of another width than the index's
  is refused in one line (faiss itself would fail at the first search with a bare ``AssertionError``);
* **identity**: the store's first document goes through ``embed_documents`` and must come back as the
  vector stored for it (relative difference at most :data:`SAME_VECTOR_TOLERANCE`; after LangChain's
  ``normalize_L2`` when the store applies it), so a same-width but different model, or the same
  model with other normalisation, prompts or token limit, is refused in one line. Where the index
  cannot give a vector back (IVF-PQ and other compressed indexes) this is said in one line and only
  the width is checked. ``check_embeddings=False`` skips the identity check, never the width check.
  Where embtune's manifest records the encoder identity, that is compared too.

and when it is searched, every query vector's width is checked before FAISS sees it (one line,
:class:`~embtune_core.errors.InputError`), whatever embeddings the store holds by then.

Relevance scores
----------------
LangChain turns FAISS's raw scores into relevance with ``1 - score`` for inner product, which
inverts the order for cosine scores (a chunk at cosine 0.86 gets relevance 0.14; langchain
#14948), and ``1 - distance / sqrt(2)`` for FAISS's *squared* L2 distance, which leaves [0, 1].
Every store this module builds or loads therefore carries its own ``relevance_score_fn``:

==================  =======================================  =========================================
index               unit-length vectors                      other vectors
==================  =======================================  =========================================
inner product       ``clip(score, 0, 1)`` (the cosine)       ``(1 + s / (1 + |s|)) / 2``
L2 (squared)        ``clip(1 - d / 2, 0, 1)`` (the cosine)   ``1 / (1 + d)`` (DocsGPT's own mapping)
==================  =======================================  =========================================

so relevance rises with similarity and lies in [0, 1], and a ``similarity_score_threshold``
retriever's threshold is a cosine for unit-length vectors. Whether vectors are unit length is
measured on the vectors themselves when the store is built (recorded in the manifest) or loaded.
Stores are :class:`EmbtuneFAISS`, a LangChain ``FAISS`` that also refuses vectors of the wrong
width in one line (``k``, ``filter``, ``fetch_k`` and MMR are LangChain's own) and keeps LangChain's
``VectorStore`` contract where ``FAISS`` does not (``langchain-tests``' standard suite,
``tests/test_standard_suites.py``): adding a document whose id the store holds replaces it, deleting
ids it does not hold is no error, and the async ``aadd_texts`` goes through the same checks.

Pickle and ``allow_dangerous_deserialization``
-----------------------------------------------
A folder saved by LangChain's own ``FAISS.save_local`` holds ``index.pkl``; unpickling a file runs
whatever code its author put in it. LangChain therefore refuses to load it unless the caller passes
``allow_dangerous_deserialization=True``, which is safe only for files you made yourself and that
nobody else could have modified (not for stores downloaded or shared on a writable volume). Many
apps, DocsGPT included, set that flag unconditionally, which turns write access to the index folder
into code execution in the app. Our format needs no such trust: JSON and a FAISS index file carry
data only. :func:`load_faiss_store` loads a LangChain pickle store only with the same explicit
opt-in (and says so in a one-line error otherwise); load it once with the flag and save it with
:func:`save_faiss_store` to convert it.

GPU notes: a GPU flat index returns at most 2048 neighbours per query (FAISS's GPU limit), and
removing vectors needs ``remove_ids``, which GPU indexes lack: ``delete`` (and an add that replaces an
id) moves the index to the CPU and back.

Example::

    from embtune_integrations.faiss_store import as_retriever, build_faiss_store, load_faiss_store, save_faiss_store
    from embtune_integrations.langchain import EmbtuneEmbeddings

    embeddings = EmbtuneEmbeddings("out/model")
    store = build_faiss_store(["first chunk", "second chunk"], embeddings)
    save_faiss_store(store, "out/index")
    retriever = as_retriever(load_faiss_store("out/index", embeddings), k=4)
    retriever.invoke("what does the first chunk say?")
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from embtune_core.encoders.embedding_cache import file_checksum
from embtune_core.encoders.encoding import same_vectors
from embtune_core.errors import InputError
from embtune_core.runtime import atomic
from embtune_core.runtime.progress import progress

log = logging.getLogger(__name__)

__all__ = [
    "FORMAT",
    "MANIFEST",
    "as_retriever",
    "build_faiss_store",
    "check_store_embeddings",
    "embedding_width",
    "is_on_gpu",
    "load_faiss_store",
    "relevance_function",
    "save_faiss_store",
    "store_class",
    "to_cpu",
    "to_gpu",
]

FORMAT = "embtune-langchain-faiss"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
DOCSTORE_FILE = "docstore.json"
TUNED_SIDECAR = "embtune-tuned.json"  # beside a LangChain store's index.faiss: ids an index tuning moved
EMBED_BLOCK = 8192  # texts per embed_documents call: bounds memory and drives the progress bar
PROBE_TEXT = "embtune width probe"  # embedded once through embed_query to learn any Embeddings' width
# Largest relative L2 difference between a stored document vector and the same text embedded again
# that still counts as "the same embeddings": float32 batching and CPU/GPU kernels differ by ~1e-6 to
# 1e-3; another model, normalisation, prompt or token limit by more.
SAME_VECTOR_TOLERANCE = 1e-2

_STRATEGIES = {"max_inner_product": "MAX_INNER_PRODUCT", "inner_product": "MAX_INNER_PRODUCT",
               "ip": "MAX_INNER_PRODUCT", "cosine": "MAX_INNER_PRODUCT",
               "euclidean": "EUCLIDEAN_DISTANCE", "euclidean_distance": "EUCLIDEAN_DISTANCE", "l2": "EUCLIDEAN_DISTANCE"}


def _faiss():
    try:
        import faiss
    except ImportError:
        raise InputError("FAISS is not installed; install embtune[cpu] (faiss-cpu) or embtune[gpu] "
                         "(faiss-gpu-cu12)") from None
    return faiss


def _distance_strategy(value: Any):
    from langchain_community.vectorstores.utils import DistanceStrategy

    if isinstance(value, DistanceStrategy):
        key = value.value
    else:
        key = _STRATEGIES.get(str(value).lower(), str(value).upper())
    if key not in ("MAX_INNER_PRODUCT", "EUCLIDEAN_DISTANCE"):
        raise InputError(f"distance strategy '{value}' is not supported by LangChain's FAISS index; "
                         "use 'max_inner_product' (cosine for unit vectors) or 'euclidean'",
                         field="distance_strategy")
    return DistanceStrategy(key)


# --- relevance ------------------------------------------------------------------------------------
UNIT_TOLERANCE = 1e-3  # |norm - 1| under which a vector counts as unit length (float32 models drift ~1e-6)


def cosine_relevance_from_ip(score: float) -> float:
    """Relevance of an inner-product score between unit vectors: the cosine, clipped to [0, 1]."""
    return min(1.0, max(0.0, float(score)))


def cosine_relevance_from_l2(distance: float) -> float:
    """Relevance of FAISS's squared L2 distance between unit vectors: ``d = 2 - 2 cos``, so the
    cosine ``1 - d / 2``, clipped to [0, 1]."""
    return min(1.0, max(0.0, 1.0 - float(distance) / 2.0))


def squashed_ip_relevance(score: float) -> float:
    """Relevance of an inner product of vectors of any length: strictly increasing, in (0, 1)."""
    score = float(score)
    return 0.5 * (1.0 + score / (1.0 + abs(score)))


def inverse_l2_relevance(distance: float) -> float:
    """Relevance of a squared L2 distance of vectors of any length: ``1 / (1 + d)``, in (0, 1]."""
    return 1.0 / (1.0 + max(0.0, float(distance)))


def relevance_function(strategy: Any, unit_vectors: bool):
    """The relevance function for a distance strategy (see the module docstring)."""
    inner = _distance_strategy(strategy).value == "MAX_INNER_PRODUCT"
    if unit_vectors:
        return cosine_relevance_from_ip if inner else cosine_relevance_from_l2
    return squashed_ip_relevance if inner else inverse_l2_relevance


def _all_unit(vectors: Any) -> bool:
    import numpy as np

    array = np.asarray(vectors, dtype=np.float32)
    if array.size == 0:
        return True
    return bool(np.all(np.abs(np.linalg.norm(array, axis=1) - 1.0) <= UNIT_TOLERANCE))


def _index_is_unit(index) -> bool:
    """Whether a flat index holds unit vectors (its first 100k are read; other index types: no)."""
    count = min(int(index.ntotal), 100_000)
    try:
        return _all_unit(index.reconstruct_n(0, count)) if count else True
    except RuntimeError:  # an index type that cannot reconstruct: assume arbitrary lengths
        return False


def _store_class():
    from langchain_community.vectorstores import FAISS

    class EmbtuneFAISS(FAISS):
        """LangChain's ``FAISS`` with a relevance function that fits its vectors and a width check.

        The relevance function is chosen again when vectors of another kind (unit length or
        not) are added, so scores stay in [0, 1] and ordered whatever is added later."""

        embtune_unit_vectors: bool = True

        def _check_width(self, vectors: list) -> None:
            widths = {len(v) for v in vectors}
            if widths and widths != {self.index.d}:
                width = next(iter(widths - {self.index.d}))
                raise InputError(f"the embeddings returned {width}-dimensional document vectors but the index "
                                 f"holds {self.index.d}-dimensional ones; use the embeddings the store was built "
                                 "with", field="embeddings")

        def _check_query(self, embedding) -> None:
            """Refuse a query vector FAISS would meet with a bare AssertionError (any embeddings)."""
            width = len(embedding) if hasattr(embedding, "__len__") else None
            if width != self.index.d:
                owner = type(self.embeddings).__name__ if self.embeddings is not None else "the caller"
                raise InputError(f"{owner} returned a query vector of {width} dimensions but the index holds "
                                 f"{self.index.d}-dimensional ones; search with the embeddings the store was built "
                                 "with", field="embeddings")

        def similarity_search_with_score_by_vector(self, embedding, k=4, filter=None, fetch_k=20, **kwargs):
            self._check_query(embedding)
            return super().similarity_search_with_score_by_vector(embedding, k=k, filter=filter, fetch_k=fetch_k,
                                                                  **kwargs)

        def max_marginal_relevance_search_with_score_by_vector(self, embedding, *, k=4, fetch_k=20,
                                                               lambda_mult=0.5, filter=None):
            self._check_query(embedding)
            return super().max_marginal_relevance_search_with_score_by_vector(
                embedding, k=k, fetch_k=fetch_k, lambda_mult=lambda_mult, filter=filter)

        def _note(self, vectors: list) -> None:
            unit = self.embtune_unit_vectors and _all_unit(vectors)
            if unit != self.embtune_unit_vectors or self.override_relevance_score_fn is None:
                self.embtune_unit_vectors = unit
                self.override_relevance_score_fn = relevance_function(self.distance_strategy, unit)

        def add_embeddings(self, text_embeddings, metadatas=None, ids=None, **kwargs):
            pairs = list(text_embeddings)
            vectors = [list(v) for _, v in pairs]
            self._check_width(vectors)
            if ids:  # LangChain's VectorStore contract: adding an id that exists replaces it (an upsert)
                existing = set(self.index_to_docstore_id.values()).intersection(ids)
                if existing and len(set(ids)) == len(list(ids)):
                    self.delete([i for i in ids if i in existing])
            self._note(vectors)
            return super().add_embeddings(pairs, metadatas=metadatas, ids=ids, **kwargs)

        def add_texts(self, texts, metadatas=None, ids=None, **kwargs):
            texts = list(texts)
            vectors = self._embed_documents(texts)
            return self.add_embeddings(zip(texts, vectors), metadatas=metadatas, ids=ids, **kwargs)

        async def aadd_texts(self, texts, metadatas=None, ids=None, **kwargs):
            # LangChain's FAISS adds directly here, past the checks of add_embeddings.
            texts = list(texts)
            vectors = await self._aembed_documents(texts)
            return self.add_embeddings(zip(texts, vectors), metadatas=metadatas, ids=ids, **kwargs)

        def delete(self, ids=None, **kwargs):
            """Delete by id; ids the store does not hold are no error (LangChain's VectorStore contract).
            A GPU index, which cannot remove vectors, is moved to the CPU and back."""
            if ids is None:
                raise ValueError("No ids provided to delete.")
            held = set(self.index_to_docstore_id.values())
            present = list(dict.fromkeys(i for i in ids if i in held))
            if not present:
                return True
            on_gpu = is_on_gpu(self)
            if on_gpu:
                to_cpu(self)
            try:
                return super().delete(present, **kwargs)
            finally:
                if on_gpu:
                    to_gpu(self)

    return EmbtuneFAISS


_STORE_CLASS = None


def store_class():
    """:class:`EmbtuneFAISS` (built on first use: LangChain is imported only then)."""
    global _STORE_CLASS
    if _STORE_CLASS is None:
        _STORE_CLASS = _store_class()
    return _STORE_CLASS


def _make_store(embeddings, index, docstore, index_to_id, strategy, *, unit: bool, normalize_L2: bool = False):
    store = store_class()(embeddings, index, docstore, index_to_id, distance_strategy=strategy,
                          normalize_L2=normalize_L2, relevance_score_fn=relevance_function(strategy, unit))
    store.embtune_unit_vectors = unit
    return store


# --- GPU ------------------------------------------------------------------------------------------
def is_on_gpu(store) -> bool:
    """True when the store's FAISS index lives on a GPU."""
    faiss = _faiss()
    return hasattr(faiss, "GpuIndex") and isinstance(store.index, faiss.GpuIndex)


def to_gpu(store, device: int = 0) -> bool:
    """Move the store's index to GPU ``device`` when a GPU FAISS build and a GPU are present.

    Returns True when the index is on a GPU afterwards. LangChain's FAISS calls ``index.search``
    and ``index.add`` only, which GPU indexes provide, so the store works unchanged.
    """
    from embtune_core.retrieval.search import gpu_available, gpu_resources

    if is_on_gpu(store):
        return True
    if not gpu_available():
        return False
    # One StandardGpuResources per process (shared with embtune_core.retrieval.search): each holds GPU scratch memory.
    store.index = _faiss().index_cpu_to_gpu(gpu_resources(), device, store.index)
    return True


def to_cpu(store) -> None:
    """Move the store's index back to the CPU (needed for ``delete`` and done before saving)."""
    if is_on_gpu(store):
        store.index = _faiss().index_gpu_to_cpu(store.index)


def _cpu_index(store):
    return _faiss().index_gpu_to_cpu(store.index) if is_on_gpu(store) else store.index


# --- build ----------------------------------------------------------------------------------------
def build_faiss_store(documents: Sequence[Document | str], embeddings: Embeddings, *,
                      metadatas: Sequence[dict] | None = None, ids: Sequence[str] | None = None,
                      distance_strategy: Any = None, use_gpu: bool | None = None,
                      block_size: int = EMBED_BLOCK):
    """A LangChain ``FAISS`` store of ``documents`` (LangChain Documents or plain strings).

    ``distance_strategy``: ``"max_inner_product"`` (cosine similarity for unit vectors, which
    :class:`~embtune_integrations.langchain.EmbtuneEmbeddings` gives by default) or ``"euclidean"``;
    None (default): the metric a query adapter of ``embeddings`` was trained for (``l2``: euclidean),
    else ``"max_inner_product"``. An adapter trained for the other metric is refused in one line when
    the vectors are not unit length. ``ids`` default to each Document's ``id``, else a random UUID.
    ``use_gpu``: None = GPU when available, True = GPU (refused when none), False = CPU.
    """
    from langchain_community.docstore.in_memory import InMemoryDocstore

    faiss = _faiss()
    if distance_strategy is None:
        adapter = getattr(embeddings, "adapter", None)
        distance_strategy = ("euclidean" if getattr(getattr(adapter, "config", None), "index_metric", None) == "l2"
                             else "max_inner_product")
    strategy = _distance_strategy(distance_strategy)
    texts, metas, doc_ids = _unpack(documents, metadatas, ids)
    dimension = embedding_width(embeddings)
    index = faiss.IndexFlatIP(int(dimension)) if strategy.value == "MAX_INNER_PRODUCT" else \
        faiss.IndexFlatL2(int(dimension))
    store = _make_store(embeddings, index, InMemoryDocstore(), {}, strategy, unit=True)
    _place(store, use_gpu)
    step = max(1, int(block_size))
    with progress(total=len(texts), desc="embedding documents", unit="doc") as bar:
        for start in range(0, len(texts), step):
            block = texts[start:start + step]
            vectors = embeddings.embed_documents(block)
            if vectors and len(vectors[0]) != dimension:
                raise InputError(f"the embeddings returned {len(vectors[0])}-dimensional vectors, "
                                 f"expected {dimension}", field="embeddings")
            store.add_embeddings(zip(block, vectors), metadatas=metas[start:start + step],
                                 ids=doc_ids[start:start + step])
            bar.update(len(block))
    check_adapter_metric(store, embeddings, where="this store")
    return store


def check_adapter_metric(store, embeddings: Any, *, where: str) -> None:
    """Refuse a query adapter trained for another metric than the store's, where it matters (vectors that
    are not unit length): :meth:`~embtune_integrations.langchain.EmbtuneEmbeddings.check_index`."""
    check = getattr(embeddings, "check_index", None)
    if check is None:
        return
    metric = "l2" if _distance_strategy(store.distance_strategy).value == "EUCLIDEAN_DISTANCE" else "inner_product"
    # LangChain's normalize_L2 scales queries and documents alike: then both metrics rank as cosine.
    unit = bool(getattr(store, "_normalize_L2", False)) or bool(getattr(store, "embtune_unit_vectors", False))
    check(metric, unit_vectors=unit, where=where)


def _unpack(documents, metadatas, ids) -> tuple[list[str], list[dict], list[str]]:
    if isinstance(documents, (str, Document)):
        documents = [documents]
    documents = list(documents)
    if metadatas is not None and len(metadatas) != len(documents):
        raise InputError(f"{len(metadatas)} metadatas for {len(documents)} documents", field="metadatas")
    if ids is not None and len(ids) != len(documents):
        raise InputError(f"{len(ids)} ids for {len(documents)} documents", field="ids")
    texts, metas, doc_ids = [], [], []
    for i, doc in enumerate(documents):
        if isinstance(doc, Document):
            texts.append(doc.page_content)
            metas.append(dict(doc.metadata))
            doc_ids.append(doc.id)
        elif isinstance(doc, str):
            texts.append(doc)
            metas.append({})
            doc_ids.append(None)
        else:
            raise InputError(f"document {i} is a {type(doc).__name__}, expected a LangChain Document or a string",
                             field="documents")
        if metadatas is not None:
            metas[-1] = {**metas[-1], **dict(metadatas[i])}
        if ids is not None:
            doc_ids[-1] = ids[i]
    doc_ids = [str(d) if d is not None else str(uuid.uuid4()) for d in doc_ids]
    if len(set(doc_ids)) != len(doc_ids):
        seen: set[str] = set()
        duplicate = next(d for d in doc_ids if d in seen or seen.add(d))
        raise InputError(f"document id '{duplicate}' occurs more than once", field="ids")
    return texts, metas, doc_ids


def _place(store, use_gpu: bool | None) -> None:
    if use_gpu is False:
        return
    moved = to_gpu(store)
    if use_gpu and not moved:
        raise InputError("use_gpu=True but no GPU build of FAISS with a visible GPU is installed", field="use_gpu")


def as_retriever(store, k: int = 4, *, search_type: str = "similarity", **search_kwargs: Any):
    """The store as a LangChain retriever returning the top ``k`` documents per question."""
    return store.as_retriever(search_type=search_type, search_kwargs={"k": int(k), **search_kwargs})


# --- save -----------------------------------------------------------------------------------------
def _embedding_record(embeddings: Any, dimension: int) -> dict[str, Any]:
    cls = type(embeddings)
    record: dict[str, Any] = {"class": f"{cls.__module__}.{cls.__qualname__}", "dimension": dimension}
    for attribute in ("document_identity", "identity"):
        value = getattr(embeddings, attribute, None)
        if isinstance(value, str):
            record[attribute] = value
    convention = getattr(embeddings, "document_convention", None)
    if isinstance(convention, dict):
        record["document_convention"] = convention
    return record


def _json_default(doc_id: str):
    def default(value: Any) -> Any:
        raise InputError(f"document '{doc_id}': metadata value of type {type(value).__name__} cannot be saved "
                         "as JSON; store strings, numbers, booleans, lists or dicts", field="metadata")
    return default


def save_faiss_store(store, folder: str | Path) -> Path:
    """Write ``store`` to ``folder`` (see the module docstring), atomically; returns the folder.

    ``folder`` is replaced as a whole; an existing folder that is not a vector store is refused
    rather than overwritten.
    """
    faiss = _faiss()
    folder = Path(folder)
    _refuse_foreign_folder(folder)
    index = _cpu_index(store)
    count = int(index.ntotal)
    if len(store.index_to_docstore_id) != count:
        raise InputError(f"store is inconsistent: {count} vectors but {len(store.index_to_docstore_id)} "
                         "docstore ids", path=folder)
    records = []
    for position in range(count):
        doc_id = store.index_to_docstore_id[position]
        doc = store.docstore.search(doc_id)
        if not isinstance(doc, Document):
            raise InputError(f"vector {position} points to document '{doc_id}', which the docstore lacks", path=folder)
        records.append({"id": str(doc_id), "page_content": doc.page_content, "metadata": doc.metadata})
    with atomic.atomic_directory(folder) as staging:
        faiss.write_index(index, str(staging / INDEX_FILE))
        with open(staging / DOCSTORE_FILE, "w", encoding="utf-8") as handle:
            handle.write('{"documents": [\n')
            for i, record in enumerate(records):
                if i:
                    handle.write(",\n")
                json.dump(record, handle, ensure_ascii=False, default=_json_default(record["id"]))
            handle.write("\n]}\n")
        manifest = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "count": count,
            "dimension": int(index.d),
            "distance_strategy": store.distance_strategy.value if hasattr(store.distance_strategy, "value")
            else str(store.distance_strategy),
            "normalize_L2": bool(getattr(store, "_normalize_L2", False)),
            # Measured on the stored vectors: picks the relevance function when the store is loaded.
            "unit_vectors": _index_is_unit(index),
            "faiss_index": type(index).__name__,
            "embeddings": _embedding_record(store.embeddings, int(index.d)),
            # documents whose stored vector an index tuning moved (embtune_integrations.tuned_index): the
            # identity check on load embeds one it did not move
            **({"tuned_document_ids": sorted(store.embtune_moved_ids)} if getattr(store, "embtune_moved_ids", None)
               else {}),
            "files": {INDEX_FILE: file_checksum(staging / INDEX_FILE), DOCSTORE_FILE: file_checksum(staging / DOCSTORE_FILE)},
        }
        atomic.write_json(staging / MANIFEST, manifest)
    return folder


def _refuse_foreign_folder(folder: Path) -> None:
    if not folder.exists():
        return
    if not folder.is_dir():
        raise InputError("exists and is not a folder; choose a new path for the vector store", path=folder)
    if any(folder.iterdir()) and not ((folder / MANIFEST).is_file() or (folder / "index.faiss").is_file()):
        raise InputError("is a non-empty folder that holds no vector store; refusing to replace it", path=folder)


# --- load -----------------------------------------------------------------------------------------
def load_faiss_store(folder: str | Path, embeddings: Embeddings, *, allow_dangerous_deserialization: bool = False,
                     use_gpu: bool | None = None, check_embeddings: bool = True, index_name: str = "index"):
    """Load a store saved by :func:`save_faiss_store` (no pickle), or opt in to a LangChain pickle store.

    ``embeddings`` embed the questions; with ``check_embeddings`` (default) they must produce the
    same document vectors as those the store was built with (identity and dimension from the
    manifest). ``allow_dangerous_deserialization=True`` is needed, and honoured, only for folders
    saved by LangChain's ``FAISS.save_local`` (``index.pkl``); see the module docstring.
    ``use_gpu`` as in :func:`build_faiss_store`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("vector store folder not found", path=folder)
    if (folder / MANIFEST).is_file():
        store = _load_ours(folder, embeddings, check_embeddings)
    elif (folder / f"{index_name}.pkl").is_file():
        if not allow_dangerous_deserialization:
            raise InputError(f"{index_name}.pkl is a LangChain pickle store and unpickling can run arbitrary code; "
                             "pass allow_dangerous_deserialization=True only if you made it and nobody else "
                             "could modify it (then re-save it with save_faiss_store to drop the pickle)",
                             path=folder)
        from langchain_community.vectorstores import FAISS

        loaded = FAISS.load_local(str(folder), embeddings, index_name=index_name,
                                  allow_dangerous_deserialization=True)
        # index.pkl records no distance strategy (LangChain then assumes L2); the index knows its metric.
        faiss = _faiss()
        strategy = _distance_strategy("max_inner_product" if loaded.index.metric_type == faiss.METRIC_INNER_PRODUCT
                                      else "euclidean")
        store = _make_store(embeddings, loaded.index, loaded.docstore, loaded.index_to_docstore_id, strategy,
                            unit=_index_is_unit(loaded.index), normalize_L2=bool(loaded._normalize_L2))
        sidecar = folder / f"{index_name}.{TUNED_SIDECAR}"
        if sidecar.is_file():  # written beside a tuned LangChain store (the pickle itself is never rewritten)
            store.embtune_moved_ids = set(_read_json(sidecar).get("tuned_document_ids") or ())
        check_store_embeddings(store, embeddings, path=folder / f"{index_name}.faiss", identity=check_embeddings)
        check_adapter_metric(store, embeddings, where=f"the store {folder}")
    else:
        raise InputError(f"no {MANIFEST} (embtune store) nor {index_name}.pkl (LangChain store) in this folder",
                         path=folder)
    _place(store, use_gpu)
    return store


def _read_json(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise InputError(f"invalid JSON at line {exc.lineno}: {exc.msg}", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None


def _load_ours(folder: Path, embeddings: Embeddings, check_embeddings: bool):
    from langchain_community.docstore.in_memory import InMemoryDocstore

    faiss = _faiss()
    manifest_path = folder / MANIFEST
    manifest = _read_json(manifest_path)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise InputError(f"not an embtune vector store manifest (format is not '{FORMAT}')", path=manifest_path)
    if int(manifest.get("version", 0)) > FORMAT_VERSION:
        raise InputError(f"store format version {manifest.get('version')} is newer than this embtune reads "
                         f"({FORMAT_VERSION}); upgrade embtune", path=manifest_path, field="version")
    files = manifest.get("files") or {}
    if not isinstance(files, dict):
        raise InputError("'files' must map file names to checksums", path=manifest_path, field="files")
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            raise InputError("missing file of the vector store", path=path)
        if file_checksum(path) != expected:
            raise InputError("checksum differs from the manifest (file changed or truncated after saving)", path=path)
    index = faiss.read_index(str(folder / INDEX_FILE))
    docstore_path = folder / DOCSTORE_FILE
    data = _read_json(docstore_path)
    records = data.get("documents") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise InputError("expected an object with a 'documents' list", path=docstore_path)
    if len(records) != index.ntotal:
        raise InputError(f"{len(records)} documents for {index.ntotal} vectors in {INDEX_FILE}", path=docstore_path)
    documents: dict[str, Document] = {}
    index_to_id: dict[int, str] = {}
    for position, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("id"), str) \
                or not isinstance(record.get("page_content"), str) or not isinstance(record.get("metadata", {}), dict):
            raise InputError(f"document {position}: expected id and page_content strings and a metadata object",
                             path=docstore_path)
        doc_id = record["id"]
        if doc_id in documents:
            raise InputError(f"document id '{doc_id}' occurs more than once", path=docstore_path)
        documents[doc_id] = Document(id=doc_id, page_content=record["page_content"],
                                     metadata=record.get("metadata", {}))
        index_to_id[position] = doc_id
    record = manifest.get("embeddings") or {}
    if check_embeddings:
        stored = record.get("document_identity")
        current = getattr(embeddings, "document_identity", None)
        if isinstance(stored, str) and isinstance(current, str) and stored != current and not same_vectors(
                stored, record.get("document_convention"), current, getattr(embeddings, "document_convention", None)):
            raise InputError(f"the store was indexed with '{stored}' but these embeddings make document vectors "
                             f"with '{current}'; use the model the store was built with (an adapter on top of it "
                             "is fine) or pass check_embeddings=False", path=manifest_path)
    unit = manifest.get("unit_vectors")
    store = _make_store(embeddings, index, InMemoryDocstore(documents), index_to_id,
                        _distance_strategy(manifest.get("distance_strategy", "MAX_INNER_PRODUCT")),
                        unit=bool(unit) if isinstance(unit, bool) else _index_is_unit(index),
                        normalize_L2=bool(manifest.get("normalize_L2", False)))
    store.embtune_moved_ids = set(manifest.get("tuned_document_ids") or ())
    check_store_embeddings(store, embeddings, path=folder / INDEX_FILE, identity=check_embeddings)
    check_adapter_metric(store, embeddings, where=f"the store {folder}")
    return store


# --- checks that hold for any Embeddings object ------------------------------------------------------
def _vector(value: Any, what: str, owner: str):
    import numpy as np

    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError):
        array = None
    if array is None or array.ndim != 1 or array.size == 0 or not np.all(np.isfinite(array)):
        raise InputError(f"{owner}.{what} did not return a non-empty list of finite floats", field="embeddings")
    return array


def embedding_width(embeddings: Any) -> int:
    """The width of the vectors ``embeddings`` returns: embtune's own say it (``dimension``, exact by
    construction), any other ``Embeddings`` is asked by embedding :data:`PROBE_TEXT` once."""
    from embtune_integrations.langchain import EmbtuneEmbeddings

    if isinstance(embeddings, EmbtuneEmbeddings):
        return int(embeddings.dimension)
    owner = type(embeddings).__name__
    return int(_vector(embeddings.embed_query(PROBE_TEXT), "embed_query", owner).size)


def _exact_vector(index, position: int):
    """The vector stored at ``position`` when ``index`` keeps vectors exactly (flat storage: IndexFlat*,
    IndexIDMap2, IndexHNSWFlat, IndexIVFFlat with a direct map); None for compressed indexes (PQ, SQ,
    LSH), whose ``reconstruct`` is only an approximation, and for indexes that cannot reconstruct."""
    import numpy as np

    faiss = _faiss()
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexIDMap2):
        return None  # ids map positions differently; LangChain and embtune never build one
    exact = isinstance(index, (faiss.IndexFlat, faiss.IndexIVFFlat)) or (
        isinstance(index, faiss.IndexHNSWFlat) and isinstance(faiss.downcast_index(index.storage), faiss.IndexFlat))
    if not exact:
        return None
    try:
        return np.asarray(index.reconstruct(position), dtype=np.float32)
    except RuntimeError:  # e.g. an IVF index without a direct map
        return None


def check_store_embeddings(store, embeddings: Any, *, path: Path | str, identity: bool = True) -> None:
    """Refuse ``embeddings`` that cannot search ``store`` (see "Embeddings checked by what they return"
    in the module docstring): a query width other than the index's, or (``identity``) a document
    vector for the store's first document that differs from the stored one. One-line
    :class:`~embtune_core.errors.InputError` naming ``path``."""
    import numpy as np

    owner = type(embeddings).__name__
    width = embedding_width(embeddings)
    if width != int(store.index.d):
        raise InputError(f"the index holds {store.index.d}-dimensional vectors but {owner} makes {width}-dimensional "
                         "ones; load the store with the embeddings it was built with", path=path)
    if not identity or not store.index_to_docstore_id:
        return
    moved = getattr(store, "embtune_moved_ids", None) or set()
    untouched = [p for p in sorted(store.index_to_docstore_id) if str(store.index_to_docstore_id[p]) not in moved]
    if not untouched:
        log.warning("%s: every stored vector was moved by an index tuning; only the width of %s was checked",
                    path, owner)
        return
    position = untouched[0]  # a document whose stored vector is the embeddings' own
    document = store.docstore.search(store.index_to_docstore_id[position])
    stored = _exact_vector(_cpu_index(store), int(position))
    if stored is None or not isinstance(document, Document):
        log.warning("%s: cannot read a stored vector back from %s; only the width of %s was checked", path,
                    type(_cpu_index(store)).__name__, owner)
        return
    again = _vector(embeddings.embed_documents([document.page_content])[0], "embed_documents", owner).copy()
    if getattr(store, "_normalize_L2", False):
        again /= max(float(np.linalg.norm(again)), 1e-12)
    difference = float(np.linalg.norm(again - stored) / max(float(np.linalg.norm(stored)), 1e-12))
    if not difference <= SAME_VECTOR_TOLERANCE:
        raise InputError(f"{owner} embeds the store's first document (id '{store.index_to_docstore_id[position]}') "
                         f"{difference:.3g} away from its stored vector (relative L2; at most {SAME_VECTOR_TOLERANCE:g} "
                         "is the same): the store was built with other embeddings (model, normalisation, prompts or "
                         "token limit); load it with those, or pass check_embeddings=False", path=path)
