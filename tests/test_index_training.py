"""Index-aware fine-tuning (embtune_core.index_training): pseudo-queries over the index's chunk texts join
the real questions without drowning them, mined negatives never name a pseudo-query's own chunk, and the
train command and the pipeline record what each system saw."""

from __future__ import annotations

import json

import pytest
from test_losses import _one_torch_thread, make_qa  # noqa: F401 - the fixture applies here too

from embtune_core.cli import main
from embtune_core.dataset import QADataset
from embtune_core.errors import ConfigError
from embtune_core.index_training import index_aware_dataset, pseudo_pairs
from embtune_core.training import TrainSettings

WORDS = ["harbour", "lantern", "orchard", "quarry", "meadow", "beacon", "citadel", "ferry", "granary", "vineyard"]


def _index(n: int = 10) -> dict[str, str]:
    return {f"u{i}": (f"The {w} ledger records tolls paid in spring. Each {w} keeper signs the sheet twice. "
                      f"Visitors to the {w} must show a permit at the gate.") for i, w in enumerate(WORDS[:n])}


def test_pseudo_positives_never_collide_with_their_chunks():
    pseudo, source = pseudo_pairs(_index(), {"ict": 1, "crop": 1}, seed=3)
    assert pseudo.queries and set(source) == set(pseudo.queries)
    assert all(q.split(":", 1)[0] in ("ict", "crop") for q in pseudo.queries)
    assert not set(pseudo.corpus) & set(_index())  # prefixed ids: ICT's sentence-less text is its own entry
    assert {source[q] for q in pseudo.queries} <= set(_index())


def test_pseudo_queries_are_capped_by_the_real_questions_and_reproducible():
    real = make_qa(negatives=False)
    first, info = index_aware_dataset(real, _index(), model="unused", ratio=0.5, seed=1)
    again, _ = index_aware_dataset(real, _index(), model="unused", ratio=0.5, seed=1)
    assert info["pseudo_queries_made"] == 20 and info["pseudo_queries_kept"] == len(real.queries) // 2
    assert first.queries == again.queries and first.relevant_docs == again.relevant_docs
    assert set(real.queries) <= set(first.queries)  # every real question stays
    with pytest.raises(ConfigError, match="index_ratio"):
        index_aware_dataset(real, _index(), model="unused", ratio=0)


def test_mined_negatives_come_from_the_index_and_skip_the_own_chunk(tiny_model_dir):
    real = make_qa(negatives=False)
    index = _index()
    augmented, info = index_aware_dataset(real, index, model=tiny_model_dir, ratio=2.0, hard_negatives=2, seed=0)
    _, source = pseudo_pairs(index, {"ict": 1, "crop": 1}, seed=0)
    pseudo = [q for q in augmented.queries if q in source]
    assert pseudo and info["mining"]["queries"] == len(augmented.queries)
    for q in pseudo:
        negatives = augmented.negatives.get(q, [])
        assert source[q] not in negatives
        assert all(n in augmented.corpus for n in negatives)
    assert any(augmented.negatives.get(q) for q in real.queries)  # real questions got negatives too


def test_train_command_with_an_index_corpus(tiny_model_dir, tmp_path, capsys):
    make_qa(negatives=False).save(tmp_path / "train.json")
    QADataset({}, _index(), {}).save(tmp_path / "index.json")
    out = tmp_path / "m"
    code = main(["train", "--train", str(tmp_path / "train.json"), "--model", tiny_model_dir, "--out", str(out),
                 "--index-corpus", str(tmp_path / "index.json"), "--index-pseudo-queries", "ict=2",
                 "--max-steps", "2", "--batch-size", "4"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "embtune_train.json").read_text())
    assert summary["index_aware"]["mix"] == {"ict": 2}
    assert summary["index_aware"]["pseudo_queries_kept"] == len(make_qa().queries)  # ratio 1 by default
    assert summary["data"]["train"]["queries"] == 2 * len(make_qa().queries)
    assert main(["train", "--train", str(tmp_path / "train.json"), "--out", str(out),
                 "--index-pseudo-queries", "ict=0"]) == 2
    with pytest.raises(ConfigError, match="needs index_corpus"):
        TrainSettings.from_mapping({"train": "t", "out": "o", "index_pseudo_queries": True})


def test_pseudo_queries_that_are_validation_questions_never_train():
    """With ICT questions, the validation questions are sentences of the validation chunks, so pseudo-queries
    over those chunks can be those very questions: they are left out and counted (a leak, not transduction)."""
    pseudo, _ = pseudo_pairs(_index(), {"ict": 1, "crop": 1}, seed=0)
    validation = sorted(pseudo.queries.values())[:3]
    augmented, info = index_aware_dataset(make_qa(negatives=False), _index(), model="unused", ratio=5.0, seed=0,
                                          exclude_questions=validation)
    assert info["dropped_as_validation_questions"] == 3
    assert not set(validation) & set(augmented.queries.values())
    assert info["pseudo_queries_kept"] == info["pseudo_queries_made"] - 3


def test_options_that_would_change_nothing_are_refused():
    with pytest.raises(ConfigError, match="index_ratio: applies to index-aware training only"):
        TrainSettings.from_mapping({"train": "t", "out": "o", "index_ratio": 3})
    with pytest.raises(ConfigError, match="index_hard_negatives: applies to index-aware training only"):
        TrainSettings.from_mapping({"train": "t", "out": "o", "index_hard_negatives": 2})
    with pytest.raises(ConfigError, match="lora_rank: applies to LoRA training only"):
        TrainSettings.from_mapping({"train": "t", "out": "o", "lora_rank": 4})
