"""The LlamaIndex dataset format, importers and validation errors."""

from __future__ import annotations

import json

import pytest

from embtune_core.data.dataset import QADataset, load_any, load_beir, load_pairs
from embtune_core.errors import DatasetError


def _write(path, data):
    path.write_text(json.dumps(data) if not isinstance(data, str) else data)
    return path


GOOD = {
    "queries": {"q1": "what is a cat?", "q2": "what is a dog?"},
    "corpus": {"c1": "A cat is a small feline.", "c2": "A dog is a loyal canine."},
    "relevant_docs": {"q1": ["c1"], "q2": ["c2"]},
    "mode": "text",
}


def test_round_trip_keeps_extra_keys_and_order(tmp_path):
    data = dict(GOOD, negatives={"q1": ["c2"]}, corpus_metadata={"c1": {"source": "a.pdf", "page": 3}},
                some_future_key=[1, 2])
    src = _write(tmp_path / "in.json", data)
    ds = QADataset.load(src)
    assert ds.negatives == {"q1": ["c2"]}
    ds.save(tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == data
    assert list(json.loads((tmp_path / "out.json").read_text())) == list(data)


def test_missing_mode_is_not_invented(tmp_path):
    data = {k: v for k, v in GOOD.items() if k != "mode"}
    ds = QADataset.load(_write(tmp_path / "in.json", data))
    ds.save(tmp_path / "out.json")
    assert json.loads((tmp_path / "out.json").read_text()) == data


def test_dangling_relevant_id(tmp_path):
    data = dict(GOOD, relevant_docs={"q1": ["c1"], "q2": ["c9"]})
    with pytest.raises(DatasetError) as info:
        QADataset.load(_write(tmp_path / "bad.json", data))
    assert str(info.value) == f"{tmp_path / 'bad.json'}: relevant_docs.q2: dangling relevant id 'c9' (not in corpus)"


def test_dangling_query_id(tmp_path):
    data = dict(GOOD, relevant_docs={"q1": ["c1"], "q7": ["c2"]})
    with pytest.raises(DatasetError, match=r"bad.json: relevant_docs: dangling query id 'q7'"):
        QADataset.load(_write(tmp_path / "bad.json", data))


def test_empty_text(tmp_path):
    data = dict(GOOD, corpus={"c1": "A cat.", "c2": "   "})
    with pytest.raises(DatasetError) as info:
        QADataset.load(_write(tmp_path / "bad.json", data))
    assert str(info.value) == f"{tmp_path / 'bad.json'}: corpus.c2: empty text"


def test_duplicate_ids(tmp_path):
    text = ('{"queries": {"q1": "a?", "q1": "b?"}, "corpus": {"c1": "x"}, '
            '"relevant_docs": {"q1": ["c1"]}}')
    with pytest.raises(DatasetError) as info:
        QADataset.load(_write(tmp_path / "bad.json", text))
    assert str(info.value) == f"{tmp_path / 'bad.json'}: duplicate id 'q1'"


def test_malformed_json_reports_position(tmp_path):
    text = '{"queries": {"q1": "a?"},\n "corpus": {"c1": "x"\n "relevant_docs": {}}'
    with pytest.raises(DatasetError) as info:
        QADataset.load(_write(tmp_path / "bad.json", text))
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'bad.json'}: malformed JSON at line 3 column 2")
    assert "\n" not in message


def test_missing_key_and_wrong_types(tmp_path):
    with pytest.raises(DatasetError, match="corpus: missing required key"):
        QADataset.load(_write(tmp_path / "a.json", {"queries": {}, "relevant_docs": {}}))
    with pytest.raises(DatasetError, match="top level must be a JSON object"):
        QADataset.load(_write(tmp_path / "b.json", [1, 2]))
    (tmp_path / "c.json").write_bytes(b'{"queries": "\xff"}')
    with pytest.raises(DatasetError, match="c.json: not UTF-8 text"):
        QADataset.load(tmp_path / "c.json")


def test_beir_import(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "d1", "title": "Cats", "text": "Cats purr."}\n{"_id": "d2", "title": "", "text": "Dogs bark."}\n')
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "q1", "text": "do cats purr"}\n{"_id": "q2", "text": "unjudged"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n")
    ds = load_any(tmp_path)
    assert ds.queries == {"q1": "do cats purr"}
    assert ds.corpus == {"d1": "Cats Cats purr.", "d2": "Dogs bark."}
    assert ds.relevant_docs == {"q1": ["d1"]}
    with pytest.raises(DatasetError, match="missing BEIR file"):
        load_beir(tmp_path, split="dev")


def test_pairs_and_triplets_jsonl_and_csv(tmp_path):
    (tmp_path / "t.jsonl").write_text(
        '{"anchor": "q a", "positive": "p a", "negative": "n a"}\n{"query": "q b", "positive": "p a"}\n')
    ds = load_pairs(tmp_path / "t.jsonl")
    assert len(ds.queries) == 2 and len(ds.corpus) == 2
    assert sum(len(v) for v in ds.negatives.values()) == 1
    (tmp_path / "p.csv").write_text("query,positive\nq a,p a\nq b,p b\n")
    assert len(load_any(tmp_path / "p.csv").corpus) == 2
    (tmp_path / "bad.jsonl").write_text('{"anchor": "q"}\n')
    with pytest.raises(DatasetError, match="row 1 needs a query"):
        load_pairs(tmp_path / "bad.jsonl")


def test_subset_filters_extras():
    ds = QADataset.from_json(dict(GOOD, negatives={"q1": ["c2"], "q2": ["c1"]}))
    sub = ds.subset(["q1"], corpus_ids=["c1"])
    assert sub.queries == {"q1": "what is a cat?"}
    assert sub.corpus == {"c1": "A cat is a small feline."}
    assert sub.negatives == {"q1": []}


@pytest.mark.parametrize("name,queries,chunks", [("train_dataset.json", 668, 334), ("val_dataset.json", 790, 395)])
def test_shared_llamaindex_files_round_trip(shared_data, tmp_path, name, queries, chunks):
    src = shared_data / "llamaindex-10k-qa" / name
    ds = QADataset.load(src)
    assert (len(ds.queries), len(ds.corpus)) == (queries, chunks)
    ds.save(tmp_path / name)
    assert json.loads((tmp_path / name).read_text()) == json.loads(src.read_text())
