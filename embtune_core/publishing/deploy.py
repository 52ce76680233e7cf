"""The deploy folder of a run: the recommended retriever's artefacts, copied, and the lines that serve it.

``<run>/deploy/`` is rewritten atomically at the end of every ``embtune run`` from the stages' outputs::

    deploy/recommendation.json   the winner, the best single-index system, every candidate's dev figures
                                 and costs, and the validation figures against the base model and BM25
    deploy/DEPLOY.md             how to serve it in LangChain, LlamaIndex and DocsGPT (the exact lines)
    deploy/model/                the fine-tuned model, when the system uses one
    deploy/adapter/              the query adapter, when it uses one
    deploy/index-tuning/         the document vector deltas (NUDGE-N), when it uses them
    deploy/fusion.json           the BM25 fusion, when it is a hybrid
    deploy/single-index/         the same for the best single-index system when that is another
                                 (what DocsGPT's FaissStore serves unchanged)

Every path inside is relative, so the folder can be moved, zipped or copied to another machine.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from embtune_core.errors import InputError
from embtune_core.runtime import atomic


def _copy_parts(candidate: Any, folder: Path) -> dict[str, str]:
    parts = {}
    for kind, target in (("model", "model"), ("adapter", "adapter"), ("index", "index-tuning"),
                         ("lexical", "sparse-dense")):
        source = candidate.artefacts.get(kind)
        if source:
            shutil.copytree(source, folder / target)
            parts[kind] = target
    if candidate.hybrid and candidate.fusion is not None:
        atomic.write_json(folder / "fusion.json", {**candidate.fusion.to_json(), "spec": candidate.fusion.spec()})
        parts["fusion"] = "fusion.json"
    return parts


def serving_lines(candidate: Any, *, prefix: str = "deploy") -> str:
    """Markdown with the lines that serve ``candidate`` from the deploy folder ``prefix``."""
    lines = ["```python",
             "from embtune_integrations.deploy import deployed_embeddings, deployed_retriever",
             f'retriever = deployed_retriever("{prefix}", documents, k=5)   # documents: your chunks (LangChain Documents)',
             f'embeddings = deployed_embeddings("{prefix}")   # the LangChain Embeddings alone, for your own store',
             "```", ""]
    if candidate.lexical:
        lines += [("BM25 needs no embeddings: `deployed_retriever` is `embtune_integrations.hybrid.BM25Retriever`, "
                   "scoring as the report's `bm25` row.")]
        return "\n".join(lines) + "\n"
    lines += [(f'LlamaIndex: `Settings.embed_model = EmbtuneLlamaIndexEmbedding(deployed_encoder("{prefix}"))` '
               "(`embtune_integrations.llamaindex`, `embtune_core.publishing.deploy.deployed_encoder`)"
               + ("; the BM25 fusion itself is served by `deployed_retriever`." if candidate.hybrid else ".")), ""]
    if candidate.hybrid:
        lines += [("DocsGPT: its FaissStore searches one vector index and cannot fuse BM25 beside it; deploy the best "
                   "single-index system (`single-index/` in this folder) there.")]
    else:
        lines += [("DocsGPT: install embtune and its start-up hook (README: Integrations), mount this folder at "
                   "`/app/deploy`, set `EMBTUNE_DOCSGPT=1` and `EMBEDDINGS_NAME=embtune:/app/deploy`, and re-ingest "
                   "your sources (the stored vectors are the recommended system's).")]
    if "+windows:max" in candidate.spec:
        lines += ["", ("It scores a chunk by its best window: serve it with "
                       "`embtune_integrations.multi_vector.window_retriever` (one vector per window).")]
    return "\n".join(lines) + "\n"


class SystemEncoder:
    """A deployed system as one encoder: the dense model (windows included), then
    :func:`embtune_core.scoring.evaluation.finish_vectors` (index tuning by text, query adapter, BM25 part) -- the
    same composition the evaluation measured. ``identity`` and ``dimension`` as any encoder's."""

    def __init__(self, system: Any):
        from embtune_core.retrieval.sparse_dense import SparseDenseEncoder

        self.system = system
        encoder = system.encoder
        self.dense = encoder.base if isinstance(encoder, SparseDenseEncoder) else encoder
        self.identity = str(system.identity)

    @property
    def dimension(self) -> int:
        return int(self.system.encoder.dimension)

    def encode_documents(self, texts):
        from embtune_core.scoring.evaluation import finish_vectors

        texts = list(texts)
        return finish_vectors(self.system, None, self.dense.encode_documents(texts), corpus_texts=texts)[1]

    def encode_queries(self, texts):
        from embtune_core.scoring.evaluation import finish_vectors

        texts = list(texts)
        return finish_vectors(self.system, self.dense.encode_queries(texts), None, query_texts=texts)[0]


def deployed_spec(folder: str | Path, *, single_index: bool = False) -> str:
    """The evaluate spec of the system in a deploy folder (its own copies of every part)."""
    folder = Path(folder)
    record = json.loads((folder / "recommendation.json").read_text(encoding="utf-8"))
    # The best single-index system is the recommended one when that is single-index itself.
    key = "single_index_parts" if single_index and not record.get("winner_single_index") else "parts"
    if key not in record:
        raise InputError("no single-index system was recommended (the candidates were BM25 and hybrids only)",
                         path=folder, field="single_index")
    parts = record.get(key) or {}
    spec = f"model:{folder / parts['model']}" if "model" in parts else f"model:{record['base_model']}"
    if record.get("lexical_only") and key == "parts":
        return "bm25"
    for kind, mark in (("adapter", "adapter"), ("index", "index"), ("lexical", "lexical")):
        if kind in parts:
            spec += f"+{mark}:{folder / parts[kind]}"
    if "fusion" in parts:
        spec = "hybrid:" + spec + "+fusion:" + json.loads((folder / parts["fusion"]).read_text(encoding="utf-8"))["spec"]
    return spec


def deployed_encoder(folder: str | Path, *, single_index: bool = False, **settings: Any) -> SystemEncoder:
    """The recommended (or best single-index) system of a deploy folder as one encoder (:class:`SystemEncoder`)."""
    from embtune_core.retrieval.systems import build_system, parse_system
    from embtune_core.settings import EvaluateSettings

    spec = parse_system(f"deployed={deployed_spec(folder, single_index=single_index)}")
    if spec.lexical:
        raise InputError("the recommended system is BM25: it has no embeddings (use deployed_retriever)",
                         path=folder, field="recommended")
    return SystemEncoder(build_system(spec, EvaluateSettings(**settings)))


def write_deploy_folder(folder: Path, selection: dict[str, Any], candidates: list[Any], *, base_model: str,
                        report: str | None = None, recorded: dict[str, Any] | None = None,
                        echo=print) -> dict[str, Any]:
    """Write ``folder`` (module docstring) for ``selection`` (:meth:`Selection.to_json`); returns
    ``{"folder", "sentence"}``. ``recorded``: the selection as ``recommendation.json`` keeps it (a run's
    stored copy, whose paths are relative to the run: the folder records no path of this machine)."""
    by_name = {c.name: c for c in candidates}
    winner = by_name[selection["winner"]]
    single = by_name.get(selection.get("best_single_index") or "")
    validation = None
    if report:
        data = json.loads(Path(report).read_text(encoding="utf-8"))
        validation = data.get("recommendation")
    with atomic.atomic_directory(folder) as staging:
        parts = _copy_parts(winner, staging)
        record = {"recommended": winner.name, "spec": (recorded or selection)["winner_spec"], "parts": parts,
                  "base_model": base_model, "lexical_only": winner.lexical,
                  "winner_single_index": winner.single_index and not winner.lexical,
                  "best_single_index": single.name if single else None, "selection": recorded or selection,
                  "validation": validation}
        text = [f"# Deploy: {winner.name}", "", selection["reason"] + ".", ""]
        if validation:
            from embtune_core.reporting.report_verdict import recommendation_sentence

            text += [recommendation_sentence(validation, code="`"), ""]
        text += ["## Serve it", "", serving_lines(winner)]
        if single is not None and single is not winner:
            (staging / "single-index").mkdir()
            single_parts = _copy_parts(single, staging / "single-index")
            record["single_index_parts"] = {k: f"single-index/{v}" for k, v in single_parts.items()}
            text += ["## The best single-index system (one vector per chunk: DocsGPT, any vector store)", "",
                     (f"`{single.name}`: `deployed_embeddings(\"deploy\", single_index=True)`; DocsGPT serves it "
                      "with `EMBEDDINGS_NAME=embtune:/app/deploy` (DocsGPT always gets the best single-index system)."),
                     ""]
        atomic.write_json(staging / "recommendation.json", record)
        atomic.write_text(staging / "DEPLOY.md", "\n".join(text))
    sentence = (validation and __import__("embtune_core.reporting.report_verdict", fromlist=["x"]).recommendation_sentence(
        validation)) or f"Recommended: {winner.name} ({selection['reason']})"
    echo(f"deploy folder: {folder} ({winner.name})")
    return {"folder": str(folder), "sentence": sentence}
