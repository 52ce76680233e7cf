"""Evaluation: agreement with sentence-transformers, Matryoshka dims, adapters, cache, evaluators, CLI."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from embtune_core.data.dataset import QADataset
from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.retrieval.search import exact_search
from embtune_core.scoring.evaluation import (
    MetricSettings,
    RetrievalTask,
    System,
    evaluate_embeddings,
    evaluate_systems,
    training_evaluator,
    truncate,
)
from embtune_core.scoring.metrics import Ranking

TOPICS = ["revenue", "drivers", "insurance", "litigation", "autonomous", "pandemic", "freight", "tax",
          "marketing", "headcount", "bikes", "scooters", "airports", "tipping", "safety", "privacy"]


def small_dataset() -> QADataset:
    """32 documents on 16 topics; 24 queries, some with two or three relevant documents."""
    corpus, queries, relevant = {}, {}, {}
    for i, topic in enumerate(TOPICS):
        corpus[f"doc{i:02d}a"] = f"The company reported {topic} figures for fiscal year {2015 + i}."
        corpus[f"doc{i:02d}b"] = f"Risk factors about {topic} and regulation in market number {i}."
    for i, topic in enumerate(TOPICS):
        queries[f"q{i:02d}"] = f"What did the company say about {topic}?"
        relevant[f"q{i:02d}"] = [f"doc{i:02d}a"] if i % 3 else [f"doc{i:02d}a", f"doc{i:02d}b"]
    for j in range(8):
        a, b = TOPICS[j], TOPICS[j + 8]
        queries[f"mix{j}"] = f"How are {a} and {b} related?"
        relevant[f"mix{j}"] = [f"doc{j:02d}a", f"doc{j + 8:02d}a", f"doc{j + 8:02d}b"][: 2 + j % 2]
    queries["orphan"] = "A question without any relevant document"  # skipped, as sentence-transformers does
    return QADataset(queries, corpus, relevant)


class HashingEncoder:
    """A real, tiny encoder: hashed bag of words, so shared words mean similar vectors."""

    def __init__(self, dimension: int = 24, salt: str = ""):
        self.dimension, self.salt = dimension, salt
        self.identity = f"hashing-encoder dim={dimension} salt={salt}"
        self.calls = 0

    def _encode(self, texts):
        self.calls += 1
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in text.lower().strip("?.").split():
                digest = hashlib.blake2b((self.salt + word).encode(), digest_size=8).digest()
                out[row, digest[0] % self.dimension] += 1.0 + digest[1] / 255.0
        return out

    encode_queries = encode_documents = _encode


# --- must show: agreement with InformationRetrievalEvaluator ------------------------------------------
def test_metrics_agree_with_sentence_transformers_on_the_same_model(tiny_model_dir, tmp_path):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from embtune_core.encoders.encoding import encoder_from_spec

    dataset = small_dataset()
    model = SentenceTransformer(tiny_model_dir, device="cpu")
    st_evaluator = InformationRetrievalEvaluator(dataset.queries, dataset.corpus,
                                                 {q: set(v) for q, v in dataset.relevant_docs.items()},
                                                 name="small", write_csv=False)
    theirs = st_evaluator(model)

    system = System("tiny", encoder_from_spec(f"st:{tiny_model_dir}"))
    evaluation = evaluate_systems([system], dataset, cache=EmbeddingCache(tmp_path / "cache"), progress_bar=False,
                                  n_resamples=50, n_permutations=50)
    ours = evaluation.systems[0].dims[32].means()
    assert len(evaluation.task.query_ids) == len(dataset.queries) - 1  # the orphan query is skipped
    compared = 0
    for key, value in theirs.items():
        metric = key.removeprefix("small_cosine_")
        assert ours[metric] == pytest.approx(value, abs=1e-6), metric
        compared += 1
    assert compared == 15  # accuracy/precision/recall@{1,3,5,10}, mrr@10, ndcg@10, map@100
    assert 0.05 < ours["ndcg@10"] < 0.95 and 0.05 < ours["map@100"] < 0.95  # a ranking with misses and hits
    # the same model through the training evaluator
    trained = training_evaluator(dataset, name="small")(model)
    assert trained["small_ndcg@10"] == pytest.approx(theirs["small_cosine_ndcg@10"], abs=1e-6)
    assert trained["small_map@100"] == pytest.approx(theirs["small_cosine_map@100"], abs=1e-6)


def test_matryoshka_dimension_equals_truncated_renormalised_embeddings(tiny_model_dir):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    dataset = small_dataset()
    task = RetrievalTask.from_dataset(dataset)
    model = SentenceTransformer(tiny_model_dir, device="cpu")
    q, c = model.encode_query(task.query_texts), model.encode_document(task.corpus_texts)
    results = evaluate_embeddings(q, c, task, dims=[32, 16, 8])
    assert sorted(results) == [8, 16, 32]
    alone = evaluate_embeddings(truncate(q, 16), truncate(c, 16), task)[16]
    assert results[16].means() == alone.means()
    theirs = InformationRetrievalEvaluator(dataset.queries, dataset.corpus, dataset.relevant_docs,
                                           truncate_dim=16, write_csv=False)(model)
    assert results[16].means()["ndcg@10"] == pytest.approx(theirs["cosine_ndcg@10"], abs=1e-6)
    assert results[16].means()["mrr@10"] == pytest.approx(theirs["cosine_mrr@10"], abs=1e-6)


# --- systems, adapters, cache ------------------------------------------------------------------------
def test_repeated_evaluation_is_served_from_the_cache(tmp_path):
    encoder = HashingEncoder()
    cache = EmbeddingCache(tmp_path / "cache")
    kwargs = {"cache": cache, "progress_bar": False, "n_resamples": 100, "n_permutations": 100}
    first = evaluate_systems([System("h", encoder)], small_dataset(), **kwargs)
    calls = encoder.calls
    second = evaluate_systems([System("h", encoder)], small_dataset(), **kwargs)
    assert calls == 2 and encoder.calls == calls  # queries + corpus once, then nothing
    assert first.summary == second.summary


def test_identity_adapter_matches_base_and_a_bad_adapter_is_worse(tmp_path):
    import torch

    from embtune_core.adapters.adapter_io import SavedAdapter

    encoder = HashingEncoder()
    identity = SavedAdapter.wrap(torch.nn.Identity(), dimension=encoder.dimension)
    scramble = torch.nn.Linear(encoder.dimension, encoder.dimension, bias=False)
    with torch.no_grad():
        scramble.weight.copy_(torch.roll(torch.eye(encoder.dimension), 5, dims=0))  # permutes components
    systems = [System("base", encoder), System("same", encoder, identity), System("scrambled", encoder, scramble)]
    evaluation = evaluate_systems(systems, small_dataset(), cache=EmbeddingCache(tmp_path / "c"), progress_bar=False,
                                  n_resamples=200, n_permutations=500)
    base, same, scrambled = (evaluation.summary[n][encoder.dimension]["ndcg@10"] for n in ("base", "same", "scrambled"))
    assert same["mean"] == pytest.approx(base["mean"])
    assert same["vs_baseline"]["p_randomization"] == 1.0
    assert base["vs_baseline"] is None
    assert scrambled["mean"] < base["mean"] - 0.2
    assert scrambled["vs_baseline"]["p_randomization"] < 0.05
    assert scrambled["vs_baseline"]["ci_high"] < 0
    assert "adapter" in evaluation.systems[1].identity


def test_dimensions_wider_than_a_system_are_skipped_for_it(tmp_path):
    systems = [System("wide", HashingEncoder(24)), System("narrow", HashingEncoder(12, salt="n"))]
    evaluation = evaluate_systems(systems, small_dataset(), dims=[24, 12, 6], cache=EmbeddingCache(tmp_path / "c"),
                                  progress_bar=False, n_resamples=20, n_permutations=20)
    assert sorted(evaluation.systems[0].dims) == [6, 12, 24]
    assert sorted(evaluation.systems[1].dims) == [6, 12]
    assert evaluation.summary["narrow"][12]["ndcg@10"]["vs_baseline"] is not None


def test_duplicate_system_names_and_bad_dims_are_config_errors(tmp_path):
    from embtune_core.errors import ConfigError

    cache = EmbeddingCache(tmp_path / "c")
    with pytest.raises(ConfigError, match="used twice"):
        evaluate_systems([System("a", HashingEncoder()), System("a", HashingEncoder())], small_dataset(), cache=cache)
    with pytest.raises(ConfigError, match="narrower than every requested dimension"):
        evaluate_systems([System("a", HashingEncoder())], small_dataset(), dims=[64], cache=cache, progress_bar=False)


# --- training evaluator -------------------------------------------------------------------------------
def test_training_evaluator_keys_and_best_model_selection(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    dataset = small_dataset()
    evaluator = training_evaluator(dataset, name="val", matryoshka_dims=[16, 8])
    assert evaluator.primary_metric == "val_ndcg@10"
    model = SentenceTransformer(tiny_model_dir, device="cpu")
    metrics = evaluator(model)
    assert {"val_ndcg@10", "val_mrr@10", "val_map@100", "val_recall@10", "val_dim16_ndcg@10",
            "val_dim8_map@100"} <= set(metrics)
    train = Dataset.from_dict({"anchor": [dataset.queries[q] for q in list(dataset.relevant_docs)[:16]],
                               "positive": [dataset.corpus[dataset.relevant_docs[q][0]]
                                            for q in list(dataset.relevant_docs)[:16]]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(tmp_path / "run"), num_train_epochs=1, per_device_train_batch_size=8, eval_strategy="steps",
        eval_steps=1, save_strategy="steps", save_steps=1, load_best_model_at_end=True,
        metric_for_best_model="eval_val_ndcg@10", report_to="none", use_cpu=True, logging_steps=1)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train,
                                         loss=MultipleNegativesRankingLoss(model), evaluator=evaluator)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "eval_val_ndcg@10" in entry]
    assert len(logged) == 2
    assert trainer.state.best_metric == max(entry["eval_val_ndcg@10"] for entry in logged)


# --- evaluator plugins ----------------------------------------------------------------------------------
def _ranking_and_dataset():
    dataset = small_dataset()
    task = RetrievalTask.from_dataset(dataset)
    encoder = HashingEncoder()
    q = truncate(encoder.encode_queries(task.query_texts), 24)
    c = truncate(encoder.encode_documents(task.corpus_texts), 24)
    scores, indices = exact_search(q, c, 100)
    return Ranking(task.query_ids, task.corpus_ids, indices, scores), dataset, task, (q, c)


def test_evaluator_plugins_match_the_evaluation_core():
    from embtune_core.plugins import get_registry

    ranking, dataset, task, (q, c) = _ranking_and_dataset()
    registry = get_registry()
    assert {"hit-rate-mrr", "ir-metrics", "significance"} <= set(registry.names("evaluators"))
    core = evaluate_embeddings(q, c, task, settings=MetricSettings(hit_rate_at=(5, 10)))[24].means()
    ir = registry.create("evaluators", "ir-metrics").evaluate(ranking, dataset)
    hit = registry.create("evaluators", "hit-rate-mrr", k=[5, 10]).evaluate(ranking, dataset)
    for name in ("ndcg@10", "map@100", "recall@5", "precision@3", "mrr@10"):
        assert ir[name] == pytest.approx(core[name])
    assert hit["hit_rate@5"] == pytest.approx(core["hit_rate@5"])
    assert hit["mrr@10"] == pytest.approx(core["mrr@10"])
    assert len(ir["per_query"]["ndcg@10"]) == len(ir["query_ids"]) == len(task.query_ids)
    json.dumps(ir)  # plain data


def test_significance_plugin_and_shallow_ranking_error():
    from embtune_core.errors import ConfigError
    from embtune_core.plugins import get_registry

    ranking, dataset, *_ = _ranking_and_dataset()
    rng = np.random.default_rng(0)
    shuffled = Ranking(ranking.query_ids, ranking.corpus_ids, np.stack([rng.permutation(r) for r in ranking.indices]))
    registry = get_registry()
    same = registry.create("evaluators", "significance", baseline=ranking).evaluate(ranking, dataset)
    assert same["difference"] == 0.0 and same["p_randomization"] == 1.0
    worse = registry.create("evaluators", "significance", baseline=ranking, metric="hit_rate@5").evaluate(
        shuffled, dataset)
    assert worse["difference"] < 0 and worse["p_ttest"] < 0.05
    shallow = Ranking(ranking.query_ids, ranking.corpus_ids, ranking.indices[:, :3])
    with pytest.raises(ConfigError, match="3 deep"):
        registry.create("evaluators", "ir-metrics").evaluate(shallow, dataset)


# --- CLI ----------------------------------------------------------------------------------------------
def test_system_spec_syntax():
    from embtune_core.errors import ConfigError
    from embtune_core.retrieval.systems import parse_system

    spec = parse_system("base=model:sentence-transformers/all-MiniLM-L6-v2")
    assert (spec.name, spec.encoder_spec, spec.adapter_dir) == ("base", "st:sentence-transformers/all-MiniLM-L6-v2",
                                                                None)
    spec = parse_system("ad=model:runs/x/model+adapter:runs/x/adapter")
    assert (spec.encoder_spec, spec.adapter_dir) == ("st:runs/x/model", "runs/x/adapter")
    spec = parse_system("openai:text-embedding-3-small@http://127.0.0.1:9/v1?a=b")
    assert spec.name == spec.encoder_spec == "openai:text-embedding-3-small@http://127.0.0.1:9/v1?a=b"
    for bad in ("x=model:m+adapter:", "x=+adapter:dir", "x=adapter:dir"):
        with pytest.raises(ConfigError):
            parse_system(bad)


def test_cli_evaluate_writes_three_reports(tiny_model_dir, tmp_path, capsys):
    from embtune_core.cli import main

    data = tmp_path / "val.json"
    small_dataset().save(data)
    out = tmp_path / "report"
    code = main(["evaluate", str(data), "--system", f"base=model:{tiny_model_dir}", "--system",
                 f"again={tiny_model_dir}", "--dims", "32,16", "--k", "3,5", "--out", str(out),
                 "--resamples", "100", "--permutations", "100"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| base | 32 |" in printed and "hit_rate@3" in printed
    report = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in report["systems"]] == ["base", "again"]
    assert report["systems"][1]["results"]["16"]["ndcg@10"]["vs_baseline"]["difference"] == 0.0
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 2
    assert "## Against the baseline" in (out / "report.md").read_text()
    # --max-seq-length reaches every local model, and the report says which limit was used.
    code = main(["evaluate", str(data), "--system", f"base=model:{tiny_model_dir}", "--max-seq-length", "8",
                 "--out", str(tmp_path / "short"), "--resamples", "10", "--permutations", "10"])
    assert code == 0
    short = json.loads((tmp_path / "short" / "report.json").read_text())
    assert "max_seq_length=8" in short["systems"][0]["identity"]
    assert "max_seq_length" not in report["systems"][0]["identity"]


def test_cli_bad_input_is_one_line_with_documented_exit_code(tiny_model_dir, tmp_path, capsys):
    from embtune_core.cli import main

    data = tmp_path / "val.json"
    small_dataset().save(data)
    # bad --dims are a bad command line (2); a missing dataset a bad input file (3)
    assert main(["evaluate", str(data), "--system", f"m={tiny_model_dir}", "--dims", "32,abc"]) == 2
    assert main(["evaluate", str(data), "--system", f"m={tiny_model_dir}", "--dims", "64"]) == 2
    assert main(["evaluate", str(tmp_path / "missing.json"), "--system", f"m={tiny_model_dir}"]) == 3
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("embtune: error:") for line in errors)
    assert "--dims" in errors[0] and "missing.json" in errors[2]
