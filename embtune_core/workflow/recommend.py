"""Choose the retriever to deploy: every candidate a run built, compared on held-out training documents.

A run builds several retrievers -- the base model, BM25, a fine-tune, a query adapter, document-side
tuning (:mod:`embtune_core.retrieval.index_tuning`), windows over long chunks -- and each dense one can be fused
with BM25 (:mod:`embtune_core.retrieval.fusion`). Which wins depends on the documents (on the shared 10-K set
BM25 beats every single-vector model; on the quickstart's corpus the tuned models win), so
:func:`select` measures them all on the *dev* questions: questions about training documents held out
by source, which no candidate trained on (the fine-tune and the adapter chose their checkpoints on
them). The validation split plays no part: the report then measures the chosen system there, with the
paired test against the base model and against BM25, as an unbiased estimate of what was chosen.

For each candidate it records, beside NDCG@10 and hit@5 on dev: whether deploying it re-embeds the
corpus, whether it is one vector per chunk in one index (what DocsGPT's ``FaissStore`` serves
unchanged), the index's size in bytes, its query latency on this machine (the encoder on a fresh
batch of dev questions, uncached, plus the search) and what training it cost. The winner is the best
NDCG@10 on dev; a candidate within :data:`TIE_TOLERANCE` of it that is cheaper to deploy (no
re-embedding, a single index, then faster) wins instead, and the report says so.

Example::

    selection = select(candidates, dev, index_corpus, cache=cache)
    selection.winner.name, selection.rows[0]["ndcg@10"]
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from embtune_core.data.dataset import QADataset

log = logging.getLogger(__name__)

@dataclass
class RecommendSettings:
    """``[recommend]`` of ``embtune run`` (``enabled = false`` reports every system and recommends none)."""

    TABLE: ClassVar[str] = "recommend"
    latency: bool = True  # time each candidate's queries on this machine (a few seconds)
    sparse_dense: bool = True  # also a dense + BM25 system in one vector per chunk for each dense candidate
    probe: bool = True  # "will tuning help?" on the training questions before training (embtune_core.workflow.probe)


# Two candidates closer than this on dev NDCG@10 are a tie: the cheaper one to deploy is recommended.
TIE_TOLERANCE = 0.002
LATENCY_QUERIES = 16  # dev questions embedded uncached to time a query


@dataclass
class Candidate:
    """One retriever a run built. ``spec``: an ``embtune evaluate`` system spec (without the name)."""

    name: str
    spec: str
    reembed: bool = False  # deploying it re-embeds the corpus (a new model reads every chunk)
    single_index: bool = True  # one vector per chunk in one vector index (False: BM25 beside it, or windows)
    training: dict[str, Any] = field(default_factory=dict)  # what making it cost (seconds, peak memory)
    artefacts: dict[str, str] = field(default_factory=dict)  # model / adapter / index folders
    fusion: Any = None  # a hybrid's Fusion once chosen

    @property
    def lexical(self) -> bool:
        return self.spec.strip().lower() in ("bm25", "lexical:bm25")

    @property
    def hybrid(self) -> bool:
        return self.spec.startswith("hybrid:")

    def deploy_cost(self) -> tuple[int, int, int]:
        """Sort key, cheapest first: no re-embedding, then a single index, then fewer parts to serve."""
        parts = sum(1 for part in ("+adapter:", "+index:", "+lexical:", "+windows:") if part in self.spec) \
            + int(self.hybrid)
        return (int(self.reembed), int(not self.single_index), parts)


def hybrid_of(candidate: Candidate) -> Candidate:
    """``candidate`` fused with BM25 (the fusion is chosen by :func:`select`)."""
    return Candidate(f"hybrid-{candidate.name}", f"hybrid:{candidate.spec}", reembed=candidate.reembed,
                     single_index=False, training=dict(candidate.training), artefacts=dict(candidate.artefacts))


@dataclass
class Selection:
    """The candidates measured on dev, best first, and the recommended one."""

    rows: list[dict[str, Any]]
    winner: Candidate
    best_single_index: Candidate | None
    dev_queries: int
    corpus: int
    reason: str
    candidates: list[Candidate]

    def to_json(self) -> dict[str, Any]:
        return {"winner": self.winner.name, "winner_spec": self.system_spec(self.winner),
                "best_single_index": self.best_single_index.name if self.best_single_index else None,
                "best_single_index_spec": self.system_spec(self.best_single_index) if self.best_single_index else None,
                "reason": self.reason, "dev_queries": self.dev_queries, "corpus": self.corpus, "rows": self.rows}

    def system_spec(self, candidate: Candidate) -> str:
        """The candidate's evaluate spec, a hybrid's chosen fusion included."""
        return next(r["spec"] for r in self.rows if r["name"] == candidate.name)


def _latency(system: Any, texts: list[str], corpus_emb: np.ndarray | None, bm25: Any, sparse: Any = None) -> float:
    """Milliseconds per query on this machine: encode ``texts`` uncached (dense), search the index, BM25 when
    fused (a sparse-dense system also builds the query's BM25 part)."""
    from embtune_core.encoders.long_documents import WindowedEncoder
    from embtune_core.retrieval.search import exact_search
    from embtune_core.scoring.evaluation import apply_adapter

    total = 0.0
    if not system.lexical:
        encoder = system.encoder.base if isinstance(system.encoder, WindowedEncoder) else system.encoder
        started = time.perf_counter()
        queries = np.asarray(encoder.encode_queries(texts), dtype=np.float32)
        if system.adapter is not None:
            queries = apply_adapter(system.adapter, queries)
        if sparse is not None:
            queries = sparse.compose_queries(queries, texts)
        if corpus_emb is not None:
            exact_search(queries, corpus_emb, min(10, len(corpus_emb)))
        total += time.perf_counter() - started
    if system.lexical or system.fusion:
        started = time.perf_counter()
        bm25.search(texts, 10)
        total += time.perf_counter() - started
    return 1000.0 * total / max(1, len(texts))


def _bm25_bytes(index: Any) -> int:
    scores = getattr(index.retriever, "scores", {}) or {}
    return int(sum(getattr(v, "nbytes", 0) for v in scores.values())) + int(
        sum(len(k) + 8 for k in (getattr(index.retriever, "vocab_dict", {}) or {})))


def _row(name: str, per_query: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"name": name, "ndcg@10": float(per_query["ndcg@10"].mean()),
            "hit_rate@5": float(per_query["hit_rate@5"].mean())}


def select(candidates: Sequence[Candidate], dev: QADataset, index_corpus: dict[str, str] | None = None, *,
           cache: Any = None, settings: Any = None, echo=print, measure_latency: bool = True,
           work_dir: str | Path | None = None, sparse_dense: bool = True,
           encoder_options: dict[str, Any] | None = None) -> Selection:
    """Measure ``candidates`` on ``dev`` (its questions searched over its corpus plus ``index_corpus``),
    choose each hybrid's fusion there, add a sparse-dense system for each dense candidate (BM25 in the same
    vector, :mod:`embtune_core.retrieval.sparse_dense`; its folder under ``work_dir``), and recommend one (module
    docstring). Every row names its evaluate spec (``spec``), fusion and folders included."""
    from embtune_core.retrieval.fusion import choose_fusion, fuse
    from embtune_core.retrieval.lexical import BM25Index, BM25Spec
    from embtune_core.retrieval.systems import build_system, parse_system
    from embtune_core.scoring import metrics as M
    from embtune_core.scoring.evaluation import (
        MetricSettings,
        System,
        embed_system,
        evaluate_systems,
        score_ranking,
    )
    from embtune_core.settings import EvaluateSettings

    settings = settings or EvaluateSettings()
    candidates = list(candidates)
    plain = [c for c in candidates if not c.hybrid]
    systems = {c.name: build_system(parse_system(f"{c.name}={c.spec}"), settings, encoder_options=encoder_options)
               for c in plain}
    fusion_bm25 = "bm25 (for fusion)"
    if not any(c.lexical for c in plain):
        systems[fusion_bm25] = System(fusion_bm25, BM25Spec(), spec="bm25")
    evaluation = evaluate_systems(list(systems.values()), dev, settings=MetricSettings(hit_rate_at=(5,)),
                                  dataset_name="dev", cache=cache, progress_bar=False, n_resamples=1,
                                  n_permutations=1, extra_corpus=index_corpus or None)
    task = evaluation.task
    full = {r.name: r.dims[max(r.dims)] for r in evaluation.systems}
    bm25 = next(full[r.name] for r in evaluation.systems if r.dimension == 0)
    rows = {c.name: {**_row(c.name, full[c.name].per_query), "spec": c.spec} for c in plain}
    metric_settings = MetricSettings(hit_rate_at=(5,))
    depth = task.search_depth(metric_settings.depth)

    def scored(indices: np.ndarray) -> dict[str, np.ndarray]:
        """The evaluation's own per-query scores of a ranking (graded judgements and own ids included)."""
        return score_ranking(indices, None, task, 0, metric_settings).per_query

    for candidate in [c for c in candidates if c.hybrid]:
        dense = full[candidate.name.removeprefix("hybrid-")]
        choice = choose_fusion(dense.ranking.scores, dense.ranking.indices, bm25.ranking.scores,
                               bm25.ranking.indices, score=lambda idx: float(scored(idx)["ndcg@10"].mean()),
                               top=depth)
        candidate.fusion = choice.fusion
        _, fused = fuse(dense.ranking.scores, dense.ranking.indices, bm25.ranking.scores, bm25.ranking.indices,
                        choice.fusion, top=depth)
        rows[candidate.name] = {**_row(candidate.name, scored(fused)), "fusion": choice.fusion.spec(),
                                "fusion_untuned_ndcg@10": choice.untuned, "fusions_tried": len(choice.scores),
                                "spec": f"{candidate.spec}+fusion:{choice.fusion.spec()}"}
    vectors = {}
    for candidate in plain:
        if not candidate.lexical:
            query_emb, corpus_emb, windows = embed_system(systems[candidate.name], task, cache=cache)
            vectors[candidate.name] = (query_emb, corpus_emb, windows)
    sparse_of: dict[str, Any] = {}
    if sparse_dense and work_dir is not None:
        from embtune_core.retrieval.sparse_dense import fit_sparse_dense

        for candidate in [c for c in plain if not c.lexical]:
            query_emb, corpus_emb, windows = vectors[candidate.name]
            if windows is not None and getattr(systems[candidate.name].encoder, "mode", None) == "max":
                continue  # one vector per window: not one per chunk
            system = systems[candidate.name]
            encoder, record = fit_sparse_dense(system.encoder, task.corpus_texts, query_emb, corpus_emb,
                                               task.query_texts,
                                               score=lambda order: float(scored(order)["ndcg@10"].mean()))
            name = f"sparse-dense-{candidate.name}"
            folder = encoder.save(Path(work_dir) / name)
            sparse_of[name] = encoder
            made = Candidate(name, f"{candidate.spec}+lexical:{folder}", reembed=True, single_index=True,
                             training=dict(candidate.training), artefacts={**candidate.artefacts, "lexical": str(folder)})
            candidates.append(made)
            order = M.rank_scores(encoder.compose_queries(query_emb, task.query_texts)
                                  @ encoder.compose_documents(corpus_emb, task.corpus_texts).T, depth)
            rows[name] = {**_row(name, scored(order)), "spec": made.spec,
                          "sparse_dense": {k: v for k, v in record.items() if k != "weights_tried"},
                          "weights_tried": record["weights_tried"]}
    by_name = {c.name: c for c in candidates}
    # Costs: index size and query latency on this machine.
    bm25_index = BM25Index(task.corpus_texts)
    sample = list(task.query_texts[:LATENCY_QUERIES])
    for name, row in rows.items():
        candidate = by_name[name]
        dense_name = name.removeprefix("hybrid-") if candidate.hybrid else name
        index_bytes = 0
        corpus_emb = None
        if name in sparse_of:
            base_name = name.removeprefix("sparse-dense-")
            corpus_emb = sparse_of[name].compose_documents(vectors[base_name][1], task.corpus_texts)
        elif not candidate.lexical:
            corpus_emb = vectors[dense_name][1]
        if corpus_emb is not None:
            index_bytes += int(corpus_emb.nbytes)
        if candidate.lexical or candidate.hybrid:
            index_bytes += _bm25_bytes(bm25_index)
        windows = vectors.get(dense_name, (None, None, None))[2]
        if windows is not None and "+windows:max" in candidate.spec:
            index_bytes = int(len(windows.texts) * corpus_emb.shape[1] * 4) + (
                _bm25_bytes(bm25_index) if candidate.hybrid else 0)  # one vector per window
        row.update(index_bytes=index_bytes, reembed=candidate.reembed, single_index=candidate.single_index,
                   training=candidate.training)
        if measure_latency:
            if candidate.lexical:
                probe = systems.get(name) or systems[fusion_bm25]
            else:
                from dataclasses import replace

                base_name = name.removeprefix("sparse-dense-") if name in sparse_of else dense_name
                probe = replace(systems[base_name], fusion=candidate.fusion) if candidate.hybrid else systems[base_name]
            row["query_ms"] = round(_latency(probe, sample, corpus_emb, bm25_index, sparse_of.get(name)), 2)
    for built, row in enumerate(rows.values()):
        row["built"] = built  # the order the run made them in: the report lists them so
    ordered = sorted(rows.values(), key=lambda r: -r["ndcg@10"])
    best = ordered[0]
    close = [r for r in ordered if best["ndcg@10"] - r["ndcg@10"] <= TIE_TOLERANCE]
    chosen = min(close, key=lambda r: (by_name[r["name"]].deploy_cost(), r.get("query_ms", 0.0), -r["ndcg@10"]))
    reason = (f"the best NDCG@10 there, {chosen['ndcg@10']:.4f}" if chosen is best else
              f"within {TIE_TOLERANCE} NDCG@10 of the best there ({chosen['ndcg@10']:.4f} vs {best['name']}'s "
              f"{best['ndcg@10']:.4f}) and simpler to deploy")
    singles = [r for r in ordered if by_name[r["name"]].single_index and not by_name[r["name"]].lexical]
    if by_name[chosen["name"]].single_index and not by_name[chosen["name"]].lexical:
        singles.insert(0, chosen)  # the recommended system serves a single index itself
    selection = Selection(ordered, by_name[chosen["name"]], by_name[singles[0]["name"]] if singles else None,
                          len(task.query_ids), len(task.corpus_ids), reason, candidates)
    for row in ordered:
        echo(f"  {row['name']:<32} dev NDCG@10 {row['ndcg@10']:.4f}  hit@5 {row['hit_rate@5']:.4f}"
             + (f"  {row['query_ms']:.1f} ms/query" if "query_ms" in row else "")
             + (f"  fusion {row['fusion']}" if "fusion" in row else ""))
    echo(f"  recommended: {selection.winner.name} ({reason})")
    return selection


def candidate_from_row(row: dict[str, Any]) -> Candidate:
    """A candidate as :func:`select` recorded it (its spec names every folder it needs)."""
    from embtune_core.retrieval.fusion import Fusion
    from embtune_core.retrieval.systems import parse_system

    spec = parse_system(f"x={row['spec']}")
    artefacts: dict[str, str] = {}
    model = spec.encoder_spec.removeprefix("st:")
    if not spec.lexical and spec.encoder_spec.startswith("st:") and Path(model).is_dir():
        artefacts["model"] = model
    for kind, folder in (("adapter", spec.adapter_dir), ("index", spec.index_dir), ("lexical", spec.lexical_dir)):
        if folder:
            artefacts[kind] = folder
    candidate = Candidate(row["name"], row["spec"].split("+fusion:")[0], reembed=bool(row.get("reembed")),
                          single_index=bool(row.get("single_index")), training=row.get("training") or {},
                          artefacts=artefacts)
    if row.get("fusion"):
        candidate.fusion = Fusion.parse(row["fusion"])
    return candidate


def recommendation_summary(evaluation: Any, selection: dict[str, Any]) -> dict[str, Any]:
    """The recommended system's figures on the validation split against the base model and BM25: mean
    NDCG@10 and hit@5, the paired difference with its CI and the randomisation test's p, at the recommended
    system's full width (BM25 has none: it pairs at every width). Holm's correction over these comparisons
    (the recommendation was fixed on dev, before the validation split was read). Also the best
    single-index system's, when it is another."""
    from embtune_core.reporting.report_verdict import holm
    from embtune_core.scoring import stats

    results = {s.name: s for s in evaluation.systems}

    def full(name: str, dim: int | None = None) -> Any:
        result = results[name]
        return result.dims[dim if dim in result.dims else max(result.dims)]

    def versus(name: str) -> dict[str, Any]:
        winner = results[name]
        dim = max(winner.dims)
        out: dict[str, Any] = {"system": name, "dim": dim if winner.dimension else None, "metrics": {}}
        for metric in ("ndcg@10", "hit_rate@5"):
            scores = full(name, dim).per_query.get(metric)
            if scores is None:
                continue
            entry: dict[str, Any] = {"mean": float(scores.mean())}
            for other in ("base", "bm25"):
                if other not in results or other == name:
                    continue
                reference = full(other, dim).per_query[metric]
                compared = stats.compare(reference, scores, confidence=evaluation.confidence,
                                         n_resamples=evaluation.n_resamples, n_permutations=evaluation.n_permutations,
                                         seed=evaluation.seed)
                entry[f"vs_{other}"] = {"mean": float(reference.mean()), "difference": compared["difference"],
                                        "ci_low": float(compared["ci_low"]), "ci_high": float(compared["ci_high"]),
                                        "p": compared["p_randomization"]}
            out["metrics"][metric] = entry
        tests = [(m, o) for m, e in out["metrics"].items() for o in ("vs_base", "vs_bm25") if o in e]
        for (metric, other), adjusted in zip(tests, holm([out["metrics"][m][o]["p"] for m, o in tests])):
            out["metrics"][metric][other]["p_holm"] = adjusted
        return out

    summary = {"dev": {k: selection.get(k) for k in ("reason", "dev_queries", "corpus")},
               "recommended": versus(selection["winner"]), "candidates": selection.get("rows", []),
               "alpha": round(1.0 - evaluation.confidence, 6)}
    single = selection.get("best_single_index")
    if single and single != selection["winner"] and single in results:
        summary["best_single_index"] = versus(single)
    return summary

