"""Index-aware fine-tuning: pseudo-queries from the documents the index will hold join the real questions.

The chunks a deployed index will search are known when the model is trained. Their texts (never
questions or labels about them) give LLM-free training pairs: inverse-cloze sentences and random
crops (:mod:`embtune_plugins.qgen_offline`), each paired with the generator's own positive (the
chunk without the sentence, or another crop of it). This is the domain-adaptation idea of GPL
(Wang et al. 2022, "GPL: Generative Pseudo Labeling for Unsupervised Domain Adaptation of Dense
Retrieval", NAACL, arXiv:2112.07577) with the cheap generators of Contriever (Izacard et al. 2022)
and ICT (Lee et al. 2019) instead of a T5 query writer; Promptagator (Dai et al. 2022) and InPars
(Bonifacio et al. 2022) filter synthetic queries by round-trip consistency, which the false-negative
guard of the miner and the question filter (:mod:`embtune_core.data.question_filter`) approximate.

So that pseudo-pairs do not drown the real questions, at most ``ratio`` pseudo-queries per real
training query are kept (a seeded sample spread over the chunks). With ``hard_negatives`` > 0,
every training query, real or pseudo, that has no negatives gets that many mined by the base model
over the whole index (the miner's TopK-PercPos guard drops likely false negatives; a pseudo-query's
own chunk is never its negative).

Inputs and outputs are :class:`~embtune_core.data.dataset.QADataset` objects; the summary dict says how
many pseudo-queries were made, kept and mined for, and is recorded in the model's summary.

Example::

    augmented, info = index_aware_dataset(train_qa, index_corpus, model="all-MiniLM-L6-v2")
    info["pseudo_queries_kept"], info["ratio"]
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Any

from embtune_core.data.dataset import QADataset
from embtune_core.data.documents import Chunk
from embtune_core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_MIX: Mapping[str, int] = {"ict": 1, "crop": 1}


def check_mix(mix: Any, field: str, path: Any = None) -> dict[str, int]:
    """``true`` (the default mix) or ``{generator: per chunk}``, each generator a registered question
    generator. Raises ConfigError (a bad shape) or PluginError (an unknown generator, exit 4) naming
    ``path`` and ``field``, so a typo fails when the settings are read, not when the stage runs."""
    from embtune_core.errors import PluginError
    from embtune_core.plugins import get_registry

    if mix is True:
        return dict(DEFAULT_MIX)
    if not (isinstance(mix, Mapping) and mix and all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 1 for k, v in mix.items())):
        raise ConfigError("must be true, false or a table of question generator = pseudo-queries per chunk "
                          "(e.g. { ict = 1, crop = 1 })", path=path, field=field)
    for name in mix:
        try:
            get_registry().get("question_generators", name)
        except PluginError as exc:
            raise PluginError(exc.problem, path=path, field=field) from None
    return dict(mix)


def pseudo_pairs(corpus: Mapping[str, str], mix: Mapping[str, int], *, seed: int) -> tuple[QADataset, dict[str, str]]:
    """Pseudo-queries over ``corpus`` ({chunk id: text}) with each generator's own positives.

    Returns the dataset (query and positive ids prefixed by the generator's name, so ICT's
    sentence-less positive never collides with the chunk it came from) and {query id: source chunk id}.
    """
    from embtune_core.plugins import get_registry

    chunks = [Chunk(chunk_id, text) for chunk_id, text in corpus.items()]
    queries: dict[str, str] = {}
    positives: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    source: dict[str, str] = {}
    for name, per_chunk in mix.items():
        made = get_registry().create("question_generators", name, seed=seed, questions_per_chunk=int(per_chunk))
        made = made.generate(chunks)
        meta = made.corpus_metadata
        for query_id, text in made.queries.items():
            ids = [c for c in made.relevant_docs.get(query_id, []) if c in made.corpus]
            if not ids:
                continue
            qid = f"{name}:{query_id}"
            queries[qid] = text
            relevant[qid] = [f"{name}:{c}" for c in ids]
            positives.update({f"{name}:{c}": made.corpus[c] for c in ids})
            source[qid] = meta.get(ids[0], {}).get("chunk_id", ids[0])
    return QADataset(queries, positives, relevant), source


def index_aware_dataset(train: QADataset, index_corpus: Mapping[str, str], *, model: str,
                        mix: Mapping[str, int] = DEFAULT_MIX, ratio: float = 1.0, hard_negatives: int = 0,
                        seed: int = 42, exclude_questions=()) -> tuple[QADataset, dict[str, Any]]:
    """``train`` plus pseudo-queries over ``index_corpus``; see the module docstring. Pseudo-queries
    whose text is one of ``exclude_questions`` (the validation questions) are left out and counted.

    Raises ConfigError when ``ratio`` is not positive, ``hard_negatives`` negative, or the index
    has no chunk to make pseudo-queries from.
    """
    from embtune_core.adapters.pseudo_queries import merge

    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool) or ratio <= 0:
        raise ConfigError("must be a positive number", field="train.index_ratio")
    if not isinstance(hard_negatives, int) or isinstance(hard_negatives, bool) or hard_negatives < 0:
        raise ConfigError("must be an integer >= 0", field="train.index_hard_negatives")
    if not index_corpus:
        raise ConfigError("the index corpus holds no chunk", field="train.index_corpus")
    pseudo, source = pseudo_pairs(index_corpus, mix, seed=seed)
    made = len(pseudo.queries)
    from embtune_core.adapters.pseudo_queries import without_questions

    pseudo, leaked = without_questions(pseudo, exclude_questions)
    real_queries = sum(1 for q in train.queries if train.relevant_docs.get(q))
    budget = max(1, int(ratio * real_queries))
    available = len(pseudo.queries)
    if available > budget:
        keep = sorted(random.Random(f"{seed}:index-aware").sample(sorted(pseudo.queries), budget))
        pseudo = pseudo.subset(keep)
        log.warning("index-aware training: %d of %d pseudo-queries kept (index_ratio %.2f x %d real training "
                    "queries), so they do not drown the real questions", budget, available, ratio, real_queries)
    info: dict[str, Any] = {"index_chunks": len(index_corpus), "mix": dict(mix), "ratio": ratio,
                            "pseudo_queries_made": made, "pseudo_queries_kept": len(pseudo.queries),
                            "real_queries": real_queries, "hard_negatives": hard_negatives,
                            "dropped_as_validation_questions": leaked}
    merged = merge(train, pseudo)
    if hard_negatives:
        merged, info["mining"] = _mine(merged, index_corpus, source, model=model, count=hard_negatives)
    return merged, info


def _mine(dataset: QADataset, index_corpus: Mapping[str, str], source: Mapping[str, str], *, model: str,
          count: int) -> tuple[QADataset, dict[str, Any]]:
    """Negatives from the whole index for every query that has none, mined by the base model."""
    from embtune_core.adapters.pseudo_queries import merge
    from embtune_core.plugins import get_registry

    todo = [q for q in dataset.queries if dataset.relevant_docs.get(q) and not dataset.negatives.get(q)]
    if not todo:
        return dataset, {"queries": 0}
    corpus = {**index_corpus, **dataset.corpus}
    # A pseudo-query's own chunk holds its words: relevant for mining, so never its negative.
    relevant = {q: [*dataset.relevant_docs[q], *([source[q]] if q in source else [])] for q in todo}
    probe = QADataset({q: dataset.queries[q] for q in todo}, corpus, relevant)
    miner = get_registry().create("negative_miners", "embedding-rank", num_negatives=count)
    mined = miner.mine(probe, model)
    negatives = {q: ids for q, ids in mined.negatives.items() if ids}
    used = {c for ids in negatives.values() for c in ids}
    extra = QADataset({}, {c: corpus[c] for c in used}, {})
    out = merge(dataset, extra)
    out.negatives = {**dataset.negatives, **negatives}
    return out, dict(miner.last_report)
