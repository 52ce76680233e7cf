"""Hook specifications: one ``register_*`` hook per technique family.

Every hook receives a ``register`` callable. A plugin calls it once per implementation it
contributes::

    from embtune_core import hookimpl

    @hookimpl
    def register_chunkers(register):
        register("paragraph", ParagraphChunker, description="split on blank lines")

``register(name, factory, *, description="")`` files ``factory`` under ``name`` in that family.
Two plugins registering one name in one family is an error naming both distributions. What a
``factory`` is called with and must return is stated in each hook below; the built-in plugins in
``plugins/`` are working examples of every family.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("embtune")


@hookspec
def register_loaders(register):
    """Register document loaders, keyed by file extension (``".pdf"``, ``".txt"``...).

    ``factory(path: Path, **options) -> list[Document]`` reads one file; it raises
    :class:`embtune_core.errors.InputError` naming the file when the file cannot be read.
    """


@hookspec
def register_chunkers(register):
    """Register chunkers that split documents into chunks with stable ids.

    ``factory(**options)`` returns an object with ``chunk(documents: list[Document]) -> list[Chunk]``.
    Chunk ids must be stable: the same input gives the same ids on every run.
    """


@hookspec
def register_question_generators(register):
    """Register question generators that turn chunks into (query, chunk) pairs.

    ``factory(**options)`` returns an object with
    ``generate(chunks: list[Chunk], *, work_dir: Path | None = None) -> QADataset``;
    ``work_dir`` holds its journal so an interrupted run resumes without repeating work.
    """


@hookspec
def register_negative_miners(register):
    """Register hard-negative miners.

    ``factory(**options)`` returns an object with
    ``mine(dataset: QADataset, encoder) -> QADataset`` that returns the dataset with
    ``negatives`` ({query id: [corpus ids]}) filled in.
    """


@hookspec
def register_loss_strategies(register):
    """Register loss strategies for full fine-tuning.

    ``factory(**options)`` returns a :class:`embtune_core.losses.LossStrategy`: it declares the
    data format it needs (pairs, triplets, labelled pairs, scored pairs), builds the training
    columns from a QADataset and builds the sentence-transformers loss for a model.
    """


@hookspec
def register_adapters(register):
    """Register query adapters: small trainable transforms applied to query embeddings only.

    ``factory(dim: int, **options)`` returns a ``torch.nn.Module`` mapping ``(n, dim)`` to
    ``(n, dim)`` that is the identity map at initialisation.
    """


@hookspec
def register_encoders(register):
    """Register embedding backends.

    ``factory(**options)`` returns an encoder with ``identity`` (a string naming model and
    settings, used as the cache key), ``dimension``, ``encode_queries(texts)`` and
    ``encode_documents(texts)`` returning float32 numpy arrays of shape ``(n, dimension)``.
    """


@hookspec
def register_evaluators(register):
    """Register evaluators.

    ``factory(**options)`` returns an object with
    ``evaluate(ranking: embtune_core.metrics.Ranking, dataset: QADataset) -> dict`` where
    ``ranking`` holds the ranked corpus positions per query (``ranking.ranked_ids(row)`` gives the
    ids of row ``row``, the query ``ranking.query_ids[row]``); the result maps metric names to
    floats and may hold ``per_query`` scores.
    """
