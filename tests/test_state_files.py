"""Kind 4 of issue 26: state embtune reads back is verified; a bad file is named and rebuilt (or refused in
one line), never trusted. Each test damages one file the way a disk, a copy or a diverged run does."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pytest
import torch
from test_embedding_cache import CountingEncoder
from test_evaluation import HashingEncoder, small_dataset

from embtune_core.encoders.embedding_cache import EmbeddingCache, identity_dir_name
from embtune_core.errors import ConfigError, InputError
from embtune_core.scoring.evaluation import System, evaluate_systems


def _shards(root, encoder, kind="document"):
    return sorted((root / identity_dir_name(encoder.identity) / kind).glob("*.npy"))


def _ndcg(cache):
    evaluation = evaluate_systems([System("base", HashingEncoder(24), spec="h")], small_dataset(), cache=cache,
                                  progress_bar=False, n_resamples=20, n_permutations=20)
    return evaluation.systems[0].dims[24].means()["ndcg@10"]


def test_a_shard_with_wrong_values_is_named_and_rebuilt(tmp_path, caplog):
    """The issue's instance: a shard with a valid layout but flipped values changed every figure."""
    before = _ndcg(EmbeddingCache(tmp_path))
    shard = _shards(tmp_path, HashingEncoder(24))[0]
    original = shard.read_bytes()
    data = bytearray(original)
    data[-8:] = np.array([7.5, -3.25], dtype=np.float32).tobytes()  # bit rot in the last vector
    shard.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        after = _ndcg(EmbeddingCache(tmp_path))
    assert after == before  # before the fix: the damaged vectors were used
    assert f"embedding cache shard {shard} does not match its checksum" in caplog.text
    assert shard.read_bytes() == original  # rebuilt: the same vectors, so the same bytes and name


def test_an_empty_shard_is_named_and_rebuilt(tmp_path, caplog):
    encoder = CountingEncoder()
    first = EmbeddingCache(tmp_path).embed(encoder, ["a", "b"])
    (shard,) = _shards(tmp_path, encoder, "query")
    shard.write_bytes(b"")  # before: EOFError on every command for that model, file not named
    fresh = CountingEncoder()
    with caplog.at_level(logging.WARNING):
        again = EmbeddingCache(tmp_path).embed(fresh, ["a", "b"])
    np.testing.assert_array_equal(again, first)
    assert fresh.encoded == ["a", "b"] and f"{shard} is empty (0 bytes)" in caplog.text


def test_a_foreign_shard_of_another_width_is_set_aside_not_the_good_ones(tmp_path, caplog):
    encoder, other = CountingEncoder(dim=8), CountingEncoder(identity="other", dim=4)
    first = EmbeddingCache(tmp_path, shard_size=1).embed(encoder, ["a", "b", "c"])
    EmbeddingCache(tmp_path).embed(other, ["z"])
    (foreign,) = _shards(tmp_path, other, "query")
    copied = _shards(tmp_path, encoder, "query")[0].parent / "b2-0.npy"  # sorts before the good shards
    shutil.copy(foreign, copied)
    fresh = CountingEncoder(dim=8)
    with caplog.at_level(logging.WARNING):
        again = EmbeddingCache(tmp_path).embed(fresh, ["a", "b", "c"])
    np.testing.assert_array_equal(again, first)
    assert fresh.calls == []  # before: the good shards were ignored and the encoder blamed (exit 3)
    assert str(copied) in caplog.text


def test_an_encoder_of_another_width_replaces_stale_shards(tmp_path, caplog):
    EmbeddingCache(tmp_path).embed(CountingEncoder(dim=8), ["a", "b"])
    wider = CountingEncoder(dim=16)  # same identity, another width: the cached vectors are not its own
    with caplog.at_level(logging.WARNING):
        vectors = EmbeddingCache(tmp_path).embed(wider, ["a", "b", "c"])
    assert vectors.shape == (3, 16) and sorted(wider.encoded) == ["a", "b", "c"]
    assert "the encoder returns 16-dimensional vectors, the cached shards hold 8" in caplog.text


def test_identity_file_damage_and_older_shards(tmp_path, caplog):
    encoder = CountingEncoder()
    first = EmbeddingCache(tmp_path).embed(encoder, ["a"])
    folder = tmp_path / identity_dir_name(encoder.identity)
    (folder / "identity.txt").write_text("")
    (shard,) = _shards(tmp_path, encoder, "query")
    legacy = shard.with_name("0123456789abcdef0123456789abcdef.npy")  # an older embtune's random name
    shard.rename(legacy)
    fresh = CountingEncoder()
    with caplog.at_level(logging.INFO):
        np.testing.assert_array_equal(EmbeddingCache(tmp_path).embed(fresh, ["a"]), first)
    assert fresh.calls == [] and (folder / "identity.txt").read_text() == encoder.identity
    assert "had no checksum; renamed" in caplog.text and _shards(tmp_path, encoder, "query")[0].name.startswith("b2-")
    (folder / "identity.txt").write_text("another encoder")  # a folder copied over this one
    third = CountingEncoder()
    EmbeddingCache(tmp_path).embed(third, ["a"])
    assert third.encoded == ["a"] and "names another encoder" in caplog.text


@pytest.mark.parametrize("damage", ["empty", "torn", "other stage", "file changed"])
def test_a_damaged_stage_record_runs_the_stage_again(tmp_path, caplog, damage):
    from embtune_core.runtime.rundir import RunDir

    run = RunDir(tmp_path / "run")
    stage = run.stage("split", {"x": 1})
    stage.start()
    (stage.path / "train.json").write_text('{"queries": {}}')
    stage.finish({"train": str(stage.path / "train.json")}, 1.0)
    assert stage.done and "train.json" in json.loads((stage.path / "_done.json").read_text())["files"]
    marker = stage.path / "_done.json"
    if damage == "empty":
        marker.write_text("")  # before: "up to date", then JSONDecodeError on every re-run
    elif damage == "torn":
        marker.write_text(marker.read_text()[:20])
    elif damage == "other stage":
        other = run.stage("split", {"x": 2})
        marker.write_text(marker.read_text().replace(stage.key, other.key))
    else:
        (stage.path / "train.json").write_text('{"queries": {"q": "edited"}}')
    with caplog.at_level(logging.WARNING):
        assert not stage.done
    assert f"stage {stage.path.name}: " in caplog.text and "the stage runs again" in caplog.text
    assert not marker.exists()


def test_nan_adapter_weights_are_refused_in_one_line(tmp_path, tiny_model_dir):
    from safetensors.torch import save_file

    from embtune_core.adapters.adapter_io import AdapterConfig, load_adapter, save_adapter
    from embtune_core.cli import main
    from embtune_plugins.adapter_modules import LinearAdapter

    module = LinearAdapter(32)
    with torch.no_grad():
        module.linear.weight.fill_(float("nan"))  # what a diverged run leaves
    with pytest.raises(InputError, match="hold NaN or infinite values .*not saved"):
        save_adapter(tmp_path / "ad", module, AdapterConfig("linear", 32))
    assert not (tmp_path / "ad").exists()
    good = save_adapter(tmp_path / "ad", LinearAdapter(32), AdapterConfig("linear", 32))
    state = {k: v.clone().fill_(float("nan")) for k, v in LinearAdapter(32).state_dict().items()}
    save_file(state, str(good / "adapter.safetensors"), metadata={"format": "embtune-adapter"})
    with pytest.raises(InputError, match="adapter.safetensors: weights .* hold NaN or infinite values"):
        load_adapter(good)
    data = tmp_path / "d.json"
    small_dataset().save(data)
    # before: exit 1 IndexError in the search
    assert main(["evaluate", str(data), "--system", f"a=model:{tiny_model_dir}+adapter:{good}"]) == 3


def test_a_nan_model_or_encoder_is_refused_before_the_search(tmp_path):
    class NaNEncoder(HashingEncoder):
        def _encode(self, texts):
            out = super()._encode(texts)
            out[0, 0] = np.nan
            return out

        encode_queries = encode_documents = _encode

    with pytest.raises(InputError, match="system 'nan' gives 1 of 24 query vectors with NaN"):
        evaluate_systems([System("nan", NaNEncoder(24), spec="nan")], small_dataset(), cache=EmbeddingCache(tmp_path),
                         progress_bar=False)


def test_damaged_baseline_and_fingerprint_files(tmp_path, monkeypatch, caplog):
    from embtune_core.finetuning import training_evaluator
    from embtune_core.finetuning.training import TrainSettings, train

    work = tmp_path / "ck"
    work.mkdir()
    (work / training_evaluator.BASELINE).write_text("{")  # torn
    monkeypatch.setattr(training_evaluator, "evaluate_now", lambda trainer: {"ndcg@10": 0.5})
    settings = TrainSettings(train="t.json", out="m", model="x")
    with caplog.at_level(logging.WARNING):
        assert training_evaluator.baseline_metrics(None, work, settings, 0) == {"ndcg@10": 0.5}
    assert "is damaged (JSONDecodeError); the base model is evaluated again" in caplog.text
    data = tmp_path / "d.json"
    small_dataset().save(data)
    (work / "checkpoint-1").mkdir()
    (work / "run_fingerprint.txt").write_text("")
    with pytest.raises(ConfigError, match="run_fingerprint.txt is empty or unreadable"):
        train(TrainSettings(train=str(data), out=str(tmp_path / "m"), checkpoint_dir=str(work), model="x"))
