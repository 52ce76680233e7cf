"""`will tuning help?` (embtune_core.workflow.probe): its figures are the evaluation's own on held-out training documents,
and each threshold turns into the prediction it documents."""

from __future__ import annotations

import pytest

from embtune_core.workflow.probe import ADAPTER_GAIN, BM25_GAP, expectation, predict, tuning_probe


def test_probe_figures_on_held_out_training_documents(tiny_model_dir):
    from test_evaluation import small_dataset

    dataset = small_dataset()  # no sources: documents are held out by chunk
    probe = tuning_probe(dataset, tiny_model_dir, seed=1, adapter=True)
    figures = probe["figures"]
    assert figures["held_out_questions"] > 0 and figures["chunks"] == len(dataset.corpus)
    assert figures["bm25_minus_base"] == pytest.approx(figures["bm25_ndcg@10"] - figures["base_ndcg@10"], abs=1e-3)
    assert "adapter_probe_gain" in figures and probe["predictions"] and probe["expectation"]


def _figures(**changes):
    base = {"bm25_minus_base": 0.0, "cut_share": 0.0, "token_limit": 256, "base_recall@10": 0.5,
            "adapter_probe_gain": 0.0}
    return {**base, **changes}


def test_each_measurement_predicts_what_it_documents():
    lexical = _figures(bm25_minus_base=BM25_GAP + 0.1)
    assert "BM25 hybrid" in predict(lexical)[0] and "BM25 hybrid" in expectation(lexical)
    assert any("windows" in line for line in predict(_figures(cut_share=0.5)))
    saturated = _figures(**{"base_recall@10": 0.99})
    assert any("reorder" in line for line in predict(saturated))
    assert expectation(saturated) == "expect little from tuning: the base model is near its ceiling"
    learns = _figures(adapter_probe_gain=ADAPTER_GAIN + 0.01)
    assert expectation(learns) == "expect tuning to help"
    assert expectation(_figures()) == "expect small gains from tuning"
