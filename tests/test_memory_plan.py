"""GradCache's mini-batch chosen from the memory available (embtune_core.finetuning.memory_plan).

The estimate of activations per text is checked against the growth of peak memory measured by
bench/gradcache_minibatch.py (bench/results/gradcache_minibatch.json); GradCache's loss and gradient
against the plain loss's (sentence-transformers' MultipleNegativesRankingLoss, the reference).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from embtune_core.finetuning import memory_plan
from embtune_core.finetuning.memory_plan import CPU_BUDGET_CAP, GIB, activation_bytes_per_text, plan

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def minilm_config(minilm_path):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(minilm_path)


def _model(config):
    """What plan() reads of a SentenceTransformer: model[0].auto_model.config."""
    return [SimpleNamespace(auto_model=SimpleNamespace(config=config))]


def test_the_estimate_per_text_is_the_measured_growth_of_peak_memory(minilm_config):
    measured = json.loads((ROOT / "bench" / "results" / "gradcache_minibatch.json").read_text())
    per_text = measured["measured_bytes_per_text"]
    estimate = activation_bytes_per_text(minilm_config, measured["tokens"])
    assert abs(estimate - per_text) / per_text < 0.15, (estimate, per_text)


def test_the_mini_batch_follows_the_memory_available(minilm_config):
    model = _model(minilm_config)
    per_text = activation_bytes_per_text(minilm_config, 256)
    roomy = plan(model, batch_size=64, longest_tokens=256, device="cpu", available=64 * GIB)
    assert roomy.budget_bytes == CPU_BUDGET_CAP  # a CPU step is no faster with more
    assert roomy.gradient_cache and roomy.mini_batch_size == CPU_BUDGET_CAP // per_text
    laptop = plan(model, batch_size=64, longest_tokens=256, device="cpu", available=2 * GIB)
    assert laptop.budget_bytes == GIB // 2 and laptop.mini_batch_size == (GIB // 2) // per_text
    assert laptop.mini_batch_size < roomy.mini_batch_size
    assert plan(model, batch_size=64, longest_tokens=256, device="cpu", available=1).mini_batch_size == 1
    short = plan(model, batch_size=64, longest_tokens=16, device="cpu", available=64 * GIB)
    assert not short.gradient_cache and short.mini_batch_size == 64  # short texts: the batch fits
    gpu = plan(model, batch_size=64, longest_tokens=256, device="cuda:0", available=40 * GIB, dtype_bytes=2)
    assert gpu.budget_bytes == 20 * GIB and not gpu.gradient_cache
    line = memory_plan.describe(laptop)
    assert line.startswith(f"memory: GradCache (cached MNRL) embeds each batch of 64 rows {laptop.mini_batch_size} at a")
    assert "2.0 GB available" in line and "512 MB" in line


def test_a_given_mini_batch_wins_and_an_unknown_model_embeds_at_once(minilm_config):
    model = _model(minilm_config)
    given = plan(model, batch_size=64, longest_tokens=256, device="cpu", requested=16, available=1)
    assert (given.mini_batch_size, given.gradient_cache, given.source) == (16, True, "setting")
    whole = plan(model, batch_size=64, longest_tokens=256, device="cpu", requested=128)
    assert (whole.mini_batch_size, whole.gradient_cache) == (64, False)
    unknown = plan([object()], batch_size=64, longest_tokens=256, device="cpu", available=1)
    assert not unknown.gradient_cache and "model's shape is unknown" in unknown.reason


def test_an_address_space_limit_bounds_the_memory_available():
    code = "from embtune_core.finetuning.memory_plan import available_memory; print(available_memory('cpu'))"
    proc = subprocess.run(["bash", "-c", f'ulimit -v 3000000 && exec "{sys.executable}" -c "{code}"'],
                          capture_output=True, text=True, cwd=ROOT, check=False,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert 0 <= int(proc.stdout.strip()) < 3_000_000 * 1024


def test_gradcache_gives_the_plain_loss_and_gradient(tiny_model_dir):
    """The same loss over the same in-batch negatives: loss and every weight's gradient as plain MNRL's
    (dropout off, so that the two passes draw nothing at random)."""
    import torch

    from embtune_core.encoders.models import load_sentence_transformer
    from embtune_core.finetuning.losses import create_strategy

    model = load_sentence_transformer(tiny_model_dir)
    model.eval()
    anchors = [f"question {i} about topic{i}" for i in range(8)]
    positives = [f"chunk {i} on topic{i}, " * (1 + i) for i in range(8)]
    features = [model.tokenize(anchors), model.tokenize(positives)]

    def loss_and_grads(mini: int, cache: bool):
        strategy = create_strategy("mnrl")
        strategy.use_mini_batches(mini, cache)
        loss_fn = strategy.build_loss(model)
        model.zero_grad()
        value = loss_fn([dict(f) for f in features], None)
        value.backward()
        return type(loss_fn).__name__, float(value.detach()), {n: p.grad.clone() for n, p in model.named_parameters()
                                                       if p.grad is not None}

    plain_name, plain, plain_grads = loss_and_grads(8, False)
    cached_name, cached, cached_grads = loss_and_grads(3, True)
    assert (plain_name, cached_name) == ("MultipleNegativesRankingLoss", "CachedMultipleNegativesRankingLoss")
    assert cached == pytest.approx(plain, rel=1e-5)
    assert plain_grads.keys() == cached_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cached_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _qa(tmp_path, n: int = 12) -> Path:
    from embtune_core.data.dataset import QADataset

    path = tmp_path / "train.json"
    QADataset({f"q{i}": f"what about topic{i}?" for i in range(n)},
              {f"c{i}": f"Chunk {i} tells about topic{i} in detail." for i in range(n)},
              {f"q{i}": [f"c{i}"] for i in range(n)}).save(path)
    return path


def test_training_says_records_and_resumes_with_its_mini_batch(tiny_model_dir, tmp_path, monkeypatch, caplog):
    from embtune_core.finetuning.training import TrainSettings, train

    data = _qa(tmp_path)
    monkeypatch.setattr(memory_plan, "available_memory", lambda device: 1)  # a machine with no room: one at a time
    settings = TrainSettings(train=str(data), out=str(tmp_path / "m"), model=tiny_model_dir, max_steps=2,
                             batch_size=4)
    with caplog.at_level("INFO", logger="embtune_core.finetuning.training"):
        result = train(settings)
    assert result.memory["gradient_cache"] and result.memory["mini_batch_size"] == 1
    assert result.memory["source"] == "auto" and result.loss["mini_batch_size"] == 1
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("memory: ")]
    assert len(said) == 1 and "embeds each batch of 4 rows 1 at a time" in said[0]
    saved = json.loads((tmp_path / "m" / "embtune_train.json").read_text())
    assert saved["memory"] == result.memory
    assert "| texts of each batch embedded | 1 at a time" in (tmp_path / "m" / "README.md").read_text()
    recorded = json.loads((settings.checkpoints / memory_plan.PLAN_FILE).read_text())
    assert recorded["mini_batch_size"] == 1

    # Resumed where memory is plentiful: the checkpoints' mini-batch is kept, so the bits are the same.
    monkeypatch.setattr(memory_plan, "available_memory", lambda device: 64 * GIB)
    resumed = train(TrainSettings(train=str(data), out=str(tmp_path / "m"), model=tiny_model_dir, max_steps=2,
                                  batch_size=4, resume=True))
    assert resumed.memory["source"] == "resumed" and resumed.memory["mini_batch_size"] == 1


def test_losses_without_in_batch_negatives_plan_nothing(tiny_model_dir, tmp_path):
    from embtune_core.finetuning.training import TrainSettings, train

    result = train(TrainSettings(train=str(_qa(tmp_path)), out=str(tmp_path / "m"), model=tiny_model_dir,
                                 max_steps=1, batch_size=4, loss="contrastive",
                                 loss_options={"bad_chunks": "random"}))
    assert result.memory is None


@pytest.mark.parametrize("bad", [0, -2, "lots", True, 2.5])
def test_a_bad_mini_batch_size_is_refused(bad):
    from embtune_core.errors import ConfigError
    from embtune_core.finetuning.losses import create_strategy

    with pytest.raises(ConfigError, match="mini_batch_size"):
        create_strategy("mnrl", mini_batch_size=bad)


def test_the_out_of_memory_advice_names_the_mini_batch_only_for_losses_that_take_one():
    from embtune_core.finetuning.training import TrainSettings, memory_advice

    settings = TrainSettings(train="t.json", out="m", batch_size=64, max_seq_length=256)
    chosen = {"mini_batch_size": 8, "source": "auto"}
    line = memory_advice(settings, chosen)
    assert line.startswith("--loss-option mini_batch_size=2 (GradCache: the same batch in less memory; now 8, "
                           "chosen from the memory available)")
    assert "lower --batch-size (now 64)" in line and "--max-seq-length (now 256)" in line
    given = memory_advice(settings, {"mini_batch_size": 64, "source": "setting"})
    assert "now 64)" in given and "chosen from" not in given
    # contrastive, cosine...: no mini_batch_size option to give (it would be refused)
    assert "mini_batch_size" not in memory_advice(settings, None)
