"""Transductive adapter training: pseudo-queries from the corpus to be searched join the training
side only, and merging datasets keeps every judgement and refuses clashing ids."""

from __future__ import annotations

import pytest
from openai_server import OpenAIServer
from test_adapter_training import synonym_dataset

from embtune_core.adapters.adapter_training import AdapterTrainingConfig, train_adapter
from embtune_core.adapters.pseudo_queries import index_pseudo_queries, merge
from embtune_core.data.dataset import QADataset
from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.encoders.encoding import encoder_from_spec
from embtune_core.errors import DatasetError

CORPUS = {
    "c1": "Revenue grew by a third in 2021. Ride volumes recovered after the lockdowns ended. "
          "Costs rose with insurance reserves.",
    "c2": "The company leases its headquarters in San Francisco. Office space was reduced. "
          "Several floors were sublet to other firms.",
}


def test_every_chunk_gets_its_pseudo_queries_pointing_at_the_indexed_chunk():
    made = index_pseudo_queries(CORPUS, mix={"ict": 2, "crop": 3}, seed=1)
    assert made.corpus == CORPUS  # documents stay exactly as indexed: no crops, no sentence removed
    per_chunk = {c: [q for q, ids in made.relevant_docs.items() if ids == [c]] for c in CORPUS}
    for chunk_id, query_ids in per_chunk.items():
        assert sorted(q.split(":")[0] for q in query_ids) == ["crop"] * 3 + ["ict"] * 2
        for query_id in query_ids:
            assert made.queries[query_id] and made.queries[query_id] != CORPUS[chunk_id]
    assert index_pseudo_queries(CORPUS, mix={"ict": 2, "crop": 3}, seed=1).queries == made.queries  # seeded


def test_merge_keeps_judgements_and_refuses_clashing_ids():
    a = QADataset({"q1": "one"}, {"c1": "text one"}, {"q1": ["c1"]}, extras={"negatives": {"q1": ["c2"]}})
    b = QADataset({"q2": "two"}, {"c1": "text one", "c2": "text two"}, {"q2": ["c2"], "q1": ["c2"]})
    merged = merge(a, b)
    assert merged.relevant_docs == {"q1": ["c1", "c2"], "q2": ["c2"]}
    assert merged.negatives == {"q1": ["c2"]} and len(merged.corpus) == 2
    with pytest.raises(DatasetError, match="chunk id 'c1' names two different texts"):
        merge(a, QADataset({}, {"c1": "another text"}, {}))


def test_augment_trains_on_more_pairs_but_validates_on_the_same_real_questions(tmp_path):
    labelled = synonym_dataset(ks=range(4), js=range(4))
    # Other documents with a question of their own: only the chunk texts may be used.
    target = QADataset({"secret": "a question that must never be sent"},
                       {f"t{i}": f"alpha{i} topic{i} report section with enough words to crop from it, "
                                 f"a second clause about alpha{i} and a third one" for i in range(8, 12)},
                       {"secret": ["t8"]})
    extra = index_pseudo_queries(target.corpus, mix={"crop": 2}, seed=0)
    cache = EmbeddingCache(tmp_path)
    config = AdapterTrainingConfig(epochs=2, seed=0)
    with OpenAIServer() as server:
        encoder = encoder_from_spec(f"openai:e@{server.base_url}")
        plain = train_adapter(encoder, labelled, config=config, cache=cache)
        augmented = train_adapter(encoder, labelled, config=config, cache=cache, augment=extra)
        sent = " ".join(str(body) for path, body, _ in server.requests if path.endswith("/embeddings"))
    plain_training = plain.adapter.config.training
    training = augmented.adapter.config.training
    assert training["train_queries"] == plain_training["train_queries"] + len(extra.queries)
    assert training["train_corpus"] == plain_training["train_corpus"] + len(target.corpus)
    assert training["augment_queries"] == len(extra.queries) == 2 * len(target.corpus)
    assert training["val_queries"] == plain_training["val_queries"]
    assert augmented.baseline == plain.baseline  # same validation questions, same base model
    assert "must never be sent" not in sent and "alpha9 topic9" in sent


def test_pseudo_queries_that_are_held_out_questions_never_train(tmp_path, caplog):
    """Without ``val``, the epoch is chosen on questions held out of ``train``; an index pseudo-query
    that is one of them word for word (ICT makes such copies) would flatter that choice: left out,
    logged and counted, while the same pseudo-query of a training question still joins."""
    from embtune_core.adapters.adapter_training import split_for_validation

    labelled = synonym_dataset(ks=range(4), js=range(4))
    config = AdapterTrainingConfig(epochs=1, seed=0)
    _, held_out = split_for_validation(labelled, config.val_fraction, seed=config.seed)
    copies = QADataset({f"copy{i}": text for i, text in enumerate(labelled.queries.values())},
                       labelled.corpus, {f"copy{i}": labelled.relevant_docs[q] for i, q in enumerate(labelled.queries)})
    held_out_texts = set(held_out.queries.values())
    expected = sum(1 for text in copies.queries.values() if text in held_out_texts)
    assert 0 < expected < len(copies.queries)
    with OpenAIServer() as server:
        result = train_adapter(encoder_from_spec(f"openai:e@{server.base_url}"), labelled, config=config,
                               cache=EmbeddingCache(tmp_path), augment=copies)
    training = result.adapter.config.training
    assert training["augment_dropped_as_val_questions"] == expected
    assert training["augment_queries"] == len(copies.queries) - expected
    assert f"{expected} pseudo-queries are word for word held-out questions" in caplog.text


def test_cli_index_corpus(tmp_path):
    from embtune_core.cli import main

    QADataset({"q": "unused"}, CORPUS, {"q": ["c1"]}).save(tmp_path / "index.json")
    _check_adapter_trained_with_index(tmp_path, tmp_path / "index.json")
    assert main(["train-adapter", "--train", str(tmp_path / "train.json"), "--encoder", "openai:e@http://127.0.0.1:9/v1",
                 "--index-corpus", str(tmp_path / "missing.json"), "--out", str(tmp_path / "out2")]) == 3


def test_cli_index_corpus_reads_a_bare_corpus(tmp_path):
    """The adapter's --index-corpus shares the reader of `embtune train --index-corpus`: a BEIR corpus.jsonl
    (no queries, no qrels) makes the same pseudo-queries as a full dataset holding those chunks."""
    import json


    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                                   for k, v in CORPUS.items()))
    _check_adapter_trained_with_index(tmp_path, tmp_path / "corpus.jsonl")


def _check_adapter_trained_with_index(tmp_path, index_path) -> None:
    """`embtune train-adapter --index-corpus INDEX` on the synonym set: every pseudo-query of CORPUS joins."""
    from embtune_core.adapters.adapter_io import load_adapter
    from embtune_core.cli import main

    synonym_dataset(ks=range(4), js=range(4)).save(tmp_path / "train.json")
    with OpenAIServer() as server:
        code = main(["train-adapter", "--train", str(tmp_path / "train.json"), "--encoder",
                     f"openai:e@{server.base_url}", "--index-corpus", str(index_path),
                     "--epochs", "1", "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "out")])
    assert code == 0
    expected = len(index_pseudo_queries(CORPUS, seed=42).queries)
    assert load_adapter(tmp_path / "out").config.training["augment_queries"] == expected > 0
