"""LLM-free pseudo-queries: inverse cloze task (ICT) and independent cropping, both seeded.

* :class:`InverseClozeGenerator` (Lee et al. 2019, "Latent Retrieval for Weakly Supervised Open
  Domain QA"): a sentence of the chunk is the pseudo-query and the chunk without that sentence is
  its positive, so the model must match on meaning, not on the words it was given. With
  probability ``keep_probability`` (0.1, as in the paper) the sentence stays in, which also
  teaches lexical matching. The corpus entry keeps the chunk's id.
* :class:`CropGenerator` (Izacard et al. 2022, Contriever): two independent random spans of the
  chunk, each 10-50% of its words, form a (query, positive) pair; the positive crop is a corpus
  entry of its own, linked to its chunk by ``corpus_metadata[id]["chunk_id"]``.

Randomness is drawn per chunk from ``(seed, chunk id)``, so a chunk gets the same pseudo-queries
whatever the other chunks are, and re-runs are identical.

Example::

    dataset = InverseClozeGenerator(seed=0).generate(chunks)
"""

from __future__ import annotations

import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path

from embtune_core.data.dataset import QADataset
from embtune_core.data.documents import Chunk, stable_id
from embtune_core.data.qgen import corpus_metadata, query_id
from embtune_core.data.sentences import sentence_spans, word_count
from embtune_core.errors import ConfigError
from embtune_core.runtime.progress import progress

log = logging.getLogger(__name__)
_WORD = re.compile(r"\S+")


def _rng(seed: int, chunk_id: str) -> random.Random:
    return random.Random(f"{seed}:{chunk_id}")  # str seeds hash with SHA-512: stable across runs


class InverseClozeGenerator:
    """Pseudo-queries by the inverse cloze task.

    Args:
        seed: random seed.
        questions_per_chunk: sentences taken as queries from each chunk (at most; fewer if short).
        keep_probability: chance the query sentences stay in the positive.
        min_words / max_words: a sentence qualifies as a query within this many words.
    """

    def __init__(self, seed: int = 0, questions_per_chunk: int = 1, keep_probability: float = 0.1,
                 min_words: int = 5, max_words: int = 64):
        if questions_per_chunk < 1:
            raise ConfigError("must be at least 1", field="questions_per_chunk")
        if not 0.0 <= keep_probability <= 1.0:
            raise ConfigError("must be between 0 and 1", field="keep_probability")
        self.seed, self.questions_per_chunk = seed, questions_per_chunk
        self.keep_probability, self.min_words, self.max_words = keep_probability, min_words, max_words
        self.last_report: dict[str, int] = {}

    def generate(self, chunks: Sequence[Chunk], *, work_dir: Path | None = None) -> QADataset:
        queries, corpus, relevant, metadata = {}, {}, {}, {}
        skipped = 0
        for chunk in progress(chunks, desc="ICT queries", unit="chunk"):
            spans = [(a, b) for a, b in sentence_spans(chunk.text) if chunk.text[a:b].strip()]
            eligible = [s for s in spans
                        if self.min_words <= word_count(chunk.text[s[0]:s[1]]) <= self.max_words]
            if len(spans) < 2 or not eligible:
                skipped += 1  # still a corpus entry: a realistic distractor for retrieval
                corpus[chunk.id] = chunk.text
                metadata[chunk.id] = corpus_metadata(chunk, ict_removed=0)
                continue
            rng = _rng(self.seed, chunk.id)
            # Leave at least one sentence for the positive.
            n = min(self.questions_per_chunk, len(eligible), len(spans) - 1)
            picked = sorted(rng.sample(eligible, n))
            keep = rng.random() < self.keep_probability
            if keep:
                positive = chunk.text
            else:
                positive = " ".join(chunk.text[a:b].strip() for a, b in spans if (a, b) not in picked)
            corpus[chunk.id] = positive
            metadata[chunk.id] = corpus_metadata(chunk, ict_removed=0 if keep else len(picked))
            for i, (a, b) in enumerate(picked):
                question = " ".join(chunk.text[a:b].split())
                qid = query_id(chunk.id, i, question)
                queries[qid] = question
                relevant[qid] = [chunk.id]
        self.last_report = {"chunks": len(chunks), "skipped_chunks": skipped, "queries": len(queries)}
        if skipped:
            log.info("ICT: %d of %d chunks had too few sentences for a query", skipped, len(chunks))
        return QADataset(queries, corpus, relevant, extras={"corpus_metadata": metadata})


class CropGenerator:
    """Pairs of independent random crops of each chunk.

    Args:
        seed: random seed.
        questions_per_chunk: pairs per chunk.
        min_ratio / max_ratio: each crop's length as a fraction of the chunk's words.
        min_words: chunks with fewer words are skipped.
    """

    def __init__(self, seed: int = 0, questions_per_chunk: int = 1, min_ratio: float = 0.1,
                 max_ratio: float = 0.5, min_words: int = 8):
        if questions_per_chunk < 1:
            raise ConfigError("must be at least 1", field="questions_per_chunk")
        if not 0.0 < min_ratio <= max_ratio <= 1.0:
            raise ConfigError("need 0 < min_ratio <= max_ratio <= 1", field="min_ratio")
        self.seed, self.questions_per_chunk = seed, questions_per_chunk
        self.min_ratio, self.max_ratio, self.min_words = min_ratio, max_ratio, min_words
        self.last_report: dict[str, int] = {}

    def _crop(self, rng: random.Random, text: str, words: list[tuple[int, int]]) -> str:
        length = max(1, round(rng.uniform(self.min_ratio, self.max_ratio) * len(words)))
        first = rng.randrange(0, len(words) - length + 1)
        return text[words[first][0]:words[first + length - 1][1]]

    def generate(self, chunks: Sequence[Chunk], *, work_dir: Path | None = None) -> QADataset:
        queries, corpus, relevant, metadata = {}, {}, {}, {}
        skipped = 0
        for chunk in progress(chunks, desc="crop pairs", unit="chunk"):
            words = [m.span() for m in _WORD.finditer(chunk.text)]
            if len(words) < self.min_words:
                skipped += 1
                continue
            rng = _rng(self.seed, chunk.id)
            for i in range(self.questions_per_chunk):
                query, positive = self._crop(rng, chunk.text, words), self._crop(rng, chunk.text, words)
                pid = stable_id(chunk.id, "crop", i, positive)
                corpus[pid] = positive
                metadata[pid] = corpus_metadata(chunk, chunk_id=chunk.id)
                qid = query_id(chunk.id, i, query)
                queries[qid] = query
                relevant[qid] = [pid]
        self.last_report = {"chunks": len(chunks), "skipped_chunks": skipped, "queries": len(queries)}
        return QADataset(queries, corpus, relevant, extras={"corpus_metadata": metadata})
