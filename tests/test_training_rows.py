"""Kind 3 of issue 26: every training row is used, or the change is said in one line and recorded.

The issue's instance: after `embtune mine --margin 0.7` left 9 of 30 questions without a negative,
`embtune train --loss mnrl` trained on the 21 triplets and printed "every pair used once per epoch".
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from embtune_core.data.dataset import QADataset, load_pairs
from embtune_core.finetuning.losses import create_strategy


def thirty_questions(with_negative: int = 21) -> QADataset:
    corpus = {f"c{i}": f"chunk number {i} about topic {i}" for i in range(30)}
    corpus.update({f"n{i}": f"distractor {i} about something else" for i in range(30)})
    queries = {f"q{i}": f"what is topic {i}?" for i in range(30)}
    negatives = {f"q{i}": [f"n{i}"] for i in range(with_negative)}
    return QADataset(queries, corpus, {f"q{i}": [f"c{i}"] for i in range(30)}, extras={"negatives": negatives})


@pytest.mark.parametrize("loss", ["mnrl", "cached-mnrl", "gist"])
def test_in_batch_losses_train_every_pair_when_some_lack_a_negative(loss):
    strategy = create_strategy(loss, matryoshka_dims=[8])
    rows = strategy.build_dataset(thirty_questions())
    assert len(rows) == 30 and rows.column_names == ["anchor", "positive"]  # before: 21 triplets
    assert strategy.notes == [(f"9 of 30 (query, chunk) pairs have no mined negative: loss '{loss}' trains on all 30 "
                              "pairs with in-batch negatives only, without the hard negatives of the other 21 "
                              "(use_negatives = true trains on those 21 triplets and leaves the rest out)")]
    every = create_strategy(loss)
    assert len(every.build_dataset(thirty_questions(30))) == 30 and every.data_format == "triplets"
    assert every.notes == []  # nothing left out, nothing to say


def test_asking_for_triplets_says_how_many_pairs_that_leaves_out():
    strategy = create_strategy("mnrl", use_negatives=True)
    assert len(strategy.build_dataset(thirty_questions())) == 21
    assert "9 of 30 (query, chunk) pairs have no mined negative and are left out" in strategy.notes[0]
    triplet = create_strategy("triplet")
    assert len(triplet.build_dataset(thirty_questions())) == 21
    assert triplet.notes[0].startswith("9 of 30 (query, chunk) pairs have no mined negative and are left out")


def test_unused_negatives_and_unscored_queries_are_said():
    qa = thirty_questions(30)
    qa.negatives = {**qa.negatives, "q0": ["n0", "n1", "c0"]}  # n1 beyond per_query = 1; c0 is the positive
    strategy = create_strategy("contrastive")
    strategy.build_dataset(qa)
    assert "1 mined negatives beyond negatives_per_query = 1 are not used" in " ".join(strategy.notes)
    assert "1 mined negatives are also relevant to their query" in " ".join(strategy.notes)
    qa.extras["scores"] = {f"q{i}": {f"c{i}": 2.0, f"n{i}": 0.0} for i in range(10)}  # 20 queries unscored
    cosine = create_strategy("cosine")
    rows = cosine.build_dataset(qa)
    assert sorted(set(rows["anchor"])) == sorted(qa.queries.values())  # before: the 10 scored queries only
    assert "20 of 30 queries have no scores: their relevant chunks train at 1.0" in " ".join(cosine.notes)


def test_repeated_pairs_in_a_pairs_file_are_said(tmp_path, caplog):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"query": q, "positive": p}) + "\n"
                            for q, p in [("a?", "A."), ("b?", "B."), ("a?", "A.")]))
    with caplog.at_level(logging.WARNING):
        assert len(load_pairs(path).pairs()) == 2
    assert "1 of 3 rows repeat an earlier row's (query, positive) pair; each pair is read once" in caplog.text


def test_train_prints_and_records_the_change(tmp_path, tiny_model_dir):
    data = tmp_path / "train.json"
    thirty_questions().save(data)
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "embtune_core.cli", "train", "--train", str(data), "--model",
                             tiny_model_dir, "--loss", "mnrl", "--max-steps", "1", "--batch-size", "8", "--out",
                             str(tmp_path / "m")], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    assert "each of the 30 training rows used once per epoch" in result.stdout
    assert "note: 9 of 30 (query, chunk) pairs have no mined negative" in result.stdout
    summary = json.loads((tmp_path / "m" / "embtune_train.json").read_text())
    assert summary["data"]["train_rows"] == 30 and summary["loss"]["data_format"] == "pairs"
    assert summary["data"]["notes"][0].startswith("9 of 30 (query, chunk) pairs have no mined negative")
    assert "- 9 of 30 (query, chunk) pairs have no mined negative" in (tmp_path / "m" / "README.md").read_text()
