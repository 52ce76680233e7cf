"""The report's verdict, equal metrics, examples, stable pieces: wording follows the numbers, the
multiple-comparison correction is applied, examples list the right queries for a constructed ranking."""

from __future__ import annotations

import numpy as np
import pytest
from test_evaluation import HashingEncoder, small_dataset

from embtune_core.data.dataset import QADataset
from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.reporting.report import report_html, report_json, report_markdown
from embtune_core.reporting.report_examples import build_examples, pick
from embtune_core.reporting.report_verdict import comparisons, equal_metric_groups, holm, verdict
from embtune_core.scoring.evaluation import (
    Evaluation,
    MetricSettings,
    RetrievalTask,
    System,
    SystemResult,
    evaluate_systems,
    score_ranking,
)


def _data(rows: dict[str, dict[str, tuple[float, float | None, float | None]]], confidence: float = 0.95) -> dict:
    """A report JSON with ndcg@10 only: rows[system][dim] = (mean, difference vs baseline, p)."""
    systems = []
    for name, dims in rows.items():
        results = {}
        for dim, (mean, diff, p) in dims.items():
            versus = None if diff is None else {"difference": diff, "ci_low": diff - 0.05, "ci_high": diff + 0.05,
                                                "p_randomization": p, "p_ttest": p, "t_statistic": 1.0}
            results[dim] = {"ndcg@10": {"mean": mean, "ci_low": mean - 0.05, "ci_high": mean + 0.05,
                                        "vs_baseline": versus}}
        systems.append({"name": name, "spec": name, "identity": name, "dimension": 384, "results": results})
    return {"systems": systems, "settings": {"confidence": confidence}, "primary_metric": "ndcg@10"}


def test_holm_adjusts_step_down_and_stays_monotone():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])  # capped at 1 (and kept monotone)
    assert holm([]) == []


def test_verdict_names_the_best_system_its_gain_ci_correction_and_dimensions():
    data = _data({"base": {"384": (0.60, None, None), "64": (0.50, None, None)},
                  "tuned": {"384": (0.70, 0.10, 0.0001), "64": (0.52, 0.02, 0.30)}})
    lines = verdict(data)
    assert lines[0] == ("`tuned` is best on ndcg@10: 0.7000 at 384 dims, +0.1000 over the baseline `base` at the same "
                        "dimension (95% CI +0.0500 to +0.1500); this difference is significant after "
                        "Holm–Bonferroni correction over the 2 comparisons made on ndcg@10 (adjusted p = 0.0002, "
                        "α = 0.05).")
    assert "`tuned`: significantly better than `base` at 384 dims; not significantly different at 64 dims." in lines
    assert not any(line.startswith("No system is significantly better") for line in lines)


def test_verdict_says_when_no_system_is_significantly_better():
    data = _data({"base": {"384": (0.60, None, None)}, "tuned": {"384": (0.62, 0.02, 0.40)},
                  "other": {"384": (0.55, -0.05, 0.20)}})
    lines = verdict(data)
    assert "this difference is not significant" in lines[0]
    assert "No system is significantly better than the baseline `base` on ndcg@10 at any dimension after " \
           "Holm–Bonferroni correction." in lines
    assert "`other`: not significantly different at 384 dims." in lines


def test_correction_is_applied_uncorrected_significance_is_not_enough():
    # three comparisons each with p < 0.05: Holm multiplies the smallest by 3 (0.06), so none survives
    data = _data({"base": {"384": (0.60, None, None), "256": (0.58, None, None), "128": (0.55, None, None)},
                  "tuned": {"384": (0.63, 0.03, 0.02), "256": (0.61, 0.03, 0.03), "128": (0.58, 0.03, 0.04)}})
    rows = comparisons(data, "ndcg@10")
    assert [r["p"] for r in rows] == [0.02, 0.03, 0.04]
    assert [r["p_holm"] for r in rows] == pytest.approx([0.06, 0.06, 0.06])
    assert not any(r["significant"] for r in rows)
    lines = verdict(data)
    assert "not significant after Holm–Bonferroni correction over the 3 comparisons" in lines[0]
    assert "3 of 3 comparisons on ndcg@10 have an uncorrected p < 0.05 (paired randomisation test); 0 remain " \
           "significant after Holm–Bonferroni correction." in lines
    # with one comparison only, the same p = 0.02 is significant: the correction is what changed it
    single = _data({"base": {"384": (0.60, None, None)}, "tuned": {"384": (0.63, 0.03, 0.02)}})
    assert "this difference is significant" in verdict(single)[0]


def test_verdict_when_the_baseline_is_best_and_when_a_system_is_worse():
    data = _data({"base": {"384": (0.70, None, None)}, "worse": {"384": (0.50, -0.20, 0.0001)}})
    lines = verdict(data)
    assert lines[0].startswith("The baseline `base` is best on ndcg@10 (0.7000 at 384 dims)")
    assert "`worse`: significantly worse at 384 dims." in lines


def _one_relevant_dataset() -> QADataset:
    corpus = {f"d{i}": f"document {i} about topic{i} and shared words" for i in range(12)}
    queries = {f"q{i}": f"which document is about topic{i}" for i in range(12)}
    return QADataset(queries, corpus, {f"q{i}": [f"d{i}"] for i in range(12)})


def test_equal_metrics_are_found_in_the_data_and_shown_once(tmp_path):
    systems = [System("base", HashingEncoder(16), spec="h"), System("salted", HashingEncoder(16, salt="s"), spec="h2")]
    evaluation = evaluate_systems(systems, _one_relevant_dataset(), cache=EmbeddingCache(tmp_path), progress_bar=False,
                                  settings=MetricSettings(hit_rate_at=(1, 5)), n_resamples=50, n_permutations=50)
    data = report_json(evaluation)
    groups = equal_metric_groups(data)
    assert any({"accuracy@1", "hit_rate@1", "mrr@1", "recall@1"} <= set(g) for g in groups)
    assert any({"accuracy@5", "hit_rate@5", "recall@5"} <= set(g) for g in groups)
    markdown = report_markdown(data)
    assert "every query has exactly one relevant document" in markdown
    headline = markdown.split("## Headline metrics")[1].split("\n\n")[1].splitlines()[0]
    assert "recall@5" in headline and "hit_rate@5" not in headline and "accuracy@5" not in headline
    # several relevant documents per query: recall@5 and hit_rate@5 differ, so both stay
    multi = report_json(evaluate_systems(systems, small_dataset(), cache=EmbeddingCache(tmp_path),
                                         progress_bar=False, n_resamples=50, n_permutations=50))
    assert not any("recall@5" in g and "hit_rate@5" in g for g in equal_metric_groups(multi))


def test_pick_orders_gains_and_losses_and_skips_unchanged():
    up, down = pick(np.array([0.0, 0.5, -0.2, 0.1, -0.7, 0.5]), n=2)
    assert up == [1, 5] and down == [4, 2]


def test_examples_list_the_right_queries_for_a_constructed_ranking():
    texts = ["alpha chunk", "beta chunk", "gamma chunk", "delta chunk", "epsilon chunk"]
    dataset = QADataset({f"q{i}": f"question {i}" for i in range(4)}, {f"d{i}": t for i, t in enumerate(texts)},
                        {f"q{i}": [f"d{i}"] for i in range(4)})
    task = RetrievalTask.from_dataset(dataset)
    settings = MetricSettings()
    scores = np.tile(np.array([0.9, 0.8, 0.7, 0.6, 0.5], dtype=np.float32), (4, 1))
    # base finds q0 at rank 1, q1 at 2, q2 at 3, q3 at 4; tuned: q0 rank 3 (worse), q1 same,
    # q2 rank 1 (better), q3 rank 1 (better, but from rank 4: the biggest gain)
    base = np.array([[0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    tuned = np.array([[1, 2, 0, 3, 4], [0, 1, 2, 3, 4], [2, 0, 1, 3, 4], [3, 0, 1, 2, 4]])
    results = [SystemResult("base", "b", "b", 5, {5: score_ranking(base, scores, task, 5, settings)}),
               SystemResult("tuned", "t", "t", 5, {5: score_ranking(tuned, scores, task, 5, settings)})]
    evaluation = Evaluation("constructed", task, results, settings, n_resamples=20, n_permutations=20)
    examples = build_examples(evaluation)
    improved = [e["query_id"] for e in examples if e["direction"] == "improved"]
    regressed = [e["query_id"] for e in examples if e["direction"] == "regressed"]
    assert improved == ["q3", "q2"] and regressed == ["q0"]  # q1 did not change: never listed
    q3 = examples[0]
    assert q3["question"] == "question 3" and q3["relevant"] == ["delta chunk"]
    assert [(h["rank"], h["id"], h["relevant"]) for h in q3["top"]["tuned"]] == [(1, "d3", True), (2, "d0", False),
                                                                               (3, "d1", False)]
    assert [h["id"] for h in q3["top"]["base"]] == ["d0", "d1", "d2"]
    assert q3["top"]["base"][0]["score"] == pytest.approx(0.9)
    # and the page shows them, filterable without script
    evaluation.compute_statistics()
    page = report_html(report_json(evaluation))
    assert "question 3" in page and "delta chunk" in page and "<script" not in page
    assert "#exd-up:checked ~ .examples .ex:not(.improved)" in page


def test_context_and_verdict_open_both_reports(tmp_path):
    systems = [System("base", HashingEncoder(24), spec="hashing:24"),
               System("salted", HashingEncoder(24, salt="x"), spec="hashing:24 salted")]
    evaluation = evaluate_systems(systems, small_dataset(), dims=[24, 12], cache=EmbeddingCache(tmp_path),
                                  progress_bar=False, n_resamples=100, n_permutations=100,
                                  extra_corpus={"extra1": "An unrelated chunk of the index."})
    evaluation.context.update({"query generator": "ict", "run date": "2026-11-30"})
    data = report_json(evaluation)
    markdown, page = report_markdown(data), report_html(data)
    assert markdown.index("## Verdict") < markdown.index("## Context") < markdown.index("## Headline metrics")
    assert page.index("<h2>Verdict</h2>") < page.index("<h2>Context</h2>") < page.index("<h2>Headline metrics</h2>")
    for text in ("query generator**: ict", "run date**: 2026-11-30", "embtune**: 0.1.0",
                 "corpus searched**: the whole index (33 documents"):
        assert text in markdown
    assert "## Against the baseline `base`" in markdown
    assert "<h2>Against the baseline <code>base</code>" in page
    assert "p (Holm over this table)" in markdown
