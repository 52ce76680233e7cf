"""Built-in loss strategies for full fine-tuning: each turns a QA dataset into training columns and a loss.

A :class:`LossStrategy` declares the data format it needs (``pairs``, ``triplets``,
``labelled-pairs`` or ``scored-pairs``), builds that format from a
:class:`~embtune_core.dataset.QADataset` (using mined ``negatives`` or ``scores`` where it needs
them) and builds the sentence-transformers loss for a model. The user never reshapes data by hand;
a dataset lacking what a strategy needs is refused before any training starts, with a one-line
message saying how to get it.

Strategies registered here (``embtune plugins`` lists them):

==================  ================  ======================================================
name                data format       loss (sentence-transformers)
==================  ================  ======================================================
mnrl                pairs / triplets  MultipleNegativesRankingLoss (triplets when negatives)
cached-mnrl         pairs / triplets  CachedMultipleNegativesRankingLoss (GradCache)
gist                pairs / triplets  GISTEmbedLoss (guide model filters false negatives)
contrastive         labelled-pairs    ContrastiveLoss (1 query/good chunk, 0 query/bad chunk)
online-contrastive  labelled-pairs    OnlineContrastiveLoss (hard pairs of each batch only)
cosine              scored-pairs      CosineSimilarityLoss (``scores``, else labels 1/0)
triplet             triplets          TripletLoss (needs negatives)
==================  ================  ======================================================

The contract (:class:`~embtune_core.losses.LossStrategy`) and the Matryoshka wrapper live in
:mod:`embtune_core.losses`; any strategy here can be wrapped with
:func:`~embtune_core.losses.create_strategy`::

    from embtune_core.dataset import QADataset
    from embtune_core.losses import create_strategy

    strategy = create_strategy("mnrl", matryoshka_dims=[384, 256, 128, 64])
    train_dataset = strategy.build_dataset(QADataset.load("train_dataset.json"))
    loss = strategy.build_loss(model)  # MatryoshkaLoss(MultipleNegativesRankingLoss)
"""

from __future__ import annotations

import copy
import random
from typing import Any

from embtune_core import hookimpl
from embtune_core.dataset import QADataset
from embtune_core.errors import ConfigError, DatasetError
from embtune_core.losses import HOW_TO_GET_NEGATIVES, LossStrategy, has_negatives, pair_columns


def _triplet_columns(qa: QADataset, per_query: int) -> dict[str, list]:
    """One row per (query, relevant chunk, negative), at most ``per_query`` negatives per query."""
    columns: dict[str, list] = {"anchor": [], "positive": [], "negative": []}
    for qid, relevant in qa.relevant_docs.items():
        negatives = [n for n in qa.negatives.get(qid, []) if n not in relevant][:per_query]
        for cid in relevant:
            for nid in negatives:
                columns["anchor"].append(qa.queries[qid])
                columns["positive"].append(qa.corpus[cid])
                columns["negative"].append(qa.corpus[nid])
    return columns


class _InBatchNegatives(LossStrategy):
    """Pairs, or triplets when the dataset has mined negatives (``use_negatives="auto"``)."""

    in_batch_negatives = True

    def __init__(self, *, use_negatives: str | bool = "auto", **options: Any) -> None:
        super().__init__(**options)
        if use_negatives not in ("auto", True, False):
            raise ConfigError('must be "auto", true or false', field="use_negatives")
        self.use_negatives = use_negatives
        self.needs_negatives = use_negatives is True

    def build_dataset(self, qa: QADataset, path: Any = "<dataset>"):
        self.check(qa, path)
        with_negatives = self.use_negatives is True or (self.use_negatives == "auto" and has_negatives(qa))
        self.data_format = "triplets" if with_negatives else "pairs"
        from datasets import Dataset

        columns = _triplet_columns(qa, self.negatives_per_query) if with_negatives else pair_columns(qa)
        return Dataset.from_dict(columns)


class MNRLStrategy(_InBatchNegatives):
    """MultipleNegativesRankingLoss: each query against its chunk and every other chunk in the batch.

    Inputs: (query, chunk) pairs, or (query, chunk, hard negative) triplets when the dataset has
    mined negatives. Optimises an InfoNCE ranking objective; larger batches give more negatives.
    ``scale`` is the inverse temperature (20 by default).
    """

    name = "mnrl"

    def __init__(self, *, scale: float = 20.0, **options: Any) -> None:
        super().__init__(**options)
        self.scale = float(scale)

    def build_loss(self, model):
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

        return MultipleNegativesRankingLoss(model, scale=self.scale)


class CachedMNRLStrategy(MNRLStrategy):
    """CachedMultipleNegativesRankingLoss: MNRL with GradCache, so a large batch fits small memory.

    Same inputs and objective as ``mnrl``; the batch is embedded ``mini_batch_size`` rows at a time.
    """

    name = "cached-mnrl"

    def __init__(self, *, mini_batch_size: int = 32, **options: Any) -> None:
        super().__init__(**options)
        if int(mini_batch_size) < 1:
            raise ConfigError("must be at least 1", field="mini_batch_size")
        self.mini_batch_size = int(mini_batch_size)

    def build_loss(self, model):
        from sentence_transformers.sentence_transformer.losses import CachedMultipleNegativesRankingLoss

        return CachedMultipleNegativesRankingLoss(
            model, scale=self.scale, mini_batch_size=self.mini_batch_size
        )


class GISTStrategy(_InBatchNegatives):
    """GISTEmbedLoss: in-batch negatives, minus those a guide model rates as close as the positive.

    Inputs: pairs or triplets, as ``mnrl``. ``guide`` names the guide model (resolved offline like
    any model name); by default a frozen copy of the model being trained guides it.
    """

    name = "gist"

    def __init__(self, *, guide: str | None = None, temperature: float = 0.01, **options: Any) -> None:
        super().__init__(**options)
        self.guide = guide
        self.temperature = float(temperature)

    def build_loss(self, model):
        from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss

        if self.guide:
            from embtune_core.models import load_sentence_transformer

            guide = load_sentence_transformer(self.guide, device=str(model.device))
        else:
            guide = copy.deepcopy(model)
        guide.eval()
        for parameter in guide.parameters():
            parameter.requires_grad_(False)
        return GISTEmbedLoss(model, guide=guide, temperature=self.temperature)


class _LabelledPairs(LossStrategy):
    """Label 1 for (query, relevant chunk), 0 for (query, bad chunk).

    Bad chunks are the mined ``negatives`` (``bad_chunks="mined"``, the default, refused when
    there are none) or chunks drawn at random from the rest of the corpus (``bad_chunks="random"``).
    """

    data_format = "labelled-pairs"

    def __init__(self, *, bad_chunks: str = "mined", margin: float = 0.5, **options: Any) -> None:
        super().__init__(**options)
        if bad_chunks not in ("mined", "random"):
            raise ConfigError('must be "mined" or "random"', field="bad_chunks")
        self.bad_chunks = bad_chunks
        self.needs_negatives = bad_chunks == "mined"
        self.margin = float(margin)

    def _bad_chunks(self, qa: QADataset, qid: str) -> list[str]:
        relevant = set(qa.relevant_docs.get(qid, []))
        if self.bad_chunks == "mined":
            return [n for n in qa.negatives.get(qid, []) if n not in relevant][: self.negatives_per_query]
        rng = random.Random(f"{self.seed}:{qid}")  # the same draw on every run and every rank
        candidates = [c for c in qa.corpus if c not in relevant]
        return rng.sample(candidates, min(self.negatives_per_query, len(candidates)))

    def _columns(self, qa: QADataset) -> dict[str, list]:
        columns: dict[str, list] = {"anchor": [], "text": [], "label": []}
        for qid, relevant in qa.relevant_docs.items():
            for cid, label in [(c, 1) for c in relevant] + [(n, 0) for n in self._bad_chunks(qa, qid)]:
                columns["anchor"].append(qa.queries[qid])
                columns["text"].append(qa.corpus[cid])
                columns["label"].append(label)
        return columns


class ContrastiveStrategy(_LabelledPairs):
    """ContrastiveLoss: pull labelled-1 pairs together, push labelled-0 pairs past ``margin``.

    Inputs: (query, chunk, label) with label 1 for a good chunk and 0 for a bad one, as in the
    DocsGPT embeddings guide. Distance: cosine distance.
    """

    name = "contrastive"

    def build_loss(self, model):
        from sentence_transformers.sentence_transformer.losses import ContrastiveLoss

        return ContrastiveLoss(model, margin=self.margin)


class OnlineContrastiveStrategy(_LabelledPairs):
    """OnlineContrastiveLoss: ContrastiveLoss on the hard positives and hard negatives of each batch.

    Same inputs as ``contrastive``; usually trains better because easy pairs add nothing.
    """

    name = "online-contrastive"

    def build_loss(self, model):
        from sentence_transformers.sentence_transformer.losses import OnlineContrastiveLoss

        return OnlineContrastiveLoss(model, margin=self.margin)


class CosineStrategy(LossStrategy):
    """CosineSimilarityLoss: regress cosine(query, chunk) onto a score in [0, 1].

    Inputs: scored pairs taken from the dataset's ``scores`` ({query id: {chunk id: score}}), scaled
    into [0, 1] by the largest score; without scores, derived from labels: 1.0 for each relevant
    chunk and 0.0 for each mined negative (refused when there are neither scores nor negatives).
    """

    name = "cosine"
    data_format = "scored-pairs"

    def check(self, qa: QADataset, path: Any = "<dataset>") -> None:
        if not qa.relevant_docs or not any(qa.relevant_docs.values()):
            raise DatasetError(
                "no (query, relevant chunk) pairs to train on", path=path, field="relevant_docs"
            )
        if not _scores(qa) and not has_negatives(qa):
            raise DatasetError(
                "loss 'cosine' needs graded pairs and the dataset has neither scores nor "
                f"negatives; {HOW_TO_GET_NEGATIVES}",
                path=path,
                field="scores",
            )

    def _columns(self, qa: QADataset) -> dict[str, list]:
        columns: dict[str, list] = {"anchor": [], "text": [], "score": []}
        scores = _scores(qa)
        if scores:
            top = max((s for per in scores.values() for s in per.values()), default=1.0) or 1.0
            for qid, per_chunk in scores.items():
                for cid, score in per_chunk.items():
                    columns["anchor"].append(qa.queries[qid])
                    columns["text"].append(qa.corpus[cid])
                    columns["score"].append(min(1.0, max(0.0, float(score) / top)))
            return columns
        for qid, relevant in qa.relevant_docs.items():
            negatives = [n for n in qa.negatives.get(qid, []) if n not in relevant][
                : self.negatives_per_query
            ]
            for cid, score in [(c, 1.0) for c in relevant] + [(n, 0.0) for n in negatives]:
                columns["anchor"].append(qa.queries[qid])
                columns["text"].append(qa.corpus[cid])
                columns["score"].append(score)
        return columns

    def build_loss(self, model):
        from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

        return CosineSimilarityLoss(model)


def _scores(qa: QADataset) -> dict[str, dict[str, float]]:
    raw = qa.extras.get("scores") or {}
    if not isinstance(raw, dict):
        return {}
    return {
        q: {c: s for c, s in per.items() if c in qa.corpus}
        for q, per in raw.items()
        if q in qa.queries and isinstance(per, dict) and per
    }


class TripletStrategy(LossStrategy):
    """TripletLoss: the query must be closer to its chunk than to a hard negative by ``margin``.

    Inputs: (query, chunk, mined negative) triplets; refused when the dataset has no negatives.
    Distance: cosine distance (embeddings of normalised models live on the unit sphere, where the
    library's default Euclidean margin of 5 could never be met).
    """

    name = "triplet"
    data_format = "triplets"
    needs_negatives = True

    def __init__(self, *, margin: float = 0.3, **options: Any) -> None:
        super().__init__(**options)
        self.margin = float(margin)

    def _columns(self, qa: QADataset) -> dict[str, list]:
        return _triplet_columns(qa, self.negatives_per_query)

    def build_loss(self, model):
        from sentence_transformers.sentence_transformer.losses import TripletDistanceMetric, TripletLoss

        return TripletLoss(model, distance_metric=TripletDistanceMetric.COSINE, triplet_margin=self.margin)


STRATEGIES: dict[str, tuple[type[LossStrategy], str]] = {
    "mnrl": (MNRLStrategy, "MultipleNegativesRankingLoss: pairs, or triplets with mined negatives"),
    "cached-mnrl": (CachedMNRLStrategy, "CachedMultipleNegativesRankingLoss: large batches on small memory"),
    "gist": (GISTStrategy, "GISTEmbedLoss: in-batch negatives filtered by a guide model"),
    "contrastive": (ContrastiveStrategy, "ContrastiveLoss: label 1 query/good chunk, 0 query/bad chunk"),
    "online-contrastive": (OnlineContrastiveStrategy, "OnlineContrastiveLoss: hard labelled pairs per batch"),
    "cosine": (CosineStrategy, "CosineSimilarityLoss: scored pairs (scores, else labels 1/0)"),
    "triplet": (TripletStrategy, "TripletLoss: (query, chunk, mined negative) triplets"),
}


@hookimpl
def register_loss_strategies(register):
    for name, (factory, description) in STRATEGIES.items():
        register(name, factory, description=description)
