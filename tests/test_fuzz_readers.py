"""Fuzzing every reader: random bytes, truncation, huge lines, invalid UTF-8, NUL bytes.

Each reader either returns or raises an EmbtuneError (one line, naming the file); never a traceback.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from embtune_core.config import load_config
from embtune_core.data.dataset import QADataset, load_any, load_pairs
from embtune_core.data.loading import load_documents
from embtune_core.errors import EmbtuneError

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

NASTY = st.one_of(
    st.binary(max_size=2048),
    st.binary(max_size=64).map(lambda b: b"\x00" * 10 + b),
    st.text(max_size=500).map(lambda t: t.encode("utf-8")),
    st.just(b"\xff\xfe\xfd invalid utf-8"),
    st.just(b"x" * 300_000),  # one huge line
    st.just(b'{"queries": {"q": "a"}, "corpus": {"c": "b"}, "relevant_docs": {"q": ["c"]'),  # truncated
)


def _check(call, path) -> None:
    try:
        call(path)
    except EmbtuneError as exc:
        message = str(exc)
        assert "\n" not in message
        assert str(path) in message
    # any other exception type fails the test with its traceback


@FUZZ
@given(data=NASTY)
def test_dataset_reader(tmp_path, data):
    path = tmp_path / "d.json"
    path.write_bytes(data)
    _check(QADataset.load, path)


@FUZZ
@given(data=NASTY)
def test_pairs_reader(tmp_path, data):
    for name in ("p.jsonl", "p.csv"):
        path = tmp_path / name
        path.write_bytes(data)
        _check(load_pairs, path)


@FUZZ
@given(data=NASTY)
def test_config_reader(tmp_path, data):
    path = tmp_path / "c.toml"
    path.write_bytes(data)
    _check(load_config, path)


@FUZZ
@given(data=NASTY, suffix=st.sampled_from([".txt", ".md", ".jsonl", ".pdf"]))
def test_document_loaders(tmp_path, data, suffix):
    path = tmp_path / f"doc{suffix}"
    path.write_bytes(data)
    _check(lambda p: load_documents([p]), path)


def _pdf_bytes() -> bytes:
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(200, 200)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


@FUZZ
@given(cut=st.integers(min_value=0, max_value=10_000), flip=st.integers(min_value=0, max_value=10_000))
def test_truncated_and_corrupted_pdfs(tmp_path, cut, flip):
    data = bytearray(_pdf_bytes())
    data = data[: cut % (len(data) + 1)]
    if data:
        data[flip % len(data)] ^= 0xFF
    path = tmp_path / "broken.pdf"
    path.write_bytes(bytes(data))
    _check(lambda p: load_documents([p]), path)


def test_beir_folder_with_garbage(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_bytes(b"\x00\x01garbage\n")
    (tmp_path / "queries.jsonl").write_bytes(b"{}\n")
    (tmp_path / "qrels" / "test.tsv").write_bytes(b"q\td\n")
    _check(load_any, tmp_path)


@FUZZ
@given(qrels=st.binary(max_size=200))
def test_beir_qrels_random_bytes(tmp_path_factory, qrels):
    """Valid corpus and queries, arbitrary qrels: a BEIR-style error naming the file, or a dataset."""
    folder = tmp_path_factory.mktemp("beir")
    (folder / "qrels").mkdir()
    (folder / "corpus.jsonl").write_text('{"_id": "d1", "text": "a document"}\n')
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    (folder / "qrels" / "test.tsv").write_bytes(b"query-id\tcorpus-id\tscore\n" + qrels)
    _check(load_any, folder)


def test_beir_qrels_float_scores_and_bad_score(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "text": "a document"}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "a query"}\n')
    qrels = tmp_path / "qrels" / "test.tsv"
    qrels.write_text("q1\td1\t1.0\n")  # no header, a float score on line 1: a judgement, not a header
    assert load_any(tmp_path).relevant_docs == {"q1": ["d1"]}
    # a fractional grade: neither BEIR's loader (int()) nor pytrec_eval reads it; refused, naming the line
    qrels.write_text("q1\td1\t0.5\n")
    with pytest.raises(EmbtuneError, match=r"test\.tsv: line 1: grade '0.5' is not a whole number"):
        load_any(tmp_path)
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\thigh\n")
    with pytest.raises(EmbtuneError, match=r"test\.tsv: line 2: score 'high' is not a number"):
        load_any(tmp_path)
