"""Built-in loss strategies for full fine-tuning: each turns a QA dataset into training columns and a loss.

A :class:`LossStrategy` declares the data format it needs (``pairs``, ``triplets``,
``labelled-pairs`` or ``scored-pairs``), builds that format from a
:class:`~embtune_core.data.dataset.QADataset` (using mined ``negatives`` or ``scores`` where it needs
them) and builds the sentence-transformers loss for a model. The user never reshapes data by hand;
a dataset lacking what a strategy needs is refused before any training starts, with a one-line
message saying how to get it.

Strategies registered here (``embtune plugins`` lists them):

==================  ================  ======================================================
name                data format       loss (sentence-transformers)
==================  ================  ======================================================
mnrl                pairs / triplets  MultipleNegativesRankingLoss (triplets when negatives); GradCache
                                      (the cached loss) when the batch does not fit the memory budget
cached-mnrl         pairs / triplets  CachedMultipleNegativesRankingLoss (GradCache), always
gist                pairs / triplets  GISTEmbedLoss (guide model filters false negatives); cached likewise
contrastive         labelled-pairs    ContrastiveLoss (1 query/good chunk, 0 query/bad chunk)
online-contrastive  labelled-pairs    OnlineContrastiveLoss (hard pairs of each batch only)
cosine              scored-pairs      CosineSimilarityLoss (``scores``, else labels 1/0)
triplet             triplets          TripletLoss (needs negatives)
==================  ================  ======================================================

The contract (:class:`~embtune_core.finetuning.losses.LossStrategy`) and the Matryoshka wrapper live in
:mod:`embtune_core.finetuning.losses`; any strategy here can be wrapped with
:func:`~embtune_core.finetuning.losses.create_strategy`::

    from embtune_core.data.dataset import QADataset
    from embtune_core.finetuning.losses import create_strategy

    strategy = create_strategy("mnrl", matryoshka_dims=[384, 256, 128, 64])
    train_dataset = strategy.build_dataset(QADataset.load("train_dataset.json"))
    loss = strategy.build_loss(model)  # MatryoshkaLoss(MultipleNegativesRankingLoss)
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from typing import Any

from embtune_core import hookimpl
from embtune_core.data.dataset import QADataset
from embtune_core.errors import ConfigError, DatasetError
from embtune_core.finetuning.losses import HOW_TO_GET_NEGATIVES, LossStrategy, has_negatives, pair_columns


def _usable_negatives(qa: QADataset, qid: str, per_query: int) -> tuple[list[str], int, int]:
    """(the first ``per_query`` mined negatives of ``qid`` that are not relevant to it, how many more were
    mined beyond ``per_query``, how many named a relevant chunk)."""
    relevant = set(qa.relevant_docs.get(qid, []))
    mined = qa.negatives.get(qid, [])
    usable = [n for n in mined if n not in relevant]
    return usable[:per_query], max(0, len(usable) - per_query), len(mined) - len(usable)


def _negatives_report(qa: QADataset, per_query: int) -> dict[str, int]:
    """Over every (query, relevant chunk) pair: how many have a usable mined negative, how many do not,
    and the negatives that go unused (beyond ``per_query``, or naming a relevant chunk)."""
    out = {"pairs": 0, "with_negative": 0, "without_negative": 0, "beyond_per_query": 0, "relevant_negatives": 0}
    for qid, relevant in qa.relevant_docs.items():
        negatives, beyond, same = _usable_negatives(qa, qid, per_query)
        out["pairs"] += len(relevant)
        out["with_negative" if negatives else "without_negative"] += len(relevant)
        out["beyond_per_query"] += beyond
        out["relevant_negatives"] += same
    return out


def _unused_negatives_note(report: dict[str, int], per_query: int) -> list[str]:
    notes = []
    if report["beyond_per_query"]:
        notes.append(f"{report['beyond_per_query']} mined negatives beyond negatives_per_query = {per_query} are not "
                     "used (raise negatives_per_query to use them)")
    if report["relevant_negatives"]:
        notes.append(f"{report['relevant_negatives']} mined negatives are also relevant to their query and are not "
                     "used as negatives")
    return notes


def _triplet_columns(qa: QADataset, per_query: int) -> dict[str, list]:
    """One row per (query, relevant chunk, negative), at most ``per_query`` negatives per query; a pair
    without a usable negative makes no row (the caller says so: :func:`_negatives_report`)."""
    columns: dict[str, list] = {"anchor": [], "positive": [], "negative": []}
    for qid, relevant in qa.relevant_docs.items():
        negatives, _, _ = _usable_negatives(qa, qid, per_query)
        for cid in relevant:
            for nid in negatives:
                columns["anchor"].append(qa.queries[qid])
                columns["positive"].append(qa.corpus[cid])
                columns["negative"].append(qa.corpus[nid])
    return columns


class _InBatchNegatives(LossStrategy):
    """Pairs, or triplets when the dataset has mined negatives (``use_negatives="auto"``).

    ``"auto"`` trains on triplets only when every (query, chunk) pair has a mined negative; when some
    have none it trains on every pair without hard negatives (in-batch negatives only), said in one line,
    rather than leave those pairs out. ``use_negatives = true`` trains on the triplets, and the line says
    how many pairs that leaves out; ``false`` trains on pairs.
    """

    in_batch_negatives = True
    always_cache = False  # cached-mnrl: GradCache even when the batch fits the memory budget

    def __init__(self, *, use_negatives: str | bool = "auto", mini_batch_size: int | str = "auto",
                 **options: Any) -> None:
        super().__init__(**options)
        if use_negatives not in ("auto", True, False):
            raise ConfigError('must be "auto", true or false', field="use_negatives")
        if mini_batch_size != "auto" and (isinstance(mini_batch_size, bool) or not isinstance(mini_batch_size, int)
                                          or mini_batch_size < 1):
            raise ConfigError(f'must be "auto" or a positive integer, got {mini_batch_size!r}',
                              field="mini_batch_size")
        self.use_negatives = use_negatives
        self.needs_negatives = use_negatives is True
        # "auto": chosen from the memory available when training starts (embtune_core.finetuning.memory_plan);
        # gradient_cache says whether the batch is embedded in mini-batches (GradCache) or at once.
        self.mini_batch_size = mini_batch_size
        self.gradient_cache = self.always_cache

    def use_mini_batches(self, mini_batch_size: int, gradient_cache: bool) -> None:
        """Embed each batch ``mini_batch_size`` texts at a time with GradCache (``gradient_cache``), or at once."""
        self.mini_batch_size = int(mini_batch_size)
        self.gradient_cache = bool(gradient_cache) or self.always_cache

    def _mini_batch(self) -> int:
        return self.mini_batch_size if isinstance(self.mini_batch_size, int) else 32  # sentence-transformers' default

    def build_dataset(self, qa: QADataset, path: Any = "<dataset>"):
        self.check(qa, path)
        self._notes = []
        report = _negatives_report(qa, self.negatives_per_query)
        with_negatives = self.use_negatives is True or (self.use_negatives == "auto" and report["with_negative"] > 0)
        if with_negatives and self.use_negatives == "auto" and report["without_negative"]:
            with_negatives = False
            self._notes.append(
                f"{report['without_negative']} of {report['pairs']} (query, chunk) pairs have no mined negative: "
                f"loss '{self.name}' trains on all {report['pairs']} pairs with in-batch negatives only, without "
                f"the hard negatives of the other {report['with_negative']} (use_negatives = true trains on those "
                f"{report['with_negative']} triplets and leaves the rest out)")
        elif with_negatives and report["without_negative"]:
            self._notes.append(
                f"{report['without_negative']} of {report['pairs']} (query, chunk) pairs have no mined negative and "
                f"are left out: loss '{self.name}' with use_negatives = true trains on the {report['with_negative']} "
                "that have one")
        if with_negatives:
            self._notes += _unused_negatives_note(report, self.negatives_per_query)
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
        from sentence_transformers.sentence_transformer.losses import (
            CachedMultipleNegativesRankingLoss,
            MultipleNegativesRankingLoss,
        )

        if self.gradient_cache:  # the same loss, the batch embedded mini_batch_size texts at a time
            return CachedMultipleNegativesRankingLoss(model, scale=self.scale, mini_batch_size=self._mini_batch())
        return MultipleNegativesRankingLoss(model, scale=self.scale)


class CachedMNRLStrategy(MNRLStrategy):
    """CachedMultipleNegativesRankingLoss: MNRL with GradCache, so a large batch fits small memory.

    Same inputs and objective as ``mnrl``; the batch is embedded ``mini_batch_size`` rows at a time
    (``"auto"``: as many as the memory available allows, :mod:`embtune_core.finetuning.memory_plan`). ``mnrl``
    switches to GradCache by itself when the batch does not fit; this one always uses it.
    """

    name = "cached-mnrl"
    always_cache = True


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
            from embtune_core.encoders.models import load_sentence_transformer

            guide = load_sentence_transformer(self.guide, device=str(model.device))
        else:
            guide = copy.deepcopy(model)
        guide.eval()
        for parameter in guide.parameters():
            parameter.requires_grad_(False)
        if self.gradient_cache:
            from sentence_transformers.sentence_transformer.losses import CachedGISTEmbedLoss

            return CachedGISTEmbedLoss(model, guide=guide, temperature=self.temperature,
                                       mini_batch_size=self._mini_batch())
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
            return _usable_negatives(qa, qid, self.negatives_per_query)[0]
        rng = random.Random(f"{self.seed}:{qid}")  # the same draw on every run and every rank
        candidates = [c for c in qa.corpus if c not in relevant]
        return rng.sample(candidates, min(self.negatives_per_query, len(candidates)))

    def _columns(self, qa: QADataset) -> dict[str, list]:
        columns: dict[str, list] = {"anchor": [], "text": [], "label": []}
        if self.bad_chunks == "mined":
            report = _negatives_report(qa, self.negatives_per_query)
            if report["without_negative"]:
                self._notes.append(f"{report['without_negative']} of {report['pairs']} (query, chunk) pairs have no "
                                   "mined negative: their queries train on label-1 rows only")
            self._notes += _unused_negatives_note(report, self.negatives_per_query)
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

        def add(qid: str, cid: str, score: float) -> None:
            columns["anchor"].append(qa.queries[qid])
            columns["text"].append(qa.corpus[cid])
            columns["score"].append(score)

        scores, outside = _scores(qa), _scores_outside_corpus(qa)
        if outside:
            self._notes.append(f"{outside} scores name chunks missing from the corpus and are not trained on")
        if scores:
            top = max((s for per in scores.values() for s in per.values()), default=1.0) or 1.0
            for qid, per_chunk in scores.items():
                for cid, score in per_chunk.items():
                    add(qid, cid, min(1.0, max(0.0, float(score) / top)))
        # Queries without scores train on labels (1.0 relevant, 0.0 mined negative): never left out.
        unscored = [q for q in qa.relevant_docs if q not in scores and qa.relevant_docs[q]]
        if scores and unscored:
            self._notes.append(f"{len(unscored)} of {len(unscored) + len(scores)} queries have no scores: their relevant "
                               "chunks train at 1.0 and their mined negatives at 0.0")
        for qid in unscored:
            negatives, _, _ = _usable_negatives(qa, qid, self.negatives_per_query)
            for cid, score in [(c, 1.0) for c in qa.relevant_docs[qid]] + [(n, 0.0) for n in negatives]:
                add(qid, cid, score)
        return columns

    def build_loss(self, model):
        from sentence_transformers.sentence_transformer.losses import CosineSimilarityLoss

        return CosineSimilarityLoss(model)


def _raw_scores(qa: QADataset) -> dict[str, Any]:
    """The dataset's ``scores``, else a BEIR folder's graded ``qrels``."""
    raw = qa.extras.get("scores") or qa.extras.get("qrels") or {}
    return raw if isinstance(raw, dict) else {}


def _scores_outside_corpus(qa: QADataset) -> int:
    return sum(1 for q, per in _raw_scores(qa).items() if q in qa.queries and isinstance(per, dict)
               for c in per if c not in qa.corpus)


def _scores(qa: QADataset) -> dict[str, dict[str, float]]:
    raw = _raw_scores(qa)
    if not raw:
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
        report = _negatives_report(qa, self.negatives_per_query)
        if report["without_negative"]:
            self._notes.append(f"{report['without_negative']} of {report['pairs']} (query, chunk) pairs have no mined "
                               f"negative and are left out: loss 'triplet' trains on the {report['with_negative']} "
                               "that have one (mnrl trains on every pair)")
        self._notes += _unused_negatives_note(report, self.negatives_per_query)
        return _triplet_columns(qa, self.negatives_per_query)

    def build_loss(self, model):
        from sentence_transformers.sentence_transformer.losses import TripletDistanceMetric, TripletLoss

        return TripletLoss(model, distance_metric=TripletDistanceMetric.COSINE, triplet_margin=self.margin)


# --- each strategy's options, declared (embtune_core.plugin_options) -------------------------------
# [train] loss_options and --loss-option KEY=VALUE are checked against these (names, types) before any
# model loads; the strategy judges the values when it is built. Each class lists every keyword its
# strategy's __init__ takes, its bases' included (tests/test_plugins.py holds them to that).
@dataclass
class LossOptions:
    """Every strategy: mined negatives used per query, and the seed (the run's, unless given)."""

    negatives_per_query: int = 1
    seed: int = 0


@dataclass
class InBatchNegativesOptions(LossOptions):
    use_negatives: str | bool = "auto"  # "auto", true (triplets) or false (pairs)
    # texts embedded at a time (GradCache); "auto": chosen from the memory available (embtune_core.finetuning.memory_plan)
    mini_batch_size: int | str = "auto"


@dataclass
class MNRLOptions(InBatchNegativesOptions):
    scale: float = 20.0  # inverse temperature


@dataclass
class GISTOptions(InBatchNegativesOptions):
    guide: str | None = None  # the guide model; default: a frozen copy of the model trained
    temperature: float = 0.01


@dataclass
class LabelledPairsOptions(LossOptions):
    bad_chunks: str = "mined"  # "mined" negatives or "random" chunks
    margin: float = 0.5


@dataclass
class TripletOptions(LossOptions):
    margin: float = 0.3  # cosine distance margin


LOSS_OPTIONS: dict[str, type] = {
    "mnrl": MNRLOptions,
    "cached-mnrl": MNRLOptions,
    "gist": GISTOptions,
    "contrastive": LabelledPairsOptions,
    "online-contrastive": LabelledPairsOptions,
    "cosine": LossOptions,
    "triplet": TripletOptions,
}


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
        register(name, factory, description=description, options=LOSS_OPTIONS.get(name))
