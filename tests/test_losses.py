"""Loss strategies: the data each one builds from a QA dataset, refusals before training, and that
training a tiny model for a few steps with each one lowers its loss."""

from __future__ import annotations

import json

import pytest

from embtune_core.data.dataset import QADataset
from embtune_core.errors import DatasetError
from embtune_core.finetuning.losses import DATA_FORMATS, create_strategy
from embtune_core.finetuning.training import TrainSettings, train
from embtune_core.plugins import get_registry

TOPICS = ["cats sleep on warm kitchen mats", "rockets launch satellites into orbit",
          "bakers knead sourdough bread dough", "glaciers carve deep mountain valleys",
          "violins need rosin on their bows", "tax returns are due every april",
          "tomatoes ripen fast in summer heat", "servers store backups in data centers"]
DISTRACTORS = ["dogs chase balls in the park", "submarines dive under arctic ice",
               "chefs sharpen steel kitchen knives", "deserts bloom after rare rain",
               "drums keep the band in time", "invoices are paid within thirty days",
               "apples fall from autumn trees", "routers forward packets between networks"]
@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models gain nothing from threads, and on a shared CPU idle threads spin: 5x the wall time."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


ALL_STRATEGIES = ["mnrl", "cached-mnrl", "gist", "contrastive", "online-contrastive", "cosine", "triplet"]


def make_qa(*, negatives: bool = True, scores: bool = False) -> QADataset:
    """Eight queries, each with one relevant chunk and (optionally) one hard negative of its own."""
    corpus = {f"c{i}": f"{t.capitalize()}, and more about {t.split()[0]} here." for i, t in enumerate(TOPICS)}
    corpus.update({f"d{i}": f"{t.capitalize()}, and more about {t.split()[0]} here."
                   for i, t in enumerate(DISTRACTORS)})
    queries = {f"q{i}": f"what about {t.split()[0]} and {t.split()[-1]}?" for i, t in enumerate(TOPICS)}
    extras = {}
    if negatives:
        extras["negatives"] = {f"q{i}": [f"d{i}"] for i in range(len(TOPICS))}
    if scores:
        extras["scores"] = {f"q{i}": {f"c{i}": 3.0, f"d{i}": 1.0} for i in range(len(TOPICS))}
    return QADataset(queries, corpus, {f"q{i}": [f"c{i}"] for i in range(len(TOPICS))}, extras=extras)


@pytest.fixture
def qa_file(tmp_path):
    path = tmp_path / "train.json"
    make_qa().save(path)
    return path


def test_every_builtin_strategy_is_registered():
    names = get_registry().names("loss_strategies")
    assert set(ALL_STRATEGIES) <= set(names)
    for name in ALL_STRATEGIES:
        assert create_strategy(name).data_format in DATA_FORMATS


def test_mnrl_builds_pairs_without_negatives_and_triplets_with_them():
    strategy = create_strategy("mnrl")
    pairs = strategy.build_dataset(make_qa(negatives=False))
    assert pairs.column_names == ["anchor", "positive"] and strategy.data_format == "pairs"
    triplets = strategy.build_dataset(make_qa())
    assert triplets.column_names == ["anchor", "positive", "negative"] and strategy.data_format == "triplets"
    row = triplets[0]
    assert row["anchor"].startswith("what about cats") and "Cats sleep" in row["positive"]
    assert "Dogs chase" in row["negative"]
    assert strategy.in_batch_negatives


def test_contrastive_labels_good_chunks_1_and_bad_chunks_0():
    rows = create_strategy("contrastive").build_dataset(make_qa())
    assert rows.column_names == ["anchor", "text", "label"]
    by_text = {r["text"]: r["label"] for r in rows if r["anchor"].startswith("what about cats")}
    assert by_text == {"Cats sleep on warm kitchen mats, and more about cats here.": 1,
                       "Dogs chase balls in the park, and more about dogs here.": 0}


def test_contrastive_can_draw_random_bad_chunks_reproducibly():
    qa = make_qa(negatives=False)
    first = create_strategy("online-contrastive", bad_chunks="random").build_dataset(qa)
    again = create_strategy("online-contrastive", bad_chunks="random").build_dataset(qa)
    assert first.to_dict() == again.to_dict()
    assert sorted(set(first["label"])) == [0, 1]
    for row in first:  # a bad chunk is never the query's own relevant chunk
        if row["label"] == 0:
            qid = next(q for q, text in qa.queries.items() if text == row["anchor"])
            assert row["text"] != qa.corpus[qa.relevant_docs[qid][0]]


def test_cosine_uses_scores_scaled_to_unit_range_else_labels():
    from_scores = create_strategy("cosine").build_dataset(make_qa(negatives=False, scores=True))
    assert sorted(set(from_scores["score"])) == pytest.approx([1 / 3, 1.0])
    from_labels = create_strategy("cosine").build_dataset(make_qa())
    assert sorted(set(from_labels["score"])) == [0.0, 1.0]


@pytest.mark.parametrize("name", ["triplet", "contrastive", "online-contrastive", "cosine"])
def test_strategy_needing_negatives_refuses_dataset_without_them(name):
    with pytest.raises(DatasetError) as info:
        create_strategy(name).build_dataset(make_qa(negatives=False), "train.json")
    message = str(info.value)
    assert "\n" not in message and "train.json" in message and "embtune mine" in message


def test_missing_negatives_fail_before_any_model_is_loaded(tmp_path):
    path = tmp_path / "train.json"
    make_qa(negatives=False).save(path)
    settings = TrainSettings(train=str(path), out=str(tmp_path / "out"), loss="triplet",
                             model="no-such-org/no-such-model")  # loading it would fail differently
    with pytest.raises(DatasetError, match="embtune mine"):
        train(settings)
    assert not (tmp_path / "out").exists()


def test_cli_reports_missing_negatives_in_one_line(tmp_path, capsys):
    from embtune_core.cli import main

    path = tmp_path / "train.json"
    make_qa(negatives=False).save(path)
    assert main(["train", "--train", str(path), "--loss", "triplet", "--out", str(tmp_path / "out")]) == 3
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "embtune mine" in lines[0] and "train.json" in lines[0]


def test_matryoshka_wraps_any_strategy_and_checks_dims(tiny_model_dir):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, TripletLoss

    from embtune_core.errors import ConfigError

    strategy = create_strategy("triplet", matryoshka_dims=[16, 32, 8])
    assert strategy.data_format == "triplets" and strategy.dims == [32, 16, 8]
    model = SentenceTransformer(tiny_model_dir)
    loss = strategy.build_loss(model)
    assert isinstance(loss, MatryoshkaLoss) and isinstance(loss.loss, TripletLoss)
    with pytest.raises(ConfigError, match="exceeds"):
        create_strategy("mnrl", matryoshka_dims=[64, 32]).build_loss(model)


def _dataset_loss(model_dir: str, strategy, rows, tmp_path) -> float:
    """The strategy's loss over all rows in one batch, in eval mode (no dropout): comparable across models."""
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )

    model = SentenceTransformer(model_dir)
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / "eval-loss"), report_to="none",
                                                per_device_eval_batch_size=len(rows), disable_tqdm=True,
                                                dataloader_pin_memory=False)
    trainer = SentenceTransformerTrainer(model=model, args=args, eval_dataset=rows,
                                         loss=strategy.build_loss(model))
    return trainer.evaluate()["eval_loss"]


CASES = [(name, {}) for name in ALL_STRATEGIES] + [("mnrl", {"matryoshka_dims": [32, 16, 8]})]


@pytest.mark.parametrize(("name", "extra"), CASES, ids=[n + ("-matryoshka" if e else "") for n, e in CASES])
def test_each_strategy_lowers_its_loss_on_a_tiny_model(name, extra, tiny_model_dir, qa_file, tmp_path):
    options = {"cached-mnrl": {"mini_batch_size": 4}, "gist": {"guide": tiny_model_dir}}.get(name, {})
    strategy = create_strategy(name, **extra, **options)
    rows = strategy.build_dataset(QADataset.load(qa_file))
    before = _dataset_loss(tiny_model_dir, strategy, rows, tmp_path)
    out = tmp_path / "model"
    summary = train(
        TrainSettings(
            train=str(qa_file),
            out=str(out),
            model=tiny_model_dir,
            loss=name,
            loss_options=options,
            matryoshka_dims=extra.get("matryoshka_dims"),
            batch_size=len(rows),
            lr=2e-3,
            warmup_ratio=0.0,
            max_steps=8,
            save_steps=8,
            logging_steps=1,
        )
    )
    after = _dataset_loss(str(out), strategy, rows, tmp_path)
    assert summary["global_step"] == 8
    assert after < before, f"{name}: loss {before:.4f} -> {after:.4f}"
    log_lines = (tmp_path / "model.checkpoints" / "loss_log.jsonl").read_text().splitlines()
    assert sum("loss" in json.loads(line) for line in log_lines) >= 8
