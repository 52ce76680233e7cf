"""Splitting by source document and the leakage check."""

from __future__ import annotations

import pytest

from embtune_core.data.dataset import QADataset
from embtune_core.data.splitting import check_no_leakage, leakage, split_by_source, write_split
from embtune_core.errors import DatasetError, InputError


def dataset(n_docs: int = 6, chunks_per_doc: int = 3) -> QADataset:
    queries, corpus, relevant, meta = {}, {}, {}, {}
    for d in range(n_docs):
        for c in range(chunks_per_doc):
            cid = f"d{d}c{c}"
            corpus[cid] = f"text of document {d} chunk {c}"
            meta[cid] = {"source": f"doc{d}.pdf", "page": c // 2 + 1}
            for q in range(2):
                queries[f"q-{cid}-{q}"] = f"question {q} about {cid}"
                relevant[f"q-{cid}-{q}"] = [cid]
    return QADataset(queries, corpus, relevant, extras={"corpus_metadata": meta})


def sources(ds: QADataset) -> set[str]:
    return {m["source"] for m in ds.corpus_metadata.values()}


@pytest.mark.parametrize("seed", range(5))
def test_no_document_or_chunk_on_both_sides(seed):
    ds = dataset()
    train, val = split_by_source(ds, val_fraction=0.3, seed=seed)
    assert sources(train).isdisjoint(sources(val)) and set(train.corpus).isdisjoint(val.corpus)
    assert len(train.queries) + len(val.queries) == len(ds.queries)
    assert set(train.corpus) | set(val.corpus) == set(ds.corpus)
    assert len(val.queries) >= 0.3 * len(ds.queries) and len(train.queries) > 0
    for side in (train, val):
        side.validate()  # every relevant id is in that side's own corpus
    check_no_leakage(train, val)


def test_seeded():
    a = split_by_source(dataset(), seed=1)[1]
    b = split_by_source(dataset(), seed=1)[1]
    assert a.queries == b.queries
    assert any(split_by_source(dataset(), seed=s)[1].queries != a.queries for s in range(2, 8))


def test_query_relevant_to_two_documents_keeps_them_together():
    ds = dataset(4, 1)
    ds.relevant_docs["q-d0c0-0"] = ["d0c0", "d1c0"]
    for seed in range(6):
        train, val = split_by_source(ds, val_fraction=0.25, seed=seed)
        assert ({"doc0.pdf", "doc1.pdf"} <= sources(train)) or ({"doc0.pdf", "doc1.pdf"} <= sources(val))


def test_one_document_cannot_be_split_by_source_but_by_page():
    ds = dataset(1, 4)
    with pytest.raises(InputError, match="cannot split by source.*1 source group"):
        split_by_source(ds)
    train, val = split_by_source(ds, by="page", val_fraction=0.4)
    pages = lambda side: {m["page"] for m in side.corpus_metadata.values()}
    assert pages(train).isdisjoint(pages(val))


def test_repeated_question_text_stays_out_of_validation():
    ds = dataset(2, 1)
    ds.queries["q-d1c0-0"] = ds.queries["q-d0c0-0"] = "What was the total revenue?"
    train, val = split_by_source(ds, val_fraction=0.5, seed=0)
    assert not leakage(train, val)["query texts"]
    check_no_leakage(train, val)


def test_leakage_check_refuses_overlap_with_one_line(tmp_path):
    ds = dataset(2, 2)
    # LlamaIndex issue 16479: val written on top of train, so val holds train's entries.
    leaky_val = ds.subset(list(ds.queries)[:3])
    with pytest.raises(DatasetError) as info:
        write_split(ds, leaky_val, tmp_path / "train.json", tmp_path / "val.json")
    message = str(info.value)
    assert "\n" not in message and "val.json" in message and "overlaps training" in message
    assert "corpus ids" in message and "source documents" in message
    assert not (tmp_path / "train.json").exists() and not (tmp_path / "val.json").exists()
    with pytest.raises(DatasetError, match="same file"):
        write_split(ds, leaky_val, tmp_path / "x.json", tmp_path / "x.json")


def test_write_split_writes_both(tmp_path):
    train, val = split_by_source(dataset(), seed=0)
    write_split(train, val, tmp_path / "train.json", tmp_path / "val.json")
    assert QADataset.load(tmp_path / "val.json").queries == val.queries
    assert QADataset.load(tmp_path / "train.json").corpus_metadata == train.corpus_metadata
