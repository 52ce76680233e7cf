"""``embtune tune-index``: tune the stored vectors of an index (document-side tuning), from data to a folder.

The one library function behind the command and the pipeline's stage: :func:`tune_stored_index`
embeds the index's chunks with the (frozen) encoder through the embedding cache, gathers training
queries -- real questions whose relevant chunks are in the index, and LLM-free pseudo-queries made
from every chunk's text (:mod:`embtune_core.adapters.pseudo_queries`) -- passes them through the query
adapter when one serves the queries, and calls an index tuner (the ``index_tuners`` plugin family;
built-in ``nudge-n``, :mod:`embtune_core.retrieval.index_tuning`). The bound on how far vectors move is
chosen on held-out queries: ``dev`` when given (e.g. held-out training documents' questions), else
a share of the training queries. Questions listed in ``exclude_questions`` (the report's validation
questions) never train it, even when a pseudo-query happens to repeat one word for word.

No model weights change and nothing is re-embedded: the output folder holds the vector deltas
(``deltas.safetensors``, ``index_tuning.json``). :func:`embtune_integrations.tuned_index.tuned_faiss_store`
writes a LangChain/DocsGPT store with the tuned vectors.

Example::

    settings = IndexTuningSettings(index_corpus=["uber.json"], out="out/uber-nudge")
    tuned = tune_stored_index(settings)                       # TunedIndex, saved to settings.out
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from embtune_core.cli_fields import setting
from embtune_core.data.dataset import QADataset
from embtune_core.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)


@dataclass
class IndexTuningSettings:
    """``embtune tune-index``'s options and the ``[index_tuning]`` table of ``embtune run`` (one declaration:
    the flags are generated from these fields)."""

    TABLE: ClassVar[str] = "index_tuning"
    out: str | None = setting(None, "output folder for the tuned index (deltas.safetensors + index_tuning.json)")
    index_corpus: list[str] = setting(default_factory=list, help="the chunks the index holds (repeatable, or "
                                      "comma-separated): any dataset or a bare corpus; default: --train's corpus",
                                      metavar="CORPUS")
    train: str | None = setting(None, "questions whose relevant chunks are in the index (LlamaIndex JSON, BEIR, "
                                "pairs); optional: pseudo-queries alone tune an index nobody asked about yet")
    dev: str | None = setting(None, "held-out questions that choose how far vectors may move (default: a share "
                              "of the training queries)")
    encoder: str | None = setting(None, "encoder spec of the index's vectors (default: packaged all-MiniLM-L6-v2)")
    adapter: str | None = setting(None, "query adapter folder that serves the queries (the vectors move towards "
                                  "adapted queries)")
    document_windows: Literal["off", "mean"] = setting("off", "read long chunks whole as the index does "
                                                       "(mean of windows) or cut at the token limit")
    pseudo_queries: dict[str, int] | None = setting(None, "LLM-free pseudo-queries per chunk, e.g. ict=5,crop=5 "
                                                    "(default); ict=0 or none for none", metavar="GEN=N,...")
    tuner: str = setting("nudge-n", "index tuner (see `embtune plugins --family index_tuners`)")
    gammas: list[float] | None = setting(None, "NUDGE-N bounds to choose from (default 0, 0.02, ..., 0.48)",
                                         metavar="G1,G2,...")
    dev_fraction: float = setting(0.2, "share of training queries held out to choose the bound (no --dev)")
    seed: int = setting(42, "seed of the pseudo-queries and the hold-out")
    max_seq_length: int | None = setting(None, "token limit of a local encoder (default: the model's own)")
    batch_size: int | None = setting(None, "texts per encoder call")
    cache_dir: str | None = setting(None, "embedding cache folder (default: $EMBTUNE_CACHE/embeddings)")
    store: str | None = setting(None, "tune an existing vector store instead: an embtune FAISS store, or a "
                                "LangChain/DocsGPT folder (index.faiss + index.pkl, needs "
                                "--allow-dangerous-deserialization); its chunks and stored vectors are read, nothing "
                                "is re-embedded, and the tuned store is written to OUT/store")
    allow_dangerous_deserialization: bool = setting(False, "unpickle --store's index.pkl (only for a store you made "
                                                    "and nobody else could change: unpickling runs code)")

    def validate(self, path: Any = "<config>") -> None:
        if not 0 < self.dev_fraction < 1:
            raise ConfigError(f"must be in (0, 1), not {self.dev_fraction}", path=path,
                              field=f"{self.TABLE}.dev_fraction")
        if not self.train and not self.index_corpus and not self.store:
            raise ConfigError("give the index's chunks (index_corpus) or questions about them (train)", path=path,
                              field=f"{self.TABLE}.index_corpus")
        mix = self.mix()
        if any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in mix.values()):
            raise ConfigError("must map question generators to a number of pseudo-queries per chunk (>= 0)",
                              path=path, field=f"{self.TABLE}.pseudo_queries")

    def mix(self) -> dict[str, int]:
        from embtune_core.adapters.pseudo_queries import DEFAULT_MIX

        chosen = dict(DEFAULT_MIX) if self.pseudo_queries is None else dict(self.pseudo_queries)
        return {name: count for name, count in chosen.items() if count}


def embed_corpus(encoder: Any, texts: list[str], cache: Any) -> np.ndarray:
    """The vectors an index holds for ``texts``: the encoder's document vectors through the cache, or the
    mean of their windows when the encoder reads long documents whole (``document_windows = "mean"``)."""
    from embtune_core.encoders.long_documents import WindowedEncoder, pool

    if isinstance(encoder, WindowedEncoder):
        if encoder.mode != "mean":
            raise ConfigError("an index tuning holds one vector per document: use document windows off or mean",
                              field="document_windows")
        windows = encoder.windows(texts)
        return pool(np.asarray(cache.embed(encoder.base, windows.texts, kind="document"), np.float32), windows)
    return np.asarray(cache.embed(encoder, texts, kind="document"), dtype=np.float32)


def embed_queries(encoder: Any, texts: list[str], cache: Any, adapter: Any = None) -> np.ndarray:
    """Query vectors as they are served: the encoder's (cached), through ``adapter`` when given."""
    from embtune_core.encoders.long_documents import WindowedEncoder
    from embtune_core.scoring.evaluation import apply_adapter

    base = encoder.base if isinstance(encoder, WindowedEncoder) else encoder
    vectors = np.asarray(cache.embed(base, texts, kind="query"), dtype=np.float32)
    return apply_adapter(adapter, vectors) if adapter is not None and len(texts) else vectors


def _answers(dataset: QADataset, position: dict[str, int]) -> tuple[list[str], list[list[int]], int]:
    """The dataset's queries that have a relevant chunk in the index, with those chunks' positions."""
    texts, answers, outside = [], [], 0
    for query_id, text in dataset.queries.items():
        found = [position[c] for c in dataset.relevant_docs.get(query_id, ()) if c in position]
        if found:
            texts.append(text)
            answers.append(sorted(set(found)))
        else:
            outside += 1
    return texts, answers, outside


def tune_stored_index(settings: IndexTuningSettings, *, encoder: Any = None, corpus: dict[str, str] | None = None,
                      train: QADataset | None = None, dev: QADataset | None = None, adapter: Any = None,
                      cache: Any = None, exclude_questions: Iterable[str] = (), output_dir: str | Path | None = None,
                      doc_vectors: np.ndarray | None = None, echo=print):
    """Tune the index's vectors (module docstring) and save the result to ``output_dir`` (default
    ``settings.out``). Objects given as arguments win over the paths in ``settings`` (the pipeline
    passes its own); ``doc_vectors`` (aligned with ``corpus``) are the index's stored vectors, read
    instead of embedding the chunks. Returns the :class:`~embtune_core.retrieval.index_tuning.TunedIndex`."""
    from embtune_core.adapters.pseudo_queries import index_pseudo_queries, without_questions
    from embtune_core.data.dataset import load_any, load_corpora
    from embtune_core.encoders.embedding_cache import EmbeddingCache
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_core.encoders.models import DEFAULT_MODEL
    from embtune_core.plugins import get_registry

    if cache is None:
        cache = EmbeddingCache(settings.cache_dir) if settings.cache_dir else EmbeddingCache()
    if encoder is None:
        options: dict[str, Any] = {"document_windows": None if settings.document_windows == "off"
                                   else settings.document_windows}
        if settings.max_seq_length:
            options["max_seq_length"] = settings.max_seq_length
        if settings.batch_size:
            options["batch_size"] = settings.batch_size
        encoder = encoder_from_spec(settings.encoder or DEFAULT_MODEL, **options)
    if adapter is None and settings.adapter:
        from embtune_core.adapters.adapter_io import load_adapter

        adapter = load_adapter(settings.adapter)
        adapter.check_base(getattr(encoder, "base", encoder))
    if train is None and settings.train:
        train = load_any(settings.train, split="train")
    if dev is None and settings.dev:
        dev = load_any(settings.dev, split="dev")
    if corpus is None:
        corpus = load_corpora(settings.index_corpus) if settings.index_corpus else dict(train.corpus)
    if not corpus:
        raise DatasetError("the index holds no chunks", field="index_corpus")
    doc_ids, doc_texts = list(corpus), list(corpus.values())
    position = {doc_id: i for i, doc_id in enumerate(doc_ids)}
    excluded = set(exclude_questions)

    texts: list[str] = []
    answers: list[list[int]] = []
    counts: dict[str, Any] = {}
    if train is not None:
        kept = train.subset([q for q, t in train.queries.items() if t not in excluded])
        real, real_answers, outside = _answers(kept, position)
        texts += real
        answers += real_answers
        counts.update(questions=len(real), questions_outside_index=outside,
                      questions_excluded=len(train.queries) - len(kept.queries))
        if outside:
            echo(f"  {outside} training question(s) have no relevant chunk in this index: they cannot tune it")
    mix = settings.mix()
    if mix:
        pseudo = index_pseudo_queries(corpus, mix=mix, seed=settings.seed)
        pseudo, dropped = without_questions(pseudo, excluded | ({*dev.queries.values()} if dev else set()),
                                            what="held-out")
        made, made_answers, _ = _answers(pseudo, position)
        texts += made
        answers += made_answers
        counts.update(pseudo_queries=len(made), pseudo_queries_mix=mix, pseudo_queries_dropped_as_held_out=dropped)
    if not texts:
        raise DatasetError("no training query has a relevant chunk in the index, and no pseudo-queries were asked "
                           "for: nothing to tune on", field="train")
    dev_texts, dev_answers = ([], [])
    if dev is not None:
        dev_texts, dev_answers, _ = _answers(dev.subset([q for q, t in dev.queries.items() if t not in excluded]),
                                             position)
        if not dev_texts:
            raise DatasetError("no held-out question has a relevant chunk in the index", field="dev")
    echo(f"  tuning {len(doc_ids)} chunk vectors on {len(texts)} queries"
         + (f", bound chosen on {len(dev_texts)} held-out questions" if dev_texts else
            f", bound chosen on {settings.dev_fraction:.0%} of them held out"))
    if doc_vectors is None:
        doc_vectors = embed_corpus(encoder, doc_texts, cache)
    elif len(doc_vectors) != len(doc_ids):
        raise DatasetError(f"{len(doc_vectors)} stored vectors for {len(doc_ids)} chunks", field="store")
    query_vectors = embed_queries(encoder, texts, cache, adapter)
    dev_vectors = embed_queries(encoder, dev_texts, cache, adapter) if dev_texts else None
    options = {"seed": settings.seed, "dev_fraction": settings.dev_fraction}
    if settings.gammas is not None:
        options["gammas"] = settings.gammas
    tuner = get_registry().create("index_tuners", settings.tuner, **options)
    tuned = tuner.tune(doc_ids, doc_texts, doc_vectors, query_vectors, answers, dev_vectors,
                       dev_answers if dev_texts else None, encoder_identity=str(encoder.identity),
                       adapter_fingerprint=getattr(adapter, "fingerprint", None) if adapter is not None else None,
                       record={"tuner": settings.tuner, "queries": counts})
    out = output_dir or settings.out
    if out:
        tuned.save(out)
    selection = tuned.config.get("selection", {})
    echo(f"  gamma {tuned.config.get('gamma')}: {selection.get('metric')} on held-out queries "
         f"{selection.get('untuned', 0):.4f} untuned -> {selection.get('chosen', 0):.4f}; "
         f"{tuned.config.get('documents_moved')} of {len(doc_ids)} vectors moved")
    return tuned
