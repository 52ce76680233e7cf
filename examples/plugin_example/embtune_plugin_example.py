"""An example third-party embtune plugin: one chunker and one evaluator.

Install it (``pip install examples/plugin_example``) and ``embtune plugins`` lists
``paragraph`` under chunkers and ``recall-at-1`` under evaluators, provided by
``embtune-plugin-example``. Select the chunker by name like any built-in::

    from embtune_core.plugins import get_registry
    chunker = get_registry().create("chunkers", "paragraph", min_chars=20)
    chunks = chunker.chunk(documents)

The chunker declares its options as a dataclass (:class:`ParagraphOptions`), handed to ``register``:
embtune checks a ``[chunk]`` table against it -- an unknown key (with "did you mean"), a value of the
wrong type, a value ``validate()`` refuses -- in one line naming the file and ``chunk.<key>``, before
any document is read.
"""

from __future__ import annotations

from dataclasses import dataclass

from embtune_core import hookimpl
from embtune_core.data.documents import Chunk, Document, stable_id
from embtune_core.errors import ConfigError


@dataclass
class ParagraphOptions:
    """The options of ``paragraph``: the keywords ``ParagraphChunker`` takes, with their types and defaults."""

    min_chars: int = 1  # paragraphs shorter than this merge into the next

    def validate(self) -> None:
        """Ranges the type cannot say; the error names the option (``field``), embtune adds file and table."""
        if self.min_chars < 1:
            raise ConfigError("must be a positive integer", field="min_chars")


class ParagraphChunker:
    """Split each document on blank lines; merge paragraphs shorter than ``min_chars`` into the next."""

    def __init__(self, min_chars: int = ParagraphOptions.min_chars):
        self.min_chars = min_chars

    def chunk(self, documents: list[Document]) -> list[Chunk]:
        chunks = []
        for doc in documents:
            pending = ""
            paragraphs = [p.strip() for p in doc.text.split("\n\n") if p.strip()]
            for i, paragraph in enumerate(paragraphs):
                pending = f"{pending}\n\n{paragraph}" if pending else paragraph
                if len(pending) >= self.min_chars or i == len(paragraphs) - 1:
                    position = len(chunks)
                    chunks.append(Chunk(stable_id(doc.source, position, pending), pending,
                                        {**doc.metadata, "position": position}))
                    pending = ""
        return chunks


class RecallAt1:
    """Share of queries whose top-ranked document is relevant."""

    def evaluate(self, ranking, dataset) -> dict:
        """``ranking``: an :class:`embtune_core.scoring.metrics.Ranking`; ``dataset``: the QA dataset."""
        hits = []
        for row, qid in enumerate(ranking.query_ids):
            ids = ranking.ranked_ids(row)
            hits.append(1.0 if ids and ids[0] in set(dataset.relevant_docs.get(qid, [])) else 0.0)
        return {"recall@1": sum(hits) / len(hits) if hits else 0.0}


@hookimpl
def register_chunkers(register):
    register("paragraph", ParagraphChunker, options=ParagraphOptions,
             description="split on blank lines (example plugin)")


@hookimpl
def register_evaluators(register):
    register("recall-at-1", RecallAt1, description="share of queries with a relevant top hit (example plugin)")
