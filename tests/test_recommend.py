"""The recommendation (embtune_core.workflow.recommend): every candidate's dev figure equals what `embtune evaluate`
measures for the spec it records (hybrids with their chosen fusion, sparse-dense with its folder), the winner
is the best (or an equal that is simpler to deploy), and the deploy folder serves exactly that system."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.retrieval.systems import build_system, parse_system
from embtune_core.scoring.evaluation import MetricSettings, evaluate_systems
from embtune_core.workflow.recommend import Candidate, candidate_from_row, hybrid_of, select


@pytest.fixture()
def dev():
    from test_evaluation import small_dataset

    return small_dataset()


def test_dev_figures_are_the_evaluated_figures_of_the_recorded_specs(tiny_model_dir, tmp_path, dev):
    cache = EmbeddingCache(tmp_path / "cache")
    base = Candidate("base", f"model:{tiny_model_dir}")
    candidates = [base, Candidate("bm25", "bm25", single_index=False), hybrid_of(base)]
    selection = select(candidates, dev, cache=cache, work_dir=tmp_path / "work", echo=lambda line: None)
    names = {row["name"] for row in selection.rows}
    assert names == {"base", "bm25", "hybrid-base", "sparse-dense-base"}
    for row in selection.rows:
        system = build_system(parse_system(f"{row['name']}={row['spec']}"))
        result = evaluate_systems([system], dev, settings=MetricSettings(hit_rate_at=(5,)), cache=cache,
                                  progress_bar=False, n_resamples=1, n_permutations=1).systems[0]
        per_query = result.dims[max(result.dims)].per_query
        assert row["ndcg@10"] == pytest.approx(float(per_query["ndcg@10"].mean()), abs=1e-9), row["name"]
        assert row["hit_rate@5"] == pytest.approx(float(per_query["hit_rate@5"].mean()), abs=1e-9), row["name"]
        assert row["index_bytes"] > 0 and row["query_ms"] >= 0
    best = max(r["ndcg@10"] for r in selection.rows)
    winner = next(r for r in selection.rows if r["name"] == selection.winner.name)
    assert winner["ndcg@10"] >= best - 0.002
    assert selection.best_single_index is not None and selection.best_single_index.single_index
    # a hybrid's row names its fusion, and candidate_from_row rebuilds it
    hybrid = next(r for r in selection.rows if r["name"] == "hybrid-base")
    assert "+fusion:" in hybrid["spec"] and candidate_from_row(hybrid).fusion is not None


def test_ties_go_to_the_simpler_system(tiny_model_dir, tmp_path, dev):
    # the same model twice, once with an identity adapter-free spec and once through windows that change nothing
    same = [Candidate("plain", f"model:{tiny_model_dir}"),
            Candidate("plain-windows", f"model:{tiny_model_dir}+windows:mean", reembed=True)]
    selection = select(same, dev, cache=EmbeddingCache(tmp_path / "c"), echo=lambda line: None, sparse_dense=False)
    rows = {r["name"]: r for r in selection.rows if r["name"] in ("plain", "plain-windows")}
    assert rows["plain"]["ndcg@10"] == pytest.approx(rows["plain-windows"]["ndcg@10"])
    assert selection.winner.name in ("plain", "bm25")


def test_deploy_folder_serves_the_recommended_system(tiny_model_dir, tmp_path, dev):
    pytest.importorskip("langchain_community")
    from embtune_core.publishing.deploy import deployed_encoder, write_deploy_folder
    from embtune_core.scoring.evaluation import RetrievalTask, embed_system

    cache = EmbeddingCache(tmp_path / "cache")
    base = Candidate("base", f"model:{tiny_model_dir}")
    selection = select([base, Candidate("bm25", "bm25", single_index=False)], dev, cache=cache,
                       work_dir=tmp_path / "work", echo=lambda line: None)
    sparse = next(r for r in selection.rows if r["name"] == "sparse-dense-base")
    selection.winner = candidate_from_row(sparse)  # serve the sparse-dense system whatever won
    record = selection.to_json()
    folder = write_deploy_folder(tmp_path / "deploy", record, [candidate_from_row(r) for r in selection.rows],
                                 base_model=tiny_model_dir, echo=lambda line: None)["folder"]
    (tmp_path / "work").rename(tmp_path / "moved")  # the deploy folder holds its own copies
    served = deployed_encoder(folder)
    task = RetrievalTask.from_dataset(dev)
    system = build_system(parse_system(f"x={sparse['spec'].replace(str(tmp_path / 'work'), str(tmp_path / 'moved'))}"))
    queries, corpus, _ = embed_system(system, task, cache=cache)
    np.testing.assert_allclose(served.encode_queries(task.query_texts), queries, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(served.encode_documents(task.corpus_texts), corpus, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "deploy" / "recommendation.json").read_text())["recommended"] == "sparse-dense-base"
    assert "deployed_retriever" in (tmp_path / "deploy" / "DEPLOY.md").read_text()
