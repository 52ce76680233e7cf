"""Issue 19: LoRA training (only adapter weights train; the folder loads with and without merging),
prompts through train -> model folder -> evaluate, and --report-to tensorboard."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_losses import _one_torch_thread, make_qa  # noqa: F401 - the fixture applies here too

from embtune_core.cli import main
from embtune_core.encoders import lora
from embtune_core.errors import ConfigError
from embtune_core.finetuning.training import TrainSettings, train


@pytest.fixture
def qa_files(tmp_path):
    """A training and a validation QA file over the same chunks, sharing no query."""
    train_path, val_path = tmp_path / "train.json", tmp_path / "val.json"
    make_qa().save(train_path)
    val = make_qa(negatives=False)
    renamed = {q: "v" + q for q in val.queries}
    val.queries = {renamed[q]: "tell me " + t for q, t in val.queries.items()}
    val.relevant_docs = {renamed[q]: ids for q, ids in val.relevant_docs.items()}
    val.save(val_path)
    return train_path, val_path


peft = pytest.importorskip("peft", reason="LoRA needs the lora extra (peft)")


def _expected_lora_parameters(model_dir: str, rank: int, targets: tuple[str, ...]) -> int:
    """r * (in + out) per adapted linear layer, counted from the base model itself."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir)
    total = 0
    for name, module in model[0].auto_model.named_modules():
        if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] in targets:
            total += rank * (module.in_features + module.out_features)
    return total


def test_lora_trains_only_adapter_weights_and_loads_with_and_without_merge(tiny_model_dir, qa_files, tmp_path):
    from sentence_transformers import SentenceTransformer

    common = {"train": str(qa_files[0]), "model": tiny_model_dir, "loss": "mnrl", "batch_size": 8, "lr": 5e-2,
                  "max_steps": 3, "save_steps": 3, "lora": True, "lora_rank": 4, "lora_alpha": 8,
                  "lora_target_modules": ["query", "value"]}
    summary = train(TrainSettings(out=str(tmp_path / "adapter"), **common))
    record = summary["lora"]
    expected = _expected_lora_parameters(tiny_model_dir, 4, ("query", "value"))
    base = SentenceTransformer(tiny_model_dir)
    base_total = sum(p.numel() for p in base.parameters())
    assert expected > 0 and record["trainable_parameters"] == expected
    assert record["total_parameters"] == base_total + expected
    assert record["target_modules"] == ["query", "value"]

    folder = tmp_path / "adapter"
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    assert not (folder / "model.safetensors").exists()  # the base weights are not copied
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["peft_type"] == "LORA"
    from safetensors.torch import load_file

    saved = load_file(str(folder / "adapter_model.safetensors"))
    assert saved and all("lora_" in k for k in saved)
    assert sum(t.numel() for t in saved.values()) == expected

    texts = ["what was the revenue growth", "a risk factor about regulation"]
    from embtune_core.encoders.models import load_sentence_transformer

    loaded = load_sentence_transformer(str(folder))  # base + peft's PeftModel, the folder's prompts
    adapted = loaded.encode(texts, convert_to_numpy=True)
    plain = base.encode(texts, convert_to_numpy=True)
    assert not np.allclose(adapted, plain, atol=1e-5), "LoRA changed nothing"
    # the base weights themselves stayed frozen: without the adapter the vectors are the base's
    with loaded[0].model.disable_adapter():
        np.testing.assert_allclose(loaded.encode(texts, convert_to_numpy=True), plain, atol=1e-5)
    from embtune_core.encoders.encoding import encoder_from_spec

    encoder = encoder_from_spec(f"st:{folder}")  # its identity covers the base model's files too
    assert f"+base:{lora.base_fingerprint(folder)}" in encoder.identity
    np.testing.assert_allclose(encoder.encode_documents(texts), adapted / np.linalg.norm(adapted, axis=1,
                                                                                          keepdims=True), atol=1e-5)
    if lora.peft_loads_in_sentence_transformers():  # transformers' peft integration accepts this peft
        np.testing.assert_allclose(SentenceTransformer(str(folder)).encode(texts), adapted, atol=1e-5)

    merged_summary = train(TrainSettings(out=str(tmp_path / "merged"), lora_merge=True, **common))
    assert merged_summary["lora"]["merged"] is True
    merged_dir = tmp_path / "merged"
    assert not (merged_dir / "adapter_config.json").exists() and (merged_dir / "model.safetensors").is_file()
    merged = SentenceTransformer(str(merged_dir))
    assert not any("lora" in k for k in merged.state_dict())
    np.testing.assert_allclose(merged.encode(texts, convert_to_numpy=True), adapted, atol=1e-5)
    card = (merged_dir / "README.md").read_text()
    assert "LoRA" in card and str(expected) in card


@pytest.mark.skipif(not lora.peft_loads_in_sentence_transformers(),
                    reason="transformers' peft integration wants a newer peft than installed (MIN_PEFT_VERSION)")
def test_adapter_folder_loads_in_sentence_transformers_directly(tiny_model_dir, qa_files, tmp_path):
    from sentence_transformers import SentenceTransformer

    train(TrainSettings(train=str(qa_files[0]), out=str(tmp_path / "a"), model=tiny_model_dir, max_steps=1,
                        batch_size=8, lora=True))
    from embtune_core.encoders.models import load_sentence_transformer

    texts = ["revenue"]
    np.testing.assert_allclose(SentenceTransformer(str(tmp_path / "a")).encode(texts),
                               load_sentence_transformer(str(tmp_path / "a")).encode(texts), atol=1e-5)


def test_lora_settings_are_checked():
    with pytest.raises(ConfigError, match="partial fine-tuning"):
        TrainSettings.from_mapping({"train": "t.json", "out": "o", "lora": True, "train_last_layers": 1})
    with pytest.raises(ConfigError, match="train.lora_rank"):
        TrainSettings.from_mapping({"train": "t.json", "out": "o", "lora": True, "lora_rank": 0})
    with pytest.raises(ConfigError, match="LoRA training only"):
        TrainSettings.from_mapping({"train": "t.json", "out": "o", "lora_merge": True})


def test_lora_from_config_table_and_unknown_module_named(tiny_model_dir, qa_files, tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text(f'[train]\ntrain = "{qa_files[0]}"\nmodel = "{tiny_model_dir}"\nmax_steps = 2\n'
                      f'batch_size = 8\nlora = true\nlora_rank = 2\nlora_target_modules = ["nosuchlayer"]\n'
                      f'out = "{tmp_path / "o"}"\n')
    assert main(["train", "--config", str(config)]) == 3
    err = capsys.readouterr().err
    assert "lora_target_modules" in err and "nosuchlayer" in err
    assert main(["train", "--config", str(config), "--lora-target-modules", "query",
                 "--lora-rank", "2"]) == 0
    assert json.loads((tmp_path / "o" / "embtune_train.json").read_text())["lora"]["rank"] == 2


def test_prompts_round_trip_train_folder_evaluate(tiny_model_dir, qa_files, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "prompted"
    assert main(["train", "--train", str(qa_files[0]), "--model", tiny_model_dir, "--max-steps", "1",
                 "--batch-size", "8", "--query-prompt", "query: ", "--document-prompt", "passage: ",
                 "--out", str(out)]) == 0
    stored = json.loads((out / "config_sentence_transformers.json").read_text())["prompts"]
    assert stored["query"] == "query: " and stored["document"] == "passage: "
    model = SentenceTransformer(str(out))
    text = ["how did revenue change"]
    # sentence-transformers applies them: encode_query(x) == encode("query: " + x) != encode(x)
    np.testing.assert_allclose(model.encode_query(text), model.encode(["query: " + text[0]]), atol=1e-6)
    assert not np.allclose(model.encode_query(text), model.encode(text), atol=1e-4)
    np.testing.assert_allclose(model.encode_document(text), model.encode(["passage: " + text[0]]), atol=1e-6)

    # embtune's encoder of the folder applies them too, and its identity changes with them
    from embtune_core.encoders.encoding import encoder_from_spec

    encoder = encoder_from_spec(f"st:{out}")
    np.testing.assert_allclose(encoder.encode_queries(text), model.encode_query(text, normalize_embeddings=True),
                               atol=1e-5)
    other = encoder_from_spec(f"st:{out}", query_prompt="search_query: ")
    assert other.identity != encoder.identity
    assert not np.allclose(other.encode_queries(text), encoder.encode_queries(text), atol=1e-4)

    # evaluate: the folder's prompts vs explicit other prompts give other figures
    val = qa_files[1]
    assert main(["evaluate", str(val), "--system", f"tuned=model:{out}", "--out", str(tmp_path / "ev1")]) == 0
    assert main(["evaluate", str(val), "--system", f"tuned=model:{out}", "--query-prompt", "",
                 "--document-prompt", "", "--out", str(tmp_path / "ev2")]) == 0
    one = json.loads((tmp_path / "ev1" / "report.json").read_text())["systems"][0]
    two = json.loads((tmp_path / "ev2" / "report.json").read_text())["systems"][0]
    assert "query_prompt=''" in two["identity"] and "query_prompt" not in one["identity"]


def test_integrations_say_when_a_models_prompts_are_not_applied(tiny_model_dir, qa_files, tmp_path, caplog):
    from embtune_integrations.langchain import EmbtuneEmbeddings

    out = tmp_path / "prompted"
    assert main(["train", "--train", str(qa_files[0]), "--model", tiny_model_dir, "--max-steps", "1",
                 "--batch-size", "8", "--query-prompt", "query: ", "--out", str(out)]) == 0
    with caplog.at_level("WARNING"):
        EmbtuneEmbeddings(str(out))
    assert "stores prompts {'query': 'query: '} that prompts=False does not apply" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        EmbtuneEmbeddings(str(out), prompts=True)
        EmbtuneEmbeddings(tiny_model_dir)
    assert "does not apply" not in caplog.text


def test_report_to_tensorboard_writes_event_files_and_loss_log(tiny_model_dir, qa_files, tmp_path, monkeypatch):
    pytest.importorskip("tensorboard", reason="needs the tracking extra")
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # event files go to the checkpoint folder, never the current directory
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    out = tmp_path / "tb"
    train(TrainSettings(train=str(qa_files[0]), out=str(out), model=tiny_model_dir, max_steps=2, batch_size=8,
                        logging_steps=1, report_to="tensorboard"))
    checkpoints = tmp_path / "tb.checkpoints"
    events = list((checkpoints / "runs").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    assert any("loss" in tag for tag in accumulator.Tags()["scalars"])
    assert (checkpoints / "loss_log.jsonl").read_text().strip()
    assert not (tmp_path / "cwd" / "runs").exists()


def test_report_to_unknown_tracker_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown tracker 'nope'"):
        TrainSettings.from_mapping({"train": "t.json", "out": "o", "report_to": "nope"})


def test_prompts_reach_train_adapter_and_mine_and_never_mix(tiny_model_dir, qa_files, tmp_path):
    from embtune_core.adapters.adapter_io import load_adapter
    from embtune_core.encoders.encoding import encoder_from_spec
    from embtune_core.errors import InputError

    out = tmp_path / "adapter"
    assert main(["train-adapter", "--train", str(qa_files[0]), "--model", tiny_model_dir, "--epochs", "1",
                 "--query-prompt", "query: ", "--out", str(out)]) == 0
    adapter = load_adapter(out)
    adapter.check_base(encoder_from_spec(f"st:{tiny_model_dir}", query_prompt="query: "))
    with pytest.raises(InputError):  # trained on prompted query vectors: refused for unprompted ones
        adapter.check_base(encoder_from_spec(f"st:{tiny_model_dir}"))

    mined = tmp_path / "mined.json"
    assert main(["mine", str(qa_files[0]), "--encoder", tiny_model_dir, "--query-prompt", "query: ",
                 "--num-negatives", "1", "-o", str(mined)]) == 0
    assert mined.is_file()
    # an option that does not apply to API encoders is refused in one line (usage error)
    assert main(["mine", str(qa_files[0]), "--encoder", "openai:text-embedding-3-small@http://127.0.0.1:9/v1",
                 "--query-prompt", "q: ", "-o", str(tmp_path / "m2.json")]) == 2


def test_pipeline_tables_take_prompts_backend_and_lora(tmp_path):
    from embtune_core.workflow.pipeline import Pipeline

    (tmp_path / "docs").mkdir()
    good = {"data": {"inputs": [str(tmp_path / "docs")]},
            "train": {"lora": True, "query_prompt": "query: ", "report_to": "none"},
            "mine": {"query_prompt": "query: "}, "adapter": {"query_prompt": "query: ", "backend": "torch"},
            "evaluate": {"document_prompt": "passage: "}}
    Pipeline(good, config_path=tmp_path / "c.toml", run_dir=tmp_path / "run")
    with pytest.raises(ConfigError, match="evaluate.backend"):
        Pipeline({**good, "evaluate": {"backend": "tensorrt"}}, config_path=tmp_path / "c.toml")
    with pytest.raises(ConfigError, match="train.query_prompt"):
        Pipeline({**good, "train": {"query_prompt": 3}}, config_path=tmp_path / "c.toml")
