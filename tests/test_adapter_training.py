"""Adapter training on cached embeddings, over the OpenAI-compatible API on 127.0.0.1 (real HTTP).

The synthetic task: chunk (k, j) reads "alpha{k} topic{j} ..." and its questions say "beta{k}
topic{j}". The test server's hashed bag of words cannot tell that beta{k} means alpha{k}, so the
base model only finds the topic; a query adapter can learn the beta -> alpha map from training
chunks and apply it to held-out chunks with unseen (k, j) combinations.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from openai_server import OpenAIServer

from embtune_core.adapters.adapter_io import load_adapter
from embtune_core.adapters.adapter_training import (
    AdapterTrainingConfig,
    no_duplicate_batches,
    split_for_validation,
    train_adapter,
)
from embtune_core.cli import main
from embtune_core.data.dataset import QADataset
from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.encoders.encoding import AdaptedEncoder, encoder_from_spec
from embtune_core.errors import ConfigError, InputError


def synonym_dataset(ks=range(8), js=range(8), with_negatives=False) -> QADataset:
    corpus, queries, relevant, negatives = {}, {}, {}, {}
    for k in ks:
        for j in js:
            cid = f"c{k}-{j}"
            corpus[cid] = f"alpha{k} topic{j} report section"
            for n, template in enumerate(("beta{k} topic{j}", "what about beta{k} in topic{j}")):
                qid = f"q{k}-{j}-{n}"
                queries[qid] = template.format(k=k, j=j)
                relevant[qid] = [cid]
                if with_negatives:
                    negatives[qid] = [f"c{(k + 1) % len(ks)}-{j}"]
    extras = {"negatives": negatives} if with_negatives else {}
    return QADataset(queries, corpus, relevant, extras=extras)


def test_batches_are_shuffled_and_never_repeat_a_positive():
    pairs = np.array([(q, q // 2) for q in range(40)])  # two queries per positive, adjacent
    batches = no_duplicate_batches(pairs, 8, np.random.default_rng(0))
    used = np.concatenate(batches)
    assert sorted(used.tolist()) == list(range(40))
    for batch in batches:
        assert len(set(pairs[batch, 1].tolist())) == len(batch) <= 8
    assert used.tolist() != list(range(40))
    again = no_duplicate_batches(pairs, 8, np.random.default_rng(0))
    assert [b.tolist() for b in again] == [b.tolist() for b in batches]  # seeded


def test_validation_split_holds_out_whole_chunks():
    dataset = synonym_dataset()
    train, val = split_for_validation(dataset, 0.25, seed=3)
    train_chunks = {c for ids in train.relevant_docs.values() for c in ids}
    val_chunks = {c for ids in val.relevant_docs.values() for c in ids}
    assert train_chunks and val_chunks and not train_chunks & val_chunks
    assert len(train.queries) + len(val.queries) == len(dataset.queries)
    assert set(val.corpus) == set(dataset.corpus)  # validation ranks against every chunk


def test_adapter_over_openai_api_trains_and_leaves_documents_untouched(tmp_path):
    train = synonym_dataset(js=range(6))
    heldout = synonym_dataset(js=range(6, 8))  # combinations never seen in training
    cache = EmbeddingCache(tmp_path / "cache")
    with OpenAIServer() as server:
        encoder = encoder_from_spec(f"openai:test-embed@{server.base_url}", batch_size=50)
        corpus_texts = list(heldout.corpus.values()) + list(train.corpus.values())
        before = cache.embed(encoder, corpus_texts, kind="document").copy()
        config = AdapterTrainingConfig(adapter="linear", epochs=15, lr=3e-2, batch_size=16, temperature=0.05,
                                       identity_reg=0.01, patience=15, seed=0)
        result = train_adapter(encoder, train, config=config, cache=cache, output_dir=tmp_path / "adapter")
        requests_after_training = server.count("/embeddings")
        after = cache.embed(encoder, corpus_texts, kind="document")
        adapter = load_adapter(tmp_path / "adapter", expected_encoder_identity=encoder.identity)
        adapted = AdaptedEncoder(encoder, adapter)
        documents = adapted.encode_documents(corpus_texts)
        queries = adapted.encode_queries(list(heldout.queries.values()))
        base_queries = encoder.encode_queries(list(heldout.queries.values()))
    # No corpus vector changed: the cached ones, and those the adapted encoder makes.
    np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(documents, before)
    assert server.count("/embeddings") >= requests_after_training
    # Training learned beta -> alpha and it transfers to held-out chunks.
    assert result.best["mrr@10"] > result.baseline["mrr@10"] + 0.2 and result.best_epoch > 0
    corpus = before[: len(heldout.corpus)]
    positives = np.array([list(heldout.corpus).index(ids[0]) for ids in heldout.relevant_docs.values()])

    def hit_at_1(q):
        return float((np.argmax(q @ corpus.T, axis=1) == positives).mean())

    assert hit_at_1(queries) > hit_at_1(base_queries) + 0.3
    assert adapter.config.training["best_epoch"] == result.best_epoch
    assert adapter.config.base_encoder_identity == encoder.identity and "sk-" not in encoder.identity


def test_cached_embeddings_make_a_second_run_free(tmp_path):
    dataset = synonym_dataset(ks=range(4), js=range(4))
    cache = EmbeddingCache(tmp_path / "cache")
    with OpenAIServer() as server:
        encoder = encoder_from_spec(f"openai:e@{server.base_url}")
        config = AdapterTrainingConfig(epochs=2, seed=0)
        train_adapter(encoder, dataset, config=config, cache=cache)
        first = server.count("/embeddings")
        train_adapter(encoder, dataset, config=AdapterTrainingConfig(adapter="two-layer", epochs=3, seed=1),
                      cache=cache)
        assert server.count("/embeddings") == first  # every vector came from the cache


@pytest.mark.parametrize("corpus_negatives, max_corpus_negatives", [(True, 65536), (True, 8), (False, 65536)])
def test_hard_negatives_and_negative_pools(tmp_path, corpus_negatives, max_corpus_negatives):
    dataset = synonym_dataset(with_negatives=True)
    with OpenAIServer() as server:
        encoder = encoder_from_spec(f"openai:e@{server.base_url}")
        config = AdapterTrainingConfig(adapter="two-layer", adapter_options={"hidden": 32}, epochs=15, lr=1e-2,
                                       identity_reg=0.01, corpus_negatives=corpus_negatives,
                                       max_corpus_negatives=max_corpus_negatives, seed=0, patience=15)
        result = train_adapter(encoder, dataset, config=config, cache=EmbeddingCache(tmp_path))
    assert result.best["mrr@10"] > result.baseline["mrr@10"] + 0.1
    assert all(np.isfinite(h["loss"]) for h in result.history[1:])


def test_never_worse_than_the_base_model_on_validation(tmp_path):
    """Labels with no signal: whatever training does, the kept adapter is at least the identity."""
    rng = np.random.default_rng(0)
    dataset = synonym_dataset()
    chunks = list(dataset.corpus)
    dataset.relevant_docs = {q: [chunks[rng.integers(len(chunks))]] for q in dataset.queries}
    with OpenAIServer() as server:
        encoder = encoder_from_spec(f"openai:e@{server.base_url}")
        result = train_adapter(encoder, dataset, config=AdapterTrainingConfig(epochs=5, lr=3e-2, seed=0),
                               cache=EmbeddingCache(tmp_path))
        sample = encoder.encode_queries(["beta1 topic2"])
    assert result.best["mrr@10"] >= result.baseline["mrr@10"]
    if result.best_epoch == 0:
        np.testing.assert_allclose(result.adapter.transform(sample), sample, atol=1e-6)


def test_config_table_and_bad_values():
    config = AdapterTrainingConfig.from_mapping({"type": "two-layer", "epochs": 3, "identity-reg": 0.5})
    assert (config.adapter, config.epochs, config.identity_reg) == ("two-layer", 3, 0.5)
    with pytest.raises(ConfigError, match="unknown key"):
        AdapterTrainingConfig.from_mapping({"epoch": 3}, "cfg.toml")
    with pytest.raises(ConfigError, match="temperature"):
        AdapterTrainingConfig.from_mapping({"temperature": 0}, "cfg.toml")


def test_cli_train_adapter(tmp_path, capsys):
    train = synonym_dataset(ks=range(4), js=range(4))
    train.save(tmp_path / "train.json")
    (tmp_path / "adapter.toml").write_text('[adapter]\ntype = "two-layer"\nepochs = 2\n'
                                           'adapter_options = { hidden = 16 }\n')
    with OpenAIServer() as server:
        spec = f"openai:e@{server.base_url}"
        code = main(["train-adapter", "--train", str(tmp_path / "train.json"), "--encoder", spec,
                     "--config", str(tmp_path / "adapter.toml"), "--epochs", "3", "--seed", "1",
                     "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
        assert code == 0
        adapter = load_adapter(tmp_path / "out", expected_encoder_identity=encoder_from_spec(spec).identity)
    assert adapter.config.adapter_type == "two-layer" and adapter.config.options["hidden"] == 16
    assert adapter.config.training["config"]["epochs"] == 3  # the flag wins over the config file
    assert '"validation_after"' in capsys.readouterr().out
    with pytest.raises(InputError, match="trained on encoder"):
        load_adapter(tmp_path / "out", expected_encoder_identity="openai model=other")
    (tmp_path / "bad.toml").write_text("[adapter]\nlearning_rate = 1\n")
    code = main(["train-adapter", "--train", str(tmp_path / "train.json"), "--encoder", "openai:e@http://127.0.0.1:9/v1",
                 "--config", str(tmp_path / "bad.toml"), "--out", str(tmp_path / "out2")])
    assert code == 3 and "learning_rate" in capsys.readouterr().err and not (tmp_path / "out2").exists()


def test_matryoshka_adapter_never_loses_to_the_base_at_any_listed_width(tmp_path):
    dims = [64, 16, 8, 4]
    with OpenAIServer() as server:
        encoder = encoder_from_spec(f"openai:e@{server.base_url}")
        config = AdapterTrainingConfig(adapter="two-layer", adapter_options={"hidden": 32}, epochs=15, lr=1e-2,
                                       identity_reg=0.01, seed=0, patience=15, matryoshka_dims=dims)
        result = train_adapter(encoder, synonym_dataset(), config=config, cache=EmbeddingCache(tmp_path))
    assert result.best_epoch > 0
    for dim in dims:
        assert result.best[f"mrr@10@dim{dim}"] >= result.baseline[f"mrr@10@dim{dim}"]
    assert result.best["mrr@10@dim16"] > result.baseline["mrr@10@dim16"]  # truncated widths learn too
    assert result.adapter.config.training["config"]["matryoshka_dims"] == dims
    with pytest.raises(ConfigError, match="wider than the embeddings"), OpenAIServer() as server:
        train_adapter(encoder_from_spec(f"openai:e@{server.base_url}"), synonym_dataset(ks=range(2)),
                      config=AdapterTrainingConfig(epochs=1, matryoshka_dims=[128]),
                      cache=EmbeddingCache(tmp_path))


def test_an_epoch_that_loses_at_one_width_is_never_kept():
    from embtune_core.adapters.adapter_training import EpochChoice

    base = {"mrr@10@dim64": 0.5, "mrr@10@dim8": 0.2}
    choice = EpochChoice(base, "mrr@10", [64, 8], patience=4)
    assert not choice.observe(1, {"mrr@10@dim64": 0.9, "mrr@10@dim8": 0.19})  # far better on average
    assert choice.best_epoch == 0 and choice.best == base
    assert choice.observe(2, {"mrr@10@dim64": 0.6, "mrr@10@dim8": 0.2}) and choice.best_epoch == 2
    plain = EpochChoice({"mrr@10": 0.5}, "mrr@10", None, patience=4)
    assert plain.observe(1, {"mrr@10": 0.7}) and not plain.observe(2, {"mrr@10": 0.6})


def test_patience_follows_the_mean_not_the_gate():
    """Epochs that trail the base at one width while the mean over the widths climbs are progress:
    training goes on and keeps the first epoch that passes the gate (the quickstart's adapter had
    stopped at the identity after four such epochs)."""
    from embtune_core.adapters.adapter_training import EpochChoice

    base = {"mrr@10@dim64": 0.5, "mrr@10@dim8": 0.2}
    choice = EpochChoice(base, "mrr@10", [64, 8], patience=2)
    for epoch, low in enumerate((0.19, 0.19, 0.195, 0.199), start=1):  # dim 8 trails; dim 64 climbs
        assert not choice.observe(epoch, {"mrr@10@dim64": 0.5 + 0.05 * epoch, "mrr@10@dim8": low})
        assert not choice.should_stop
    assert choice.observe(5, {"mrr@10@dim64": 0.8, "mrr@10@dim8": 0.21}) and choice.best_epoch == 5
    for epoch in (6, 7):  # no progress on the mean: stale, then stop
        choice.observe(epoch, {"mrr@10@dim64": 0.6, "mrr@10@dim8": 0.2})
    assert choice.should_stop and choice.best_epoch == 5
    # A better kept epoch is progress too, even below the best (ineligible) mean seen so far.
    strict = EpochChoice(base, "mrr@10", [64, 8], patience=1)
    strict.observe(1, {"mrr@10@dim64": 0.9, "mrr@10@dim8": 0.19})
    assert strict.observe(2, {"mrr@10@dim64": 0.55, "mrr@10@dim8": 0.21}) and not strict.should_stop
    with pytest.raises(ConfigError, match="matryoshka_dims"):
        AdapterTrainingConfig.from_mapping({"matryoshka_dims": [64, 0]}, "cfg.toml")
    with pytest.raises(ConfigError, match="lists a width twice"):
        AdapterTrainingConfig.from_mapping({"matryoshka_dims": [16, 16]}, "cfg.toml")


def test_temperature_grid_keeps_the_candidate_best_on_validation(tmp_path):
    """One adapter per temperature, from the same seed: the winner is exactly the adapter a plain run
    at that temperature makes, its score is the best of the search, and the record lists each."""
    train = synonym_dataset(js=range(6))
    config = AdapterTrainingConfig(adapter="linear", epochs=4, lr=3e-2, batch_size=16, temperature=2.0,
                                   temperature_grid=[0.05], identity_reg=0.01, patience=4, seed=0)
    with OpenAIServer() as server:
        encoder = encoder_from_spec(f"openai:test-embed@{server.base_url}", batch_size=50)
        cache = EmbeddingCache(tmp_path / "cache")
        grid = train_adapter(encoder, train, config=config, cache=cache)
        alone = {t: train_adapter(encoder, train, cache=cache, config=dataclasses.replace(
            config, temperature=t, temperature_grid=None)) for t in (2.0, 0.05)}
    record = grid.adapter.config.training
    search = {row["temperature"]: row["score"] for row in record["temperature_search"]}
    assert set(search) == {2.0, 0.05}
    winner = record["temperature"]
    assert record["config"]["temperature"] == 2.0 and record["config"]["temperature_grid"] == [0.05]  # as asked
    assert search[winner] == max(search.values()) and search[2.0] != search[0.05]
    assert grid.best == alone[winner].best and grid.best_epoch == alone[winner].best_epoch
    for name, tensor in grid.adapter.module.state_dict().items():
        assert torch.equal(tensor, alone[winner].adapter.module.state_dict()[name])
    for bad in ([0.1, 0], [float("inf")], []):
        with pytest.raises(ConfigError, match="temperature_grid: must be a non-empty list of finite numbers > 0"):
            AdapterTrainingConfig.from_mapping({"temperature_grid": bad}, "cfg.toml").validate("cfg.toml")
    with pytest.raises(ConfigError, match="temperature: must be a finite number > 0"):
        AdapterTrainingConfig.from_mapping({"temperature": float("inf")}, "cfg.toml").validate("cfg.toml")


def test_a_grid_where_no_candidate_learns_says_so(tmp_path, caplog):
    """Candidates that cannot learn (no epoch; a learning rate too small to move the scores) make no
    choice, and the log line says so instead of reading like a win."""
    base = {"adapter": "linear", "temperature": 0.1, "temperature_grid": [0.05], "seed": 0, "matryoshka_dims": [16, 8]}
    with OpenAIServer() as server, caplog.at_level("INFO"):
        encoder = encoder_from_spec(f"openai:test-embed@{server.base_url}")
        for config in (AdapterTrainingConfig(epochs=0, **base), AdapterTrainingConfig(epochs=2, lr=1e-12, **base)):
            result = train_adapter(encoder, synonym_dataset(js=range(4)), config=config, cache=EmbeddingCache(tmp_path))
            assert result.adapter.config.training["temperature"] == 0.1  # ties go to the first listed
    assert "mean mrr@10 over dims 16,8 of the kept epoch" in caplog.text
    assert "no candidate beat the base, every one is the identity" in caplog.text
    assert "tied with 0.05: the first listed is kept" in caplog.text
