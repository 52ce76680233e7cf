"""``embtune tune-index``: tune an index's stored document vectors without re-embedding (NUDGE-N)."""

from __future__ import annotations

from embtune_core.commands import Sources, check_encoder, check_output_dir, check_plugin
from embtune_core.config import load_config, section
from embtune_core.errors import COMMAND_LINE, ConfigError, UsageError
from embtune_core.retrieval.tune_index import IndexTuningSettings

NAME = "tune-index"
HELP = "tune the stored vectors of an index (NUDGE-N): no model weights, no re-embedding"
DESCRIPTION = """Move the stored vector of each chunk of an index towards the queries it should answer, inside
a bound chosen on held-out queries (NUDGE-N, Zeighami et al., ICLR 2025): every vector stays unit length
and moves at most sqrt(gamma); a chunk without queries keeps its vector; gamma 0 (no change) is a
candidate, so on the held-out queries the tuned index never scores below the untuned one.

Queries: --train questions whose relevant chunks are in the index, and LLM-free pseudo-queries made
from every chunk's text (--pseudo-queries, default ict=5,crop=5; no question or label of the index
is needed). With --adapter the vectors move towards the queries as that adapter serves them. Works
on any encoder, an embeddings API included: only the chunks' existing vectors are read.

Writes --out (deltas.safetensors + index_tuning.json, no pickle). Evaluate it with
`embtune evaluate --system 'tuned=model:NAME+index:OUT'`; serve it in LangChain or DocsGPT with
embtune_integrations.tuned_index.tuned_faiss_store (README: Integrations). Settings may come from the
[index_tuning] table of --config (same names); flags win.

example:
  embtune tune-index --index-corpus uber.json --out out/uber-nudge
  embtune evaluate uber.json --system base=model:sentence-transformers/all-MiniLM-L6-v2 \\
      --system tuned=model:sentence-transformers/all-MiniLM-L6-v2+index:out/uber-nudge"""

SETTINGS = IndexTuningSettings  # every flag but --config is a field of it (tests/test_layout.py)
INVOCATION_FLAGS = ("config",)


def add_arguments(parser) -> None:
    from embtune_core.cli_fields import add_fields

    parser.add_argument("--config", help="TOML file whose [index_tuning] table holds these settings")
    add_fields(parser, IndexTuningSettings)


def build_settings(args) -> tuple[IndexTuningSettings, Sources]:
    """The settings from the command line over the [index_tuning] table, and where each came from."""
    from embtune_core.cli_fields import given
    from embtune_core.settings import from_table

    values: dict = {}
    sources = Sources(args.config, IndexTuningSettings.TABLE, origin=args.config or COMMAND_LINE)
    if args.config:
        values.update(section(load_config(args.config), IndexTuningSettings.TABLE, args.config))
        sources.config(values)
    flags = given(args, IndexTuningSettings)
    sources.command_line(args, flags)
    values.update(flags)
    try:
        return from_table(IndexTuningSettings, values, path=args.config or COMMAND_LINE), sources
    except ConfigError as exc:
        raise sources.blame(exc) from None


def run(args) -> int:
    settings, sources = build_settings(args)
    if not settings.out:
        raise UsageError("give the output folder", field="--out")
    from embtune_core.encoders.models import DEFAULT_MODEL

    check_encoder(settings.encoder or DEFAULT_MODEL, sources, "encoder")
    check_plugin("index_tuners", settings.tuner, sources, "tuner")
    check_output_dir(settings.out, "--out", replaces="index_tuning.json")
    from embtune_core.retrieval.tune_index import tune_stored_index
    from embtune_core.runtime.locking import hold, lock_path_for_output

    with hold(lock_path_for_output(settings.out), subject=settings.out, what="--out"):
        if settings.store:
            tuned = _tune_store(settings)
        else:
            tuned = tune_stored_index(settings)
    print(f"index tuning -> {settings.out}: gamma {tuned.config['gamma']}, "
          f"{tuned.config['documents_moved']} of {tuned.config['index_documents']} vectors moved")
    return 0


def _tune_store(settings: IndexTuningSettings):
    """``--store``: tune the chunks and vectors an existing store holds and write the tuned store to
    ``OUT/store`` in the store's own format (an embtune store, or LangChain's: index.pkl copied as is)."""
    from pathlib import Path

    from embtune_core.encoders.models import DEFAULT_MODEL
    from embtune_core.errors import InputError
    from embtune_core.retrieval.tune_index import tune_stored_index

    try:
        from embtune_integrations.faiss_store import MANIFEST, load_faiss_store, save_faiss_store
        from embtune_integrations.langchain import EmbtuneEmbeddings
        from embtune_integrations.tuned_index import store_corpus, tune_faiss_store, write_tuned_index_file
    except ImportError as exc:
        raise InputError(f"--store needs LangChain's FAISS store (pip install 'embtune[langchain,cpu]'): {exc}",
                         field="--store") from None
    folder = Path(settings.store)
    embeddings = EmbtuneEmbeddings(settings.encoder or DEFAULT_MODEL)
    store = load_faiss_store(folder, embeddings, allow_dangerous_deserialization=settings.allow_dangerous_deserialization,
                             use_gpu=False)
    ids, texts, vectors = store_corpus(store)
    tuned = tune_stored_index(settings, encoder=embeddings.base_encoder,
                              corpus=dict(zip(ids, texts)), doc_vectors=vectors)
    out = Path(settings.out) / "store"
    if (folder / MANIFEST).is_file():
        moved = tune_faiss_store(store, tuned)
        save_faiss_store(store, out)
    else:
        moved = write_tuned_index_file(folder, tuned, out, ids=ids, texts=texts)
    print(f"tuned store -> {out}: {moved} of {len(ids)} vectors moved (the same chunks, ids and files otherwise)")
    return tuned
