"""Dataset building and mining as library calls: ``embtune build-dataset``, ``embtune mine`` and the
pipeline's chunk, generate, split and mine stages all call these, so they cannot drift apart.

* :func:`chunk_documents` -- files and folders -> documents -> chunks (a ``chunkers`` plugin);
* :func:`generate_questions` -- chunks -> a :class:`~embtune_core.data.dataset.QADataset` (a
  ``question_generators`` plugin, journalled in ``work_dir`` so an interrupted call resumes);
* :func:`split_dataset` and :func:`write_dataset_split` -- whole ``split_by`` units (source
  document, page or chunk) to one side (:class:`~embtune_core.settings.SplitSettings`), written
  after the leakage check;
* :func:`mine_negatives` -- hard negatives from a ``negative_miners`` plugin.

A plugin is named with its options by a :class:`~embtune_core.settings.PluginTable`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embtune_core.data.dataset import QADataset
from embtune_core.data.documents import Chunk, Document
from embtune_core.settings import PluginTable, SplitSettings


@dataclass
class Chunked:
    documents: list[Document]
    chunks: list[Chunk]
    skipped: list[tuple[str, str]]  # (path, reason) of files skipped with skip_bad


def chunk_documents(paths: Sequence[str | Path], chunker: PluginTable, *, skip_bad: bool = False,
                    registry: Any = None) -> Chunked:
    """Load every file under ``paths`` and chunk it; raises InputError for an unreadable file unless
    ``skip_bad`` (then it is listed in ``skipped``)."""
    from embtune_core.data.loading import load_documents
    from embtune_core.plugins import get_registry

    registry = registry or get_registry()
    chunk_maker = registry.create("chunkers", chunker.name, **chunker.options)
    documents, skipped = load_documents(list(paths), skip_bad=skip_bad, registry=registry)
    return Chunked(documents, chunk_maker.chunk(documents), skipped)


def generate_questions(chunks: list[Chunk], generator: PluginTable, *, work_dir: Path | None = None
                       ) -> tuple[QADataset, dict[str, Any]]:
    """(dataset, the generator's report: token usage, calls, resumed calls).

    Raises ConfigError (field ``generator``) when no chunk gave a question: every later stage would
    fail on an empty dataset with a message far from the cause (ICT needs chunks of two sentences or more).
    """
    from embtune_core.errors import ConfigError
    from embtune_core.plugins import get_registry

    maker = get_registry().create("question_generators", generator.name, **generator.options)
    dataset = maker.generate(chunks, work_dir=work_dir)
    if not dataset.queries:
        hint = " (ICT takes a sentence as the query and needs chunks of two sentences or more: use a larger " \
               "chunk_size)" if generator.name == "ict" else ""
        report = dict(getattr(maker, "last_report", None) or {})
        if report.get("failure_examples"):
            hint = f" ({report.get('failed_chunks')} chunks without a usable reply, e.g. {report['failure_examples'][0]})"
        raise ConfigError(f"the {generator.name} generator produced no queries from {len(chunks)} chunks{hint}",
                          field="generator")
    return dataset, dict(getattr(maker, "last_report", None) or {})


def split_dataset(dataset: QADataset, settings: SplitSettings, *, seed: int = 0
                  ) -> tuple[QADataset, QADataset | None]:
    """(train, val); ``val`` is None when ``val_fraction`` is 0. ``settings.seed`` wins over ``seed``."""
    from embtune_core.data.splitting import split_by_source

    if settings.val_fraction <= 0:
        return dataset, None
    return split_by_source(dataset, val_fraction=float(settings.val_fraction),
                           seed=int(settings.seed if settings.seed is not None else seed), by=settings.split_by)


def write_dataset_split(train: QADataset, val: QADataset | None, train_path: Path, val_path: Path | None,
                        settings: SplitSettings) -> None:
    """Write both sides atomically after the leakage check (a shared source is leakage only when the
    split keeps whole sources apart)."""
    from embtune_core.data.splitting import write_split

    write_split(train, val, train_path, val_path if val is not None else None,
                allow_shared_sources=settings.split_by != "source")


def mine_negatives(dataset: QADataset, miner: PluginTable, encoder: Any = None) -> tuple[QADataset, dict[str, Any]]:
    """(dataset with ``negatives``, the miner's report); ``encoder`` is an encoder or a spec
    (default: ``miner.encoder``)."""
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_core.plugins import get_registry

    maker = get_registry().create("negative_miners", miner.name, **miner.options)
    encoder = encoder if encoder is not None else miner.encoder
    if isinstance(encoder, str):
        encoder = encoder_from_spec(encoder)
    mined = maker.mine(dataset, encoder)
    return mined, dict(getattr(maker, "last_report", {}) or {})
