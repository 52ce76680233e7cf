"""Index-aware fine-tuning (embtune_core.finetuning.index_training): pseudo-queries over the index's chunk texts join
the real questions without drowning them, mined negatives never name a pseudo-query's own chunk, and the
train command and the pipeline record what each system saw."""

from __future__ import annotations

import json

import pytest
from test_losses import _one_torch_thread, make_qa  # noqa: F401 - the fixture applies here too

from embtune_core.cli import main
from embtune_core.data.dataset import QADataset
from embtune_core.errors import ConfigError, PluginError
from embtune_core.finetuning.index_training import index_aware_dataset, pseudo_pairs
from embtune_core.finetuning.training import TrainSettings

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


def _bare_corpora(folder, index: dict[str, str]) -> dict[str, object]:
    """The same chunks as every bare-corpus form ``--index-corpus`` reads (no questions, no labels)."""
    (folder / "beir").mkdir()
    rows = "".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n" for k, v in index.items())
    (folder / "beir" / "corpus.jsonl").write_text(rows)
    (folder / "chunks.jsonl").write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in index.items()))
    (folder / "corpus_only.json").write_text(json.dumps({"corpus": index}))
    return {"BEIR folder with only corpus.jsonl": folder / "beir", "BEIR corpus.jsonl": folder / "beir" / "corpus.jsonl",
            "{id, text} JSONL": folder / "chunks.jsonl", "LlamaIndex JSON with only corpus": folder / "corpus_only.json"}


def test_a_bare_corpus_is_an_index_corpus(tiny_model_dir, tmp_path, capsys):
    """Only chunk texts are read, so a corpus without questions will do: each form trains on the very same
    pairs as a full QA dataset holding those chunks (the summary records the same pseudo-queries and loss)."""
    from embtune_core.data.dataset import load_corpus

    make_qa(negatives=False).save(tmp_path / "train.json")
    QADataset({"q": "a question"}, _index(), {"q": ["u0"]}).save(tmp_path / "full.json")
    forms = {"full QA dataset": tmp_path / "full.json", **_bare_corpora(tmp_path, _index())}
    summaries = {}
    for form, path in forms.items():
        assert load_corpus(path) == _index(), form
        out = tmp_path / f"m-{len(summaries)}"
        code = main(["train", "--train", str(tmp_path / "train.json"), "--model", tiny_model_dir, "--out", str(out),
                     "--index-corpus", str(path), "--max-steps", "1", "--batch-size", "4"])
        assert code == 0, (form, capsys.readouterr().err)
        summaries[form] = json.loads((out / "embtune_train.json").read_text())
    first = summaries["full QA dataset"]
    for form, summary in summaries.items():
        assert summary["index_aware"] == first["index_aware"], form
        assert summary["train_loss"] == first["train_loss"], form
    # [train] index_corpus = "x.json" (a string) is a list of one
    (tmp_path / "t.toml").write_text(f'[train]\ntrain = "{(tmp_path / "train.json").as_posix()}"\n'
                                     f'out = "{(tmp_path / "m-config").as_posix()}"\nmodel = "{tiny_model_dir}"\n'
                                     f'index_corpus = "{(tmp_path / "chunks.jsonl").as_posix()}"\n'
                                     'max_steps = 1\nbatch_size = 4\n')
    assert main(["train", "--config", str(tmp_path / "t.toml")]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "m-config" / "embtune_train.json").read_text())
    assert summary["index_aware"] == first["index_aware"]


@pytest.mark.parametrize(("content", "expected"), [
    ('{"id": "a", "text": "some words"}\n{"id": "b", "text": "  "}\n', "bad.jsonl: line 2: text: empty text"),
    ('{"id": "a", "text": "some words"}\n{"text": "more words"}\n', "bad.jsonl: line 2: _id: missing"),
    ('{"_id": "a", "text": "some words"}\n{"_id": "a", "text": "again"}\n', "bad.jsonl: line 2: _id: duplicate id 'a'"),
    ('{"id": "a", "text": 5}\n', "bad.jsonl: line 1: text: must be a string, not 5"),
    ('{"corpus": {"a": ""}}', "bad.json: corpus.a: empty text"),
    ('{"corpus": ["a"]}', "bad.json: corpus: must be a JSON object"),
    ('{"chunks": {"a": "text"}}', "bad.json: corpus: missing required key"),
    ('{"corpus": {}}', "bad.json: corpus: holds no chunk"),
])
def test_a_bad_index_corpus_is_one_line_naming_file_field_and_problem(tmp_path, capsys, content, expected):
    make_qa(negatives=False).save(tmp_path / "train.json")
    bad = tmp_path / ("bad.json" if content.startswith('{"c') else "bad.jsonl")
    bad.write_text(content)
    code = main(["train", "--train", str(tmp_path / "train.json"), "--out", str(tmp_path / "m"),
                 "--index-corpus", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 3 and err.startswith(f"embtune: error: {tmp_path / expected}"), err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--train", str(tmp_path / "train.json"), "--out", str(tmp_path / "m"),
                 "--index-corpus", str(tmp_path / "empty")]) == 3
    assert "empty: corpus.jsonl: not a BEIR folder" in capsys.readouterr().err


def test_an_unknown_pseudo_query_generator_fails_when_the_settings_are_read(tmp_path, capsys):
    """Not when the stage runs: one line naming the file (or the command line) and the field, exit 4 (an
    unknown plugin name, as --loss NAME), before any dataset is read (train.json does not exist)."""
    from embtune_core.workflow.pipeline import Pipeline

    index = tmp_path / "index.json"
    index.write_text(json.dumps({"corpus": _index()}))
    code = main(["train", "--train", str(tmp_path / "missing.json"), "--out", str(tmp_path / "m"),
                 "--index-corpus", str(index), "--index-pseudo-queries", "ictt=1"])
    err = capsys.readouterr().err
    assert code == 4 and err.startswith("embtune: error: <command line>: --index-pseudo-queries: no "
                                        "question_generators implementation named 'ictt'"), err
    config = tmp_path / "t.toml"
    config.write_text(f'[train]\ntrain = "missing.json"\nout = "m"\nindex_corpus = ["{index.as_posix()}"]\n'
                      'index_pseudo_queries = { ictt = 1 }\n')
    assert main(["train", "--config", str(config)]) == 4
    assert capsys.readouterr().err.startswith(f"embtune: error: {config}: train.index_pseudo_queries: no ")
    (tmp_path / "docs").mkdir()
    for table in ("train", "adapter"):
        run = {"data": {"inputs": [str(tmp_path / "docs")]}, table: {"index_pseudo_queries": {"crop": 1, "x": 2}}}
        with pytest.raises(PluginError) as caught:
            Pipeline(run, config_path=config, run_dir=tmp_path / "run", echo=lambda _: None)
        assert str(caught.value).startswith(f"{config}: {table}.index_pseudo_queries: no question_generators "
                                            "implementation named 'x'")
