"""Hook specifications: one ``register_*`` hook per technique family.

Every hook receives a ``register`` callable. A plugin calls it once per implementation it
contributes::

    from embtune_core import hookimpl
    from embtune_core.hookspecs import Register

    @hookimpl
    def register_chunkers(register: Register) -> None:
        register("paragraph", ParagraphChunker, description="split on blank lines")

``register(name, factory, *, description="", options=None)`` files ``factory`` under ``name`` in that
family; ``options`` is the dataclass declaring the keyword options the factory takes (their names,
types, defaults and an optional ``validate()``), checked before anything runs
(:mod:`embtune_core.plugin_options`).
Two plugins registering one name in one family is an error naming both distributions. What a
``factory`` is called with and must return is stated in each hook below; the built-in plugins in
``plugins/`` are working examples of every family.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import pluggy

if TYPE_CHECKING:  # the contracts name these types; importing them here would load numpy at plugin listing
    import numpy as np

    from embtune_core.data.dataset import QADataset
    from embtune_core.data.documents import Chunk, Document
    from embtune_core.retrieval.index_tuning import TunedIndex
    from embtune_core.scoring.metrics import Ranking

hookspec = pluggy.HookspecMarker("embtune")


class Register(Protocol):
    """The callable every ``register_*`` hook receives: files ``factory`` under ``name`` in its family."""

    def __call__(self, name: str, factory: Callable[..., Any], *, description: str = "",
                 options: type | None = None) -> None: ...


# --- what each family's factory returns (the built-ins in plugins/ implement these) --------------------
@runtime_checkable
class Chunker(Protocol):
    def chunk(self, documents: list[Document]) -> list[Chunk]: ...


@runtime_checkable
class QuestionGenerator(Protocol):
    def generate(self, chunks: list[Chunk], *, work_dir: Path | None = None) -> QADataset: ...


@runtime_checkable
class NegativeMiner(Protocol):
    def mine(self, dataset: QADataset, encoder: Any) -> QADataset: ...


@runtime_checkable
class Encoder(Protocol):
    """An embedding backend (:mod:`embtune_core.encoders.encoding`): ``identity`` names model and settings (the
    embedding cache's key), ``encode_*`` return float32 arrays of shape ``(n, dimension)``.

    Optional members, declared by :class:`embtune_core.encoders.encoding.Encoder` (None where not stated):
    ``encoder_identity`` (:class:`~embtune_core.encoders.encoder_identity.EncoderIdentity`, whose text is
    ``identity``), ``options`` (:class:`~embtune_core.encoders.encoder_identity.EncoderOptions`), ``name``,
    ``normalize``, ``weights_fingerprint``, ``token_limit``, ``convention``, gathered by
    ``description()`` (:class:`~embtune_core.encoders.encoder_identity.EncoderDescription`): what a query
    adapter records of its base encoder and checks when it is loaded."""

    identity: str
    dimension: int

    def encode_queries(self, texts: list[str]) -> np.ndarray: ...

    def encode_documents(self, texts: list[str]) -> np.ndarray: ...


@runtime_checkable
class IndexTuner(Protocol):
    """Tunes stored document vectors without re-embedding (:mod:`embtune_core.retrieval.index_tuning`)."""

    def tune(self, doc_ids: list[str], doc_texts: list[str], doc_vectors: np.ndarray, queries: np.ndarray,
             answers: list[list[int]], dev_queries: np.ndarray | None = None,
             dev_answers: list[list[int]] | None = None, *, encoder_identity: str = "",
             adapter_fingerprint: str | None = None) -> TunedIndex: ...


@runtime_checkable
class Evaluator(Protocol):
    def evaluate(self, ranking: Ranking, dataset: QADataset) -> dict[str, Any]: ...


@hookspec
def register_loaders(register: Register) -> None:
    """Register document loaders, keyed by file extension (``".pdf"``, ``".txt"``...).

    ``factory(path: Path, **options) -> list[Document]`` reads one file; it raises
    :class:`embtune_core.errors.InputError` naming the file when the file cannot be read.
    """


@hookspec
def register_chunkers(register: Register) -> None:
    """Register chunkers that split documents into chunks with stable ids.

    ``factory(**options)`` returns a :class:`Chunker`: ``chunk(documents: list[Document]) -> list[Chunk]``.
    Chunk ids must be stable: the same input gives the same ids on every run.
    """


@hookspec
def register_question_generators(register: Register) -> None:
    """Register question generators that turn chunks into (query, chunk) pairs.

    ``factory(**options)`` returns a :class:`QuestionGenerator`:
    ``generate(chunks: list[Chunk], *, work_dir: Path | None = None) -> QADataset``;
    ``work_dir`` holds its journal so an interrupted run resumes without repeating work.
    """


@hookspec
def register_negative_miners(register: Register) -> None:
    """Register hard-negative miners.

    ``factory(**options)`` returns a :class:`NegativeMiner`:
    ``mine(dataset: QADataset, encoder) -> QADataset`` that returns the dataset with
    ``negatives`` ({query id: [corpus ids]}) filled in.
    """


@hookspec
def register_loss_strategies(register: Register) -> None:
    """Register loss strategies for full fine-tuning.

    ``factory(**options)`` returns a :class:`embtune_core.finetuning.losses.LossStrategy`: it declares the
    data format it needs (pairs, triplets, labelled pairs, scored pairs), builds the training
    columns from a QADataset and builds the sentence-transformers loss for a model.
    """


@hookspec
def register_adapters(register: Register) -> None:
    """Register query adapters: small trainable transforms applied to query embeddings only.

    ``factory(dim: int, **options)`` returns a ``torch.nn.Module`` mapping ``(n, dim)`` to
    ``(n, dim)`` that is the identity map at initialisation.
    """


@hookspec
def register_encoders(register: Register) -> None:
    """Register embedding backends.

    ``factory(**options)`` returns an :class:`Encoder` with ``identity`` (a string naming model and
    settings, used as the cache key), ``dimension``, ``encode_queries(texts)`` and
    ``encode_documents(texts)`` returning float32 numpy arrays of shape ``(n, dimension)``.
    """


@hookspec
def register_index_tuners(register: Register) -> None:
    """Register index tuners: techniques that change the stored document vectors of an index directly,
    with no model weights and no re-embedding (document-side tuning; the built-in ``nudge-n`` is NUDGE-N,
    Zeighami et al., ICLR 2025).

    ``factory(**options)`` returns an :class:`IndexTuner`: ``tune(doc_ids, doc_texts, doc_vectors
    (n_docs, dim), queries (n_queries, dim), answers (document positions per query), dev_queries=None,
    dev_answers=None, *, encoder_identity, adapter_fingerprint) -> TunedIndex`` (deltas over the base
    vectors, :class:`embtune_core.retrieval.index_tuning.TunedIndex`; saved without pickle).
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators.

    ``factory(**options)`` returns an :class:`Evaluator`:
    ``evaluate(ranking: embtune_core.scoring.metrics.Ranking, dataset: QADataset) -> dict`` where
    ``ranking`` holds the ranked corpus positions per query (``ranking.ranked_ids(row)`` gives the
    ids of row ``row``, the query ``ranking.query_ids[row]``); the result maps metric names to
    floats and may hold ``per_query`` scores.
    """
