"""One typed settings model per table: every documented key of every table is accepted, a typo in
any table is refused naming file and key, a wrong type names its field, and the pipeline and the
commands produce the same dataset and the same scores from the same settings."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from corpora import TOPICS, topic_corpus

from embtune_core.adapters.adapter_training import AdapterTrainingConfig
from embtune_core.encoders.encoder_options import TABLE_KEYS
from embtune_core.errors import ConfigError
from embtune_core.finetuning.training import TrainSettings
from embtune_core.settings import DatasetSettings, EvaluateSettings, from_table, plugin_table
from embtune_core.workflow.pipeline import Pipeline


@pytest.fixture
def docs(tmp_path) -> Path:
    return topic_corpus(tmp_path / "docs", TOPICS[:8])


def full_config(docs: Path, model: str) -> dict:
    """Every key each table documents, with a value of its type (plugin tables: the plugin's options)."""
    return {
        "run": {"name": "all", "out": "runs", "seed": 3},
        "data": {"inputs": [str(docs)], "val_inputs": [], "skip_bad": True},
        "chunk": {"chunker": "recursive", "chunk_size": 300, "chunk_overlap": 10, "separators": ["\n\n", " "]},
        "generate": {"generator": "ict", "questions_per_chunk": 1, "keep_probability": 0.1, "min_words": 5,
                     "max_words": 64, "seed": 1},
        "split": {"val_fraction": 0.3, "split_by": "page", "seed": 5},
        "mine": {"enabled": True, "miner": "embedding-rank", "encoder": model, "num_negatives": 2, "range_min": 0,
                 "range_max": 10, "relative_margin": 0.05, "margin": 0.1, "use_cache": False,
                 "query_prompt": "query: ", "document_prompt": "passage: ", "backend": "torch", "document_windows": "mean"},
        "train": {"enabled": True, "model": model, "loss": "cached-mnrl", "loss_options": {"mini_batch_size": 4},
                  "matryoshka_dims": [32, 16], "epochs": 1.5, "batch_size": 4, "lr": 1e-4, "warmup_ratio": 0.1,
                  "weight_decay": 0.0, "seed": 2, "max_steps": 3, "save_steps": 1, "save_total_limit": 1,
                  "logging_steps": 1, "train_last_layers": 1, "max_seq_length": 64, "export_max_seq_length": 128,
                  "keep_if_worse": True, "precision": "fp32", "eval_batch_size": 8,
                  "index_pseudo_queries": {"ict": 1}, "index_ratio": 0.5, "index_hard_negatives": 1,
                  "dev_fraction": 0.2, "final_fit": True, "lora": False, "lora_rank": 8, "lora_alpha": 16,
                  "lora_dropout": 0.1, "lora_target_modules": None, "lora_merge": False,
                  "query_prompt": "query: ", "document_prompt": "passage: ", "report_to": "none",
                  "document_windows": "off"},
        "adapter": {"enabled": True, "encoder": model, "type": "two-layer", "adapter_options": {"hidden": 8},
                    "epochs": 2, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0, "temperature": 0.05, "temperature_grid": [0.1],
                    "identity_reg": 1.0, "hard_negative_weight": 1.0, "corpus_negatives": True,
                    "max_corpus_negatives": 100, "val_fraction": 0.2, "patience": 2, "selection_metric": "mrr@10",
                    "normalize_output": True, "index_metric": "l2", "matryoshka_dims": [32, 16], "seed": 4,
                    "device": "cpu",
                    "index_pseudo_queries": {"ict": 1}, "final_fit": True, "query_prompt": "query: ",
                    "document_prompt": "passage: ", "backend": "torch", "document_windows": "mean"},
        "evaluate": {"dims": [32, 16], "k": [1, 5], "baselines": ["bm25", "hybrid"], "corpus": "both",
                     "batch_size": 8, "device": "cpu", "precision": "fp32", "max_seq_length": 64,
                     "confidence": 0.9, "resamples": 100, "permutations": 100, "query_prompt": "query: ",
                     "document_prompt": "passage: ", "backend": "torch", "document_windows": "mean"},
        "export": {"zip": False},
    }


def _pipeline(config: dict, tmp_path: Path) -> Pipeline:
    return Pipeline(config, config_path=tmp_path / "c.toml", run_dir=tmp_path / "run", echo=lambda _: None)


def test_every_documented_key_of_every_table_is_accepted(docs, tmp_path, tiny_model_dir):
    config = full_config(docs, tiny_model_dir)
    resolved = _pipeline(config, tmp_path).resolved()
    for table, values in config.items():
        for key, value in values.items():
            shown = "adapter" if (table, key) == ("adapter", "type") else key
            if key not in ("index_pseudo_queries",):
                assert resolved[table][shown] == value, (table, key)
    # Every field of every typed table appears in the full config (a new field must be documented here).
    assert set(config["evaluate"]) == {f.name for f in dataclasses.fields(EvaluateSettings)} | set(TABLE_KEYS)
    adapter_fields = {f.name for f in dataclasses.fields(AdapterTrainingConfig)} - {"adapter"}
    assert adapter_fields <= set(config["adapter"])
    run_sets = {"train", "val", "out", "checkpoint_dir", "resume", "split", "val_split", "recommend", "freeze_layers",
                "index_corpus"}  # index_corpus: the run's own chunks when index_pseudo_queries is on
    assert {f.name for f in dataclasses.fields(TrainSettings)} - run_sets <= set(config["train"])
    # Existing datasets instead of documents: the other keys of [data].
    (tmp_path / "t.json").write_text(json.dumps({"queries": {}, "corpus": {}, "relevant_docs": {}}))
    data = {"train": str(tmp_path / "t.json"), "val": str(tmp_path / "t.json"), "train_split": "train",
            "val_split": "dev"}
    assert _pipeline({"data": data}, tmp_path).resolved()["data"]["val_split"] == "dev"


def _typos(table: str, values: dict) -> list[tuple[str, str]]:
    return [(key, key + "x") for key in values if key not in ("enabled",)] + [(None, "typo_kk")]


@pytest.mark.parametrize("table", ["run", "data", "chunk", "generate", "split", "mine", "train", "adapter",
                                   "evaluate", "export"])
def test_a_typo_in_any_table_is_refused_naming_file_and_key(table, docs, tmp_path, tiny_model_dir):
    config = full_config(docs, tiny_model_dir)
    for key, typo in _typos(table, config[table]):
        bad = json.loads(json.dumps(config))
        if key is not None:
            bad[table][typo] = bad[table].pop(key)
            if (table, key) in (("data", "inputs"), ("chunk", "chunker"), ("generate", "generator"),
                                ("mine", "miner"), ("adapter", "type")):
                continue  # the table still reads (without its required or naming key): checked elsewhere
        else:
            bad[table][typo] = 1
        with pytest.raises(ConfigError) as caught:
            _pipeline(bad, tmp_path)
        text = str(caught.value)
        assert text.startswith(f"{tmp_path / 'c.toml'}: {table}.{typo}: unknown key"), text
        if key is not None and len(key) > 3:
            assert f"did you mean '{key}'" in text or table == "generate", text
    assert not (tmp_path / "run").exists()


def test_command_tables_refuse_typos_and_name_wrong_types(tiny_model_dir):
    with pytest.raises(ConfigError, match=r"dataset\.chunk_sise: unknown key\(s\) chunk_sise \(did you mean"):
        from_table(DatasetSettings, {"chunk_sise": 3}, path="c.toml")
    with pytest.raises(ConfigError, match=r"train\.warmup_ration: .*did you mean 'warmup_ratio'"):
        TrainSettings.from_mapping({"train": "t", "out": "o", "warmup_ration": 0.1}, "c.toml")
    with pytest.raises(ConfigError, match=r"mine\.num_negative: .*did you mean 'num_negatives'"):
        plugin_table("mine", {"num_negative": 3}, path="c.toml")
    with pytest.raises(ConfigError, match=r"mine\.num_negatives: must be an integer"):
        plugin_table("mine", {"num_negatives": "3"}, path="c.toml")
    with pytest.raises(ConfigError, match=r"adapter\.typ: .*did you mean 'type'.*; known: .*\btype\b"):
        AdapterTrainingConfig.from_mapping({"typ": "linear"}, "c.toml")  # type: the name the docs give
    # A bad weight_decay is reported as weight_decay (it was reported as identity_reg).
    with pytest.raises(ConfigError, match=r"c\.toml: adapter\.weight_decay: must be >= 0"):
        AdapterTrainingConfig.from_mapping({"weight_decay": -1}, "c.toml")
    with pytest.raises(ConfigError, match=r"train\.weight_decay: must be >= 0"):
        TrainSettings.from_mapping({"train": "t", "out": "o", "weight_decay": -1}, "c.toml")
    with pytest.raises(ConfigError, match=r"evaluate\.k: must be a list of integers"):
        from_table(EvaluateSettings, {"k": "5"}, path="c.toml")
    with pytest.raises(ConfigError, match=r'evaluate\.corpus: must be one of "validation", "index", "both"'):
        from_table(EvaluateSettings, {"corpus": "all"}, path="c.toml")
    with pytest.raises(ConfigError, match=r"train\.precision: must be one of"):
        TrainSettings(train="t", out="o", precision="fp8").validate("c.toml")


def test_the_run_refuses_train_keys_it_sets_itself(docs, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.out: set by the run"):
        _pipeline({"data": {"inputs": [str(docs)]}, "train": {"out": "elsewhere"}}, tmp_path)


def test_print_config_shows_the_resolved_settings(docs, tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[data]\ninputs = ["{docs.as_posix()}"]\n[run]\nseed = 9\n[evaluate]\nk = [1, 3]\n')
    result = subprocess.run([sys.executable, "-m", "embtune_core.cli", "run", str(config), "--print-config"],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["evaluate"]["k"] == [1, 3] and shown["evaluate"]["resamples"] == 2000
    assert shown["split"]["seed"] == 9 and shown["generate"] == {"generator": "ict", "seed": 9}
    # a config that names no technique gets every one with its defaults (the recommendation chooses)...
    assert shown["train"]["enabled"] and shown["adapter"]["enabled"] and shown["index_tuning"]["enabled"]
    assert shown["recommend"] == {"latency": True, "sparse_dense": True, "probe": True}
    assert not (tmp_path / "runs").exists()  # printing runs nothing
    # ...and a config that names one gets what it names
    config.write_text(f'[data]\ninputs = ["{docs.as_posix()}"]\n[adapter]\ntype = "linear"\n')
    result = subprocess.run([sys.executable, "-m", "embtune_core.cli", "run", str(config), "--print-config"],
                            capture_output=True, text=True, check=False)
    shown = json.loads(result.stdout)
    assert shown["train"] == {"enabled": False} == shown["index_tuning"] and shown["adapter"]["enabled"]


def test_pipeline_and_commands_make_the_same_dataset_and_scores(docs, tmp_path, tiny_model_dir):
    """Same settings, once through `embtune run` and once through build-dataset + evaluate: the same
    train/val files byte for byte and the same per-query scores. split_by = "page" runs."""
    from embtune_core.cli import main

    config = tmp_path / "c.toml"
    config.write_text(f"""
[run]
seed = 7
[data]
inputs = ["{docs.as_posix()}"]
[chunk]
chunker = "recursive"
chunk_size = 200
chunk_overlap = 0
[generate]
generator = "ict"
[split]
val_fraction = 0.3
split_by = "page"
[train]
enabled = false
model = "{tiny_model_dir}"
[recommend]
enabled = false
[evaluate]
k = [1, 5]
max_seq_length = 64
""")
    assert main(["run", str(config), "--run-dir", str(tmp_path / "run")]) == 0
    out = tmp_path / "built"
    assert main(["build-dataset", str(docs), "-o", str(out), "--chunker", "recursive", "--chunk-size", "200",
                 "--chunk-overlap", "0", "--generator", "ict", "--seed", "7", "--val-fraction", "0.3",
                 "--split-by", "page"]) == 0
    split = next((tmp_path / "run").glob("stages/split-*"))
    for name in ("train.json", "val.json"):
        assert (split / name).read_bytes() == (out / name).read_bytes(), name
    assert main(["evaluate", str(out / "val.json"), "--system", f"base=model:{tiny_model_dir}", "--k", "1,5",
                 "--seed", "7", "--max-seq-length", "64", "--out", str(tmp_path / "report")]) == 0
    ours = json.loads((tmp_path / "report" / "report.json").read_text())
    theirs = json.loads(next((tmp_path / "run").glob("stages/evaluate-*/report.json")).read_text())
    assert ours["query_ids"] == theirs["query_ids"] and ours["per_query"] == theirs["per_query"]


def _candidate_keys() -> set[str]:
    """Every key some table of some command takes, the run's own keys and the plugin tables' naming keys."""
    from embtune_core import settings
    from embtune_core.workflow import pipeline

    classes = (settings.RunSettings, settings.DataSettings, settings.SplitSettings, settings.EvaluateSettings,
               settings.ExportSettings, settings.DatasetSettings, settings.PluginTable, TrainSettings,
               AdapterTrainingConfig)
    return ({f.name for cls in classes for f in dataclasses.fields(cls)} | set(pipeline.RUN_SETS_IN_TRAIN)
            | set(pipeline.TRAIN_RUN_KEYS) | set(pipeline.ADAPTER_RUN_KEYS) | set(TABLE_KEYS)
            | {"enabled", "type", "chunker", "generator", "miner", "encoder"})


def _refusal(config: dict, tmp_path: Path) -> str | None:
    """The unknown-key refusal ``config`` gets (None when its keys are accepted, whatever their values)."""
    from embtune_core.errors import EmbtuneError

    try:
        _pipeline(config, tmp_path)
    except EmbtuneError as exc:
        text = str(exc)
        return text if "unknown key" in text or "set by the run itself" in text else None
    return None


@pytest.mark.parametrize("table", ["run", "data", "chunk", "generate", "split", "mine", "train", "adapter",
                                   "evaluate", "export"])
def test_unknown_key_errors_list_exactly_the_keys_a_table_takes(table, docs, tmp_path):
    """The "known:" list of a typo's error holds every key the table accepts and no other (it listed the
    keys the run sets itself, train/out/..., and left out enabled)."""
    base = {"data": {"inputs": [str(docs)]}}
    text = _refusal({**base, table: {**base.get(table, {}), "typo_kk": 1}}, tmp_path)
    assert text is not None and "; known: " in text, text
    known = set(text.split("; known: ", 1)[1].split(", "))
    for key in sorted(known | _candidate_keys()):
        refused = _refusal({**base, table: {**base.get(table, {}), key: 1}}, tmp_path)
        assert (refused is None) == (key in known), (table, key, refused)
    if table == "train":
        assert {"dev_fraction", "final_fit", "enabled"} <= known
        assert not known & {"train", "val", "out", "checkpoint_dir", "resume", "split", "val_split"}
    if table == "adapter":
        assert {"enabled", "encoder", "type", "final_fit", "index_pseudo_queries", "backend"} <= known


def test_a_single_value_where_a_list_belongs_is_a_list_of_one(docs, tmp_path):
    corpus = tmp_path / "index.json"
    corpus.write_text(json.dumps({"corpus": {"a": "some text"}}))
    settings = TrainSettings.from_mapping({"train": "t", "out": "o", "index_corpus": "x.json",
                                           "lora": True, "lora_target_modules": "query"}, "c.toml")
    assert settings.index_corpus == ["x.json"] and settings.lora_target_modules == ["query"]
    assert from_table(EvaluateSettings, {"dims": 16, "baselines": "bm25"}).dims == [16]
    assert from_table(DatasetSettings, {"inputs": "docs/"}).inputs == ["docs/"]
    with pytest.raises(ConfigError, match=r"evaluate\.k: must be a list of integers"):
        from_table(EvaluateSettings, {"k": "5"}, path="c.toml")  # a value the list cannot hold stays refused
    # In a run: the stages read the same (the adapter's Matryoshka widths default to [evaluate] dims).
    pipeline = _pipeline({"data": {"inputs": str(docs)}, "evaluate": {"dims": 16, "k": 5},
                          "adapter": {"enabled": True}, "train": {"index_corpus": str(corpus)}}, tmp_path)
    resolved = pipeline.resolved()
    assert resolved["evaluate"]["dims"] == [16] and resolved["evaluate"]["k"] == [5]
    assert resolved["adapter"]["matryoshka_dims"] == [16]
    assert resolved["train"]["index_corpus"] == [str(corpus)]
    # ...and [train] index_corpus is read relative to the config, as [data]'s paths are, and must exist.
    with pytest.raises(ConfigError, match=r"c\.toml: train\.index_corpus: no such file or folder: .*nope\.json"):
        _pipeline({"data": {"inputs": str(docs)}, "train": {"index_corpus": "nope.json"}}, tmp_path)
