"""Pseudo-queries over the corpus a query adapter will search: transductive adapter training.

A query adapter trained only on questions about *other* documents barely moves retrieval on new
ones (on Lyft -> Uber with MiniLM, about +0.005 MRR@10; bench/adapter_10k.py). The documents an
index will hold are known when the adapter is trained, though, so LLM-free pseudo-queries made
from them (inverse-cloze sentences and random crops, :mod:`embtune_plugins.qgen_offline`) can join
the training pairs. No question or label of the target corpus is read: only its chunk texts.

Each pseudo-query is relevant to the chunk *as indexed* (its original text and id), because the
adapter only moves queries; the document vectors it is trained against are those of the index.

Example::

    extra = index_pseudo_queries(target.corpus)              # ict x5 + crop x5 per chunk
    result = train_adapter(encoder, labelled, augment=extra)
"""

from __future__ import annotations

from collections.abc import Mapping

from embtune_core.data.dataset import QADataset
from embtune_core.data.documents import Chunk

# Measured on Lyft -> Uber (two-layer adapter, mean of 5 seeds): crops x2 gave MRR@10 +0.029,
# ict x5 + crop x5 +0.049 (bench/adapter_10k.py records the current figure).
DEFAULT_MIX: Mapping[str, int] = {"ict": 5, "crop": 5}


def index_pseudo_queries(corpus: Mapping[str, str], *, mix: Mapping[str, int] = DEFAULT_MIX,
                         seed: int = 0) -> QADataset:
    """Pseudo-queries for every chunk of ``corpus`` ({chunk id: text}), each relevant to its chunk.

    ``mix`` maps a question-generator plugin name to questions per chunk; a generator whose corpus
    entries are derived texts (crops) must link them to their chunk by ``corpus_metadata[id]["chunk_id"]``.
    """
    from embtune_core.plugins import get_registry

    chunks = [Chunk(chunk_id, text) for chunk_id, text in corpus.items()]
    queries: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    for name, per_chunk in mix.items():
        made = get_registry().create("question_generators", name, seed=seed, questions_per_chunk=int(per_chunk))
        made = made.generate(chunks)
        meta = made.corpus_metadata
        for query_id, text in made.queries.items():
            chunk_ids = [meta.get(c, {}).get("chunk_id", c) for c in made.relevant_docs.get(query_id, [])]
            chunk_ids = [c for c in dict.fromkeys(chunk_ids) if c in corpus]
            if chunk_ids:
                queries[f"{name}:{query_id}"] = text
                relevant[f"{name}:{query_id}"] = chunk_ids
    return QADataset(queries, dict(corpus), relevant)


def merge(*parts: QADataset) -> QADataset:
    """One dataset holding every part's queries, chunks, judgements and negatives.

    Ids must not collide with different texts: the parts come from different corpora or generators.
    """
    from embtune_core.errors import DatasetError

    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    negatives: dict[str, list[str]] = {}
    for part in parts:
        for target, source, what in ((queries, part.queries, "query"), (corpus, part.corpus, "chunk")):
            for key, text in source.items():
                if target.setdefault(key, text) != text:
                    raise DatasetError(f"{what} id '{key}' names two different texts in the merged datasets")
        for query_id, chunk_ids in part.relevant_docs.items():
            relevant[query_id] = list(dict.fromkeys([*relevant.get(query_id, []), *chunk_ids]))
        for query_id, chunk_ids in part.negatives.items():
            negatives[query_id] = list(dict.fromkeys([*negatives.get(query_id, []), *chunk_ids]))
    merged = QADataset(queries, corpus, relevant)
    if negatives:
        merged.negatives = negatives
    return merged


def without_questions(dataset: QADataset, questions, *, what: str = "validation") -> tuple[QADataset, int]:
    """``dataset`` less the pseudo-queries whose text is one of ``questions`` (e.g. the validation
    questions), and how many were dropped. With an LLM-free question generator (ICT) the validation
    questions are sentences of the validation chunks, so pseudo-queries over those chunks can be the
    very questions the report scores: training on them would be a leak, not transduction."""
    import logging

    texts = set(questions)
    keep = [q for q, text in dataset.queries.items() if text not in texts]
    dropped = len(dataset.queries) - len(keep)
    if dropped:
        logging.getLogger(__name__).warning(
            "%d pseudo-queries are word for word %s questions; left out of training", dropped, what)
        dataset = dataset.subset(keep)
    return dataset, dropped
