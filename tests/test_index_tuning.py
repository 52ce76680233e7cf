"""Document-side tuning (NUDGE-N, embtune_core.retrieval.index_tuning): the closed form is the optimum of the paper's
constrained problem (checked against sampling the feasible set), documents without queries never move,
gamma 0 is kept when nudging hurts held-out queries, and the saved deltas load back only where they fit."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embtune_core.errors import InputError
from embtune_core.retrieval.index_tuning import (
    NudgeConfig,
    check_fit,
    choose_gamma,
    load_index_tuning,
    nudge_n,
    query_sums,
    tune_index,
    unit_rows,
)


def _sphere(rng, n, dim):
    return unit_rows(rng.normal(size=(n, dim)))


@pytest.mark.parametrize("gamma", [0.02, 0.1, 0.3, 0.48, 1.5])
def test_closed_form_is_the_constrained_optimum(gamma):
    rng = np.random.default_rng(0)
    dim = 6
    docs = _sphere(rng, 20, dim)
    sums = rng.normal(size=(20, dim))
    sums[3] = 0.0  # a document without training queries
    tuned = nudge_n(docs, sums, gamma)
    np.testing.assert_allclose(np.linalg.norm(tuned, axis=1), 1.0, atol=1e-5)
    assert (((tuned - docs) ** 2).sum(axis=1) <= gamma + 1e-5).all()
    np.testing.assert_array_equal(tuned[3], docs[3])
    # no feasible point (unit length, within sqrt(gamma) of the document) has a larger objective
    for d in range(20):
        if d == 3:
            continue
        samples = unit_rows(docs[d] + rng.normal(size=(20000, dim)) * rng.random((20000, 1)) * 2)
        feasible = samples[((samples - docs[d]) ** 2).sum(axis=1) <= gamma]
        assert len(feasible) > 0
        assert (feasible @ sums[d]).max() <= tuned[d] @ sums[d] + 1e-5


def test_query_sums_add_every_relevant_pair():
    queries = np.eye(3, dtype=np.float32) * 2  # normalised to unit rows first
    sums = query_sums(4, queries, [[0], [0, 2], []])
    np.testing.assert_allclose(sums, [[1, 1, 0], [0, 0, 0], [0, 1, 0], [0, 0, 0]])


def test_gamma_zero_is_kept_when_nudging_hurts_held_out_queries():
    rng = np.random.default_rng(1)
    docs = _sphere(rng, 10, 8)
    # training queries pull document 0 onto document 1's vector; held-out queries ask for document 1
    train = np.repeat(docs[1:2], 5, axis=0)
    dev = docs[1:2] + rng.normal(scale=0.01, size=(5, 8))
    sums = query_sums(10, train, [[0]] * 5)
    choice = choose_gamma(docs, sums, dev, [[1]] * 5, NudgeConfig())
    assert choice.gamma == 0.0 and choice.scores["0.0"] == 1.0
    # held-out queries that do ask for document 0 choose a positive gamma
    helped = choose_gamma(docs, sums, np.repeat(docs[1:2], 5, axis=0), [[0]] * 5, NudgeConfig())
    assert helped.gamma > 0


def test_tune_save_load_apply_round_trip(tmp_path, caplog):
    rng = np.random.default_rng(2)
    docs = _sphere(rng, 12, 8)
    ids, texts = [f"d{i}" for i in range(12)], [f"text {i}" for i in range(12)]
    queries = unit_rows(docs[:6] + rng.normal(scale=0.3, size=(6, 8)))
    tuned = tune_index(ids, texts, docs, np.concatenate([queries, queries]), [[i] for i in range(6)] * 2,
                       encoder_identity="enc", config=NudgeConfig(gammas=[0.2]))
    assert set(tuned.doc_ids) <= set(ids[:6]) and tuned.config["gamma"] in (0.0, 0.2)
    tuned.save(tmp_path / "tuning")
    loaded = load_index_tuning(tmp_path / "tuning")
    np.testing.assert_array_equal(loaded.deltas, tuned.deltas)
    assert json.loads((tmp_path / "tuning" / "index_tuning.json").read_text())["format"] == "embtune-index-tuning"
    vectors, applied = loaded.apply(ids, texts, docs)
    assert applied == len(tuned.doc_ids)
    np.testing.assert_array_equal(vectors[6:], docs[6:])  # documents without queries are untouched
    changed = [t if i else t + " edited" for i, t in enumerate(texts)]
    _, applied_after_edit = loaded.apply(ids, changed, docs)
    assert applied_after_edit == applied - (1 if "d0" in tuned.doc_ids else 0)
    check_fit(loaded, "enc", None)
    with pytest.raises(InputError, match="adapter"):
        check_fit(loaded, "enc", "abc123")
    with pytest.raises(InputError, match="tuned over vectors of 'enc'"):
        check_fit(loaded, "other", None)


def test_damaged_files_are_named_in_one_line(tmp_path):
    from safetensors.numpy import save_file

    from embtune_core.retrieval.index_tuning import TunedIndex, text_key

    folder = TunedIndex(["a", "b"], [text_key("a"), text_key("b")], np.full((2, 4), 0.1, np.float32),
                        {"method": "nudge-n"}).save(tmp_path / "t")
    assert load_index_tuning(folder).dimension == 4
    save_file({"deltas": np.full((2, 4), np.nan, np.float32)}, str(folder / "deltas.safetensors"))
    with pytest.raises(InputError, match="NaN") as info:
        load_index_tuning(folder)
    assert "deltas.safetensors" in str(info.value) and "\n" not in str(info.value)
    (folder / "index_tuning.json").write_text("{")
    with pytest.raises(InputError, match="unreadable JSON"):
        load_index_tuning(folder)
    with pytest.raises(InputError, match="not an index tuning folder"):
        load_index_tuning(tmp_path)


def test_gamma_zero_moves_nothing_not_even_float_noise():
    rng = np.random.default_rng(4)
    docs = rng.normal(size=(10, 8)).astype(np.float32)  # not unit length: normalised inside
    train = np.repeat(unit_rows(docs[1:2]), 5, axis=0)
    dev = unit_rows(docs[1:2] + rng.normal(scale=0.01, size=(5, 8)))
    tuned = tune_index([f"d{i}" for i in range(10)], [f"t{i}" for i in range(10)], docs, train, [[0]] * 5, dev,
                       [[1]] * 5, config=NudgeConfig(gammas=[0.3]))
    assert tuned.config["gamma"] == 0.0 and tuned.doc_ids == [] and tuned.config["documents_moved"] == 0
