"""embtune train: partial fine-tuning, checkpoints and resume, the output directory and its model card,
the CLI with a TOML config, and embtune export."""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from test_losses import _one_torch_thread, make_qa  # noqa: F401 - the fixture applies here too

from embtune_core.cli import main
from embtune_core.errors import ConfigError
from embtune_core.finetuning.checkpoints import latest_checkpoint
from embtune_core.finetuning.layer_freezing import freeze_all_but_last
from embtune_core.finetuning.training import TrainSettings, train


def _state(model_dir: str) -> dict[str, torch.Tensor]:
    from sentence_transformers import SentenceTransformer

    return {k: v.clone() for k, v in SentenceTransformer(model_dir).state_dict().items()}


@pytest.fixture
def qa_files(tmp_path):
    train_path, val_path = tmp_path / "train.json", tmp_path / "val.json"
    make_qa().save(train_path)
    val = make_qa(negatives=False)  # the same chunks, asked with other questions (validation shares no query)
    renamed = {q: "v" + q for q in val.queries}
    val.queries = {renamed[q]: "tell me " + t for q, t in val.queries.items()}
    val.relevant_docs = {renamed[q]: ids for q, ids in val.relevant_docs.items()}
    val.save(val_path)
    return train_path, val_path


def test_partial_fine_tuning_leaves_frozen_layers_unchanged(tiny_model_dir, qa_files, tmp_path):
    out = tmp_path / "partial"
    summary = train(TrainSettings(train=str(qa_files[0]), out=str(out), model=tiny_model_dir, loss="mnrl",
                                  train_last_layers=1, batch_size=8, lr=5e-3, max_steps=3, save_steps=3))
    before, after = _state(tiny_model_dir), _state(str(out))
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed, "nothing trained"
    assert all(".layer.1." in k for k in changed), f"frozen weights changed: {sorted(changed)[:3]}"
    assert not any("embeddings" in k or ".layer.0." in k for k in changed)
    assert summary["partial_fine_tuning"]["trained_layers"] == 1
    assert (
        summary["partial_fine_tuning"]["trainable_parameters"]
        < summary["partial_fine_tuning"]["total_parameters"]
    )


def test_freeze_layers_counts_from_the_bottom(tiny_model_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_model_dir)
    info = freeze_all_but_last(model, None, frozen=2)
    assert info["trained_layers"] == 0
    assert not any(p.requires_grad for p in model[0].parameters())
    with pytest.raises(ConfigError, match="only 2 transformer layers"):
        freeze_all_but_last(model, 3)


def test_resume_continues_from_latest_checkpoint_and_matches_uninterrupted_run(
    tiny_model_dir, qa_files, tmp_path
):
    settings = {
        "train": str(qa_files[0]),
        "model": tiny_model_dir,
        "loss": "mnrl",
        "batch_size": 4,
        "lr": 1e-3,
        "max_steps": 4,
        "save_steps": 2,
        "save_total_limit": 5,
        "logging_steps": 1,
    }
    full = train(TrainSettings(out=str(tmp_path / "full"), **settings))
    assert full["resumed_from"] is None
    work = tmp_path / "full.checkpoints"
    assert latest_checkpoint(work).endswith("checkpoint-4")
    # Simulate a run killed after its step-2 checkpoint: drop what came later, then resume.
    shutil.rmtree(work / "checkpoint-4")
    (work / "checkpoint-3-partial").mkdir()  # a torn write is never chosen
    expected = _state(str(tmp_path / "full"))
    shutil.rmtree(tmp_path / "full")
    resumed = train(TrainSettings(out=str(tmp_path / "full"), resume=True, **settings))
    assert resumed["resumed_from"].endswith("checkpoint-2")
    assert resumed["global_step"] == 4
    got = _state(str(tmp_path / "full"))
    for key in expected:
        assert torch.allclose(expected[key], got[key], atol=1e-5), key


def test_output_loads_and_has_a_model_card(tiny_model_dir, qa_files, tmp_path, monkeypatch):
    from sentence_transformers import SentenceTransformer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-never-written-anywhere")
    out = tmp_path / "model"
    summary = train(
        TrainSettings(
            train=str(qa_files[0]),
            val=str(qa_files[1]),
            out=str(out),
            model=tiny_model_dir,
            loss="mnrl",
            batch_size=8,
            lr=1e-3,
            max_steps=4,
            save_steps=2,
        )
    )
    model = SentenceTransformer(str(out))
    assert model.encode(["a query"]).shape == (1, 32)
    card = (out / "README.md").read_text()
    assert tiny_model_dir not in card  # an exported folder records no absolute path (issue 26): its name only
    for expected in (
        f"from **{Path(tiny_model_dir).name}**",
        "| train | train.json | 8 | 16 | 8 | 8 |",
        "| val | val.json | 8 | 16 | 8 | 0 |",
        "`mnrl`",
        "| batch_size | 8 |",
        "| lr | 0.001 |",
        "| metric | before | after |",
        "| ndcg@10 |",
        "| hit@5 |",
        "| mrr@10 |",
        "Best checkpoint by NDCG@10",
    ):
        assert expected in card, expected
    assert "sk-test" not in card and "sk-test" not in (out / "embtune_train.json").read_text()
    assert set(summary["metrics_before"]) >= {"hit@5", "mrr@10", "ndcg@10"}
    assert summary["best_checkpoint"] is not None
    # The final metrics are the evaluation logged at the best checkpoint, not one more pass over val:
    # evaluations = the baseline + one per save step (2 and 4), and nothing after training.
    evaluations = [r for r in summary["history"] if "eval_ndcg@10" in r]
    assert [r["step"] for r in evaluations] == [0, 2, 4]
    best_step = int(summary["best_checkpoint"].rsplit("-", 1)[1])
    logged = next(r for r in evaluations if r["step"] == best_step)
    assert summary["metrics_after"]["ndcg@10"] == logged["eval_ndcg@10"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".model.")]  # no staging left behind


def test_cli_reads_train_table_and_command_line_wins(tiny_model_dir, qa_files, tmp_path):
    """The CLI in-process (the same code as the `embtune` script, without re-importing torch)."""
    config = tmp_path / "embtune.toml"
    config.write_text(f"""[train]
train = "{qa_files[0]}"
model = "{tiny_model_dir}"
loss = "cached-mnrl"
loss_options = {{ mini_batch_size = 4 }}
matryoshka_dims = [32, 16]
batch_size = 8
max_steps = 2
lr = 0.01
out = "{tmp_path / "from-config"}"
""")
    out = tmp_path / "from-cli"
    assert main(["train", "--config", str(config), "--out", str(out), "--lr", "0.002"]) == 0
    summary = json.loads((out / "embtune_train.json").read_text())
    assert summary["settings"]["lr"] == 0.002 and summary["global_step"] == 2
    assert summary["loss"]["name"] == "matryoshka(cached-mnrl)" and summary["loss"]["mini_batch_size"] == 4
    assert not (tmp_path / "from-config").exists()


def test_cli_rejects_unknown_config_key(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text('[train]\ntrain = "t.json"\nout = "o"\nlearning_rate = 0.1\n')
    assert main(["train", "--config", str(config)]) == 3
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bad.toml: train.learning_rate: unknown key" in err


def test_export_writes_a_loadable_zip(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    from embtune_core.errors import InputError
    from embtune_core.publishing.export import export_zip

    archive = export_zip(tiny_model_dir, tmp_path / "tiny.zip")
    with zipfile.ZipFile(archive) as handle:
        names = handle.namelist()
        assert "tiny/modules.json" in names and all(n.startswith("tiny/") for n in names)
        handle.extractall(tmp_path / "unzipped")
    assert SentenceTransformer(str(tmp_path / "unzipped" / "tiny")).encode(["x"]).shape == (1, 32)
    with pytest.raises(InputError, match="not a sentence-transformers model directory"):
        export_zip(tmp_path / "unzipped", tmp_path / "bad.zip")
    assert not (tmp_path / "bad.zip").exists()


def test_fresh_run_refuses_a_checkpoint_folder_of_an_earlier_run(tiny_model_dir, qa_files, tmp_path):
    (tmp_path / "model.checkpoints" / "checkpoint-2").mkdir(parents=True)
    with pytest.raises(ConfigError, match="--resume"):
        train(TrainSettings(train=str(qa_files[0]), out=str(tmp_path / "model"), model=tiny_model_dir))


def test_export_keeps_the_models_own_token_limit_when_trained_shorter(tiny_model_dir, qa_files, tmp_path):
    from sentence_transformers import SentenceTransformer

    own = SentenceTransformer(tiny_model_dir).max_seq_length
    out = tmp_path / "short"
    summary = train(TrainSettings(train=str(qa_files[0]), out=str(out), model=tiny_model_dir, batch_size=8,
                                  max_steps=1, max_seq_length=16))
    assert summary["trained_max_seq_length"] == 16
    assert summary["max_seq_length"] == own == SentenceTransformer(str(out)).max_seq_length
    card = (out / "README.md").read_text()
    assert "max_seq_length in training (tokens read of each text) | 16" in card
    assert f"max_seq_length of this model (what loaders read) | {own}" in card
    pinned = tmp_path / "pinned"
    train(TrainSettings(train=str(qa_files[0]), out=str(pinned), model=tiny_model_dir, batch_size=8,
                        max_steps=1, max_seq_length=16, export_max_seq_length=24))
    assert SentenceTransformer(str(pinned)).max_seq_length == 24


def test_a_model_worse_than_the_base_on_val_is_not_exported(tiny_model_dir, tmp_path, caplog):
    from embtune_core.data.dataset import QADataset

    # Validation questions quote their chunk, so the base (bag of token embeddings) ranks them well;
    # training pairs every question with the WRONG chunk at a high learning rate, which must hurt.
    chunks = {f"c{i}": f"{w} is a topic of its own, {w} {w}" for i, w in enumerate(
        ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"])}
    ids = sorted(chunks)
    QADataset({f"q{i}": chunks[c] + " please" for i, c in enumerate(ids)}, chunks,
              {f"q{i}": [ids[(i + 3) % len(ids)]] for i in range(len(ids))}).save(tmp_path / "train.json")
    QADataset({f"v{i}": chunks[c].split(",")[0] for i, c in enumerate(ids)}, chunks,
              {f"v{i}": [c] for i, c in enumerate(ids)}).save(tmp_path / "val.json")
    settings = {"train": str(tmp_path / "train.json"), "val": str(tmp_path / "val.json"), "model": tiny_model_dir,
                "batch_size": 8, "lr": 1e-2, "max_steps": 12, "save_steps": 12}
    with caplog.at_level("WARNING"):
        summary = train(TrainSettings(out=str(tmp_path / "m"), **settings))
    assert summary["metrics_after"]["ndcg@10"] < summary["metrics_before"]["ndcg@10"]
    assert summary["exported"] == "base"
    assert "the base model is exported unchanged" in caplog.text
    base, exported = _state(tiny_model_dir), _state(str(tmp_path / "m"))
    assert all(torch.equal(base[k], exported[k]) for k in base)
    assert "holds the base model unchanged" in (tmp_path / "m" / "README.md").read_text()

    kept = train(TrainSettings(out=str(tmp_path / "kept"), keep_if_worse=True,
                               checkpoint_dir=str(tmp_path / "kept.ck"), **settings))
    assert kept["exported"] == "trained"
    assert not all(torch.equal(base[k], v) for k, v in _state(str(tmp_path / "kept")).items())


def test_train_with_val_ends_with_a_recommendation(tiny_model_dir, qa_files, tmp_path, capsys):
    """`embtune train --val` compares the base model, the fine-tune, BM25, hybrids and sparse-dense vectors on
    --val and writes the winner to OUT.deploy; without --val it says why there is none."""
    out = tmp_path / "model"
    assert main(["train", "--train", str(qa_files[0]), "--val", str(qa_files[1]), "--model", tiny_model_dir,
                 "--max-steps", "1", "--batch-size", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    record = json.loads((tmp_path / "model.deploy" / "recommendation.json").read_text())
    names = {row["name"] for row in record["selection"]["rows"]}
    assert {"base", "fine-tuned", "bm25", "hybrid-base", "hybrid-fine-tuned", "sparse-dense-base",
            "sparse-dense-fine-tuned"} == names
    assert f"recommended: {record['recommended']}" in printed
    assert main(["train", "--train", str(qa_files[0]), "--model", tiny_model_dir, "--max-steps", "1",
                 "--batch-size", "4", "--out", str(tmp_path / "m2")]) == 0
    assert "no recommendation: it is chosen on held-out questions" in capsys.readouterr().out
    assert not (tmp_path / "m2.deploy").exists()
