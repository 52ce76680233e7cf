"""The contract of the ``loss_strategies`` family, and how core builds a strategy by name.

A :class:`LossStrategy` declares the data format it needs (``pairs``, ``triplets``,
``labelled-pairs`` or ``scored-pairs``, :data:`DATA_FORMATS`), builds that format from a
:class:`~embtune_core.data.dataset.QADataset` (using mined ``negatives`` or ``scores`` where it needs
them) and builds the sentence-transformers loss for a model. A dataset lacking what a strategy needs
is refused before any training starts, with a one-line message saying how to get it. Plugins
subclass :class:`LossStrategy` (the built-ins are in :mod:`embtune_plugins.losses`);
:func:`create_strategy` builds a registered one by name and wraps it in :class:`MatryoshkaStrategy`
when dimensions are given::

    strategy = create_strategy("mnrl", matryoshka_dims=[384, 256, 128, 64])
    train_dataset = strategy.build_dataset(QADataset.load("train_dataset.json"))
    loss = strategy.build_loss(model)  # MatryoshkaLoss(MultipleNegativesRankingLoss)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from embtune_core.data.dataset import QADataset
from embtune_core.errors import ConfigError, DatasetError

DATA_FORMATS = ("pairs", "triplets", "labelled-pairs", "scored-pairs")
HOW_TO_GET_NEGATIVES = ("mine hard negatives first: run `embtune mine` on the dataset "
                        "(or set a [mine] table in the config)")


class LossStrategy:
    """Base class: a data format, a way to build it from a QA dataset, and a loss.

    Subclasses set :attr:`name`, :attr:`data_format`, :attr:`in_batch_negatives` (True when the
    loss treats the other rows of a batch as negatives, so batches must hold no duplicate texts)
    and implement :meth:`build_loss`.
    """

    name = "base"
    data_format = "pairs"
    in_batch_negatives = False
    needs_negatives = False

    def __init__(self, *, negatives_per_query: int = 1, seed: int = 0) -> None:
        if negatives_per_query < 1:
            raise ConfigError("must be at least 1", field="negatives_per_query")
        self.negatives_per_query = negatives_per_query
        self.seed = seed

    # --- data ----------------------------------------------------------------------------------
    def check(self, qa: QADataset, path: Any = "<dataset>") -> None:
        """Raise :class:`DatasetError` when ``qa`` lacks what this strategy needs."""
        if not qa.relevant_docs or not any(qa.relevant_docs.values()):
            raise DatasetError(
                "no (query, relevant chunk) pairs to train on", path=path, field="relevant_docs"
            )
        if self.needs_negatives and not has_negatives(qa):
            raise DatasetError(
                f"loss '{self.name}' needs hard negatives and the dataset has none; {HOW_TO_GET_NEGATIVES}",
                path=path,
                field="negatives",
            )

    def build_dataset(self, qa: QADataset, path: Any = "<dataset>"):
        """The training columns of :attr:`data_format` as a ``datasets.Dataset``; :attr:`notes` then says,
        one line each, what of ``qa`` the rows leave out or how the loss changed (nothing silent)."""
        self.check(qa, path)
        self._notes = []
        from datasets import Dataset

        return Dataset.from_dict(self._columns(qa))

    @property
    def notes(self) -> list[str]:
        """What the last :meth:`build_dataset` left out of the data or changed in the loss, one line each
        (empty when every (query, chunk) pair became a row as the data format says)."""
        return list(getattr(self, "_notes", []))

    def _columns(self, qa: QADataset) -> dict[str, list]:
        return pair_columns(qa)

    # --- loss ----------------------------------------------------------------------------------
    def build_loss(self, model):
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Name, data format and options, for model cards and logs."""
        return {
            "name": self.name,
            "data_format": self.data_format,
            **{k: v for k, v in vars(self).items() if not k.startswith("_")},
        }


def has_negatives(qa: QADataset) -> bool:
    return any(qa.negatives.get(q) for q in qa.relevant_docs)


def pair_columns(qa: QADataset) -> dict[str, list]:
    anchors, positives = zip(*qa.pairs())
    return {"anchor": list(anchors), "positive": list(positives)}


class MatryoshkaStrategy(LossStrategy):
    """Matryoshka wrapper over any strategy: the inner loss at each of ``dims`` (prefixes of the embedding).

    The data format and columns are the inner strategy's. Embeddings truncated to any of ``dims``
    (for example 384/256/128/64) stay useful, so a smaller index can be traded for a little quality.
    """

    def __init__(self, inner: LossStrategy, dims: Sequence[int]) -> None:
        dims = [int(d) for d in dims]
        if not dims or any(d < 1 for d in dims):
            raise ConfigError("must be a non-empty list of positive integers", field="matryoshka_dims")
        self.inner = inner
        self.dims = sorted(set(dims), reverse=True)
        self.name = f"matryoshka({inner.name})"
        self.in_batch_negatives = inner.in_batch_negatives
        self.needs_negatives = inner.needs_negatives

    @property
    def data_format(self) -> str:  # type: ignore[override]
        return self.inner.data_format

    def check(self, qa: QADataset, path: Any = "<dataset>") -> None:
        self.inner.check(qa, path)

    def build_dataset(self, qa: QADataset, path: Any = "<dataset>"):
        return self.inner.build_dataset(qa, path)

    @property
    def notes(self) -> list[str]:
        return self.inner.notes

    def build_loss(self, model):
        from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss

        size = model.get_embedding_dimension()
        if size is not None and self.dims[0] > size:
            raise ConfigError(
                f"dimension {self.dims[0]} exceeds the model's embedding dimension {size}",
                field="matryoshka_dims",
            )
        return MatryoshkaLoss(model, self.inner.build_loss(model), matryoshka_dims=self.dims)

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "name": self.name, "matryoshka_dims": self.dims}


def create_strategy(
    name: str, *, matryoshka_dims: Sequence[int] | None = None, **options: Any
) -> LossStrategy:
    """The registered strategy ``name`` built with ``options``, Matryoshka-wrapped when dims are given."""
    from embtune_core.plugin_options import check_options
    from embtune_core.plugins import get_registry

    get_registry().get("loss_strategies", name)  # an unknown name: PluginError (exit 4) before its options
    # Names and types from the strategy's declared options; its values are judged when it is built.
    check_options("loss_strategies", name, options, path=None, table="loss_options",
                  unknown=f"bad option for loss '{name}': unexpected keyword argument '{{key}}'{{suggestion}}; "
                          "known: {known}")
    strategy = get_registry().create("loss_strategies", name, **options)
    if matryoshka_dims:
        strategy = MatryoshkaStrategy(strategy, matryoshka_dims)
    return strategy
