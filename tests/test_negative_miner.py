"""The embedding-rank hard-negative miner: rank range, false-negative guard, k negatives."""

from __future__ import annotations

import json

import numpy as np
import pytest

from embtune_core.cli import main
from embtune_core.data.dataset import QADataset
from embtune_core.errors import ConfigError
from embtune_core.plugins import get_registry


class AngleEncoder:
    """Texts "q" and "d:<cosine>" as 2-d unit vectors whose cosine with the query is the number given."""

    identity = "test-angle-encoder"
    dimension = 2

    def _vec(self, text: str) -> np.ndarray:
        cos = 1.0 if text.startswith("q") else float(text.split(":")[1])
        return np.array([cos, np.sqrt(max(0.0, 1 - cos * cos))], dtype=np.float32)

    def encode_queries(self, texts):
        return np.stack([self._vec(t) for t in texts])

    encode_documents = encode_queries


def scored_dataset() -> QADataset:
    scores = {"pos": 0.80, "a": 0.90, "b": 0.78, "c": 0.70, "d": 0.60, "e": 0.50, "f": 0.40, "g": 0.30}
    corpus = {cid: f"d:{s}" for cid, s in scores.items()}
    return QADataset({"q1": "q"}, corpus, {"q1": ["pos"]})


def mine(**options):
    miner = get_registry().create("negative_miners", "embedding-rank", use_cache=False, **options)
    return miner.mine(scored_dataset(), AngleEncoder()), miner.last_report


def test_guard_drops_candidates_within_five_percent_of_the_positive():
    mined, report = mine(num_negatives=3)
    # 0.90 and 0.78 are above 0.80 * 0.95 = 0.76: probably unlabelled positives.
    assert mined.negatives == {"q1": ["c", "d", "e"]}
    assert report["dropped_by_guard"] == 2 and report["candidates_examined"] == 5
    assert report["negatives_kept"] == 3 and report["queries_with_fewer_negatives"] == 0


def test_rank_range_and_absolute_margin():
    assert mine(num_negatives=2, range_min=3)[0].negatives == {"q1": ["d", "e"]}  # skips a, b, c
    assert mine(num_negatives=5, range_max=4)[0].negatives == {"q1": ["c", "d"]}  # ranks 0..3: a b c d
    assert mine(num_negatives=2, relative_margin=0, margin=0.25)[0].negatives == {"q1": ["e", "f"]}
    no_guard, report = mine(num_negatives=2, relative_margin=None)
    assert no_guard.negatives == {"q1": ["a", "b"]} and report["dropped_by_guard"] == 0


def test_positives_never_become_negatives_and_bad_options_fail():
    mined, _ = mine(num_negatives=10)
    assert "pos" not in mined.negatives["q1"]
    mined.validate()
    with pytest.raises(ConfigError, match="range_min"):
        get_registry().create("negative_miners", "embedding-rank", range_min=5, range_max=5)


def test_mine_command_with_a_model_folder(tmp_path, tiny_model_dir, capsys):
    corpus = {f"c{i}": f"Passage {i} about topic {i % 4} and revenue {i}." for i in range(30)}
    queries = {f"q{i}": f"What about topic {i % 4} revenue {i}?" for i in range(10)}
    ds = QADataset(queries, corpus, {f"q{i}": [f"c{i}"] for i in range(10)})
    ds.save(tmp_path / "train.json")
    out = tmp_path / "mined.json"
    code = main(["mine", str(tmp_path / "train.json"), "-o", str(out), "--encoder", tiny_model_dir,
                 "--num-negatives", "3", "--range-min", "1", "--relative-margin", "0"])
    assert code == 0
    mined = QADataset.load(out)
    assert all(len(v) == 3 and f"c{q[1:]}" not in v for q, v in mined.negatives.items())
    report = json.loads((tmp_path / "mined.json.mine-report.json").read_text())
    assert report["negatives_kept"] == 30 and report["dropped_by_guard"] == 0  # a random model: guard off
    assert "false-negative guard dropped" in capsys.readouterr().err
