"""``embtune build-dataset`` end to end: documents -> chunks -> questions -> split -> train/val JSON."""

from __future__ import annotations

import json
import time

import pytest
from openai_server import OpenAIServer
from test_loaders import bad_files, make_pdf

from embtune_core.cli import main
from embtune_core.data.dataset import QADataset
from embtune_core.data.splitting import check_no_leakage

TOPICS = ["revenue", "drivers", "insurance", "bikes", "scooters", "autonomy"]


def paragraph(topic: str, n: int = 6) -> str:
    return " ".join(f"Sentence {i} explains how the {topic} business changed during year {2010 + i}."
                    for i in range(n))


@pytest.fixture
def docs(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "annual.pdf").write_bytes(make_pdf([paragraph("revenue"), paragraph("drivers")]))
    (folder / "notes.txt").write_text(paragraph("insurance"), encoding="utf-8")
    (folder / "guide.md").write_text("# Bikes\n\n" + paragraph("bikes"), encoding="utf-8")
    (folder / "faq.jsonl").write_text("\n".join(
        json.dumps({"text": paragraph(t), "metadata": {"source": f"faq-{t}"}}) for t in ("scooters", "autonomy")),
        encoding="utf-8")
    return folder


def build(*args: str) -> int:
    return main(["build-dataset", *args])


def test_build_with_ict_writes_split_datasets(docs, tmp_path, capsys, minilm_path):
    out = tmp_path / "out"
    code = build(str(docs), "-o", str(out), "--model", minilm_path, "--chunk-size", "48",
                 "--chunk-overlap", "12", "--val-fraction", "0.3", "--seed", "1")
    assert code == 0, capsys.readouterr().err
    train, val = QADataset.load(out / "train.json"), QADataset.load(out / "val.json")
    check_no_leakage(train, val)
    assert len(val.queries) >= 0.3 * (len(train.queries) + len(val.queries))
    sources = {m["source"] for m in train.corpus_metadata.values()} | {
        m["source"] for m in val.corpus_metadata.values()}
    assert sources == {str(docs / "annual.pdf"), str(docs / "notes.txt"), str(docs / "guide.md"),
                       "faq-scooters", "faq-autonomy"}
    pdf_pages = {m.get("page") for m in [*train.corpus_metadata.values(), *val.corpus_metadata.values()]
                 if m["source"].endswith(".pdf")}
    assert pdf_pages == {1, 2}
    raw = json.loads((out / "train.json").read_text())
    assert set(raw) == {"queries", "corpus", "relevant_docs", "mode", "corpus_metadata"}  # LlamaIndex + extras
    report = json.loads((out / "build-report.json").read_text())
    assert report["documents"] == 6 and report["skipped"] == [] and report["chunks"] > 6
    stdout = capsys.readouterr().out
    assert "wrote" in stdout and "val.json" in stdout
    # Same input, same seed: the same files (stable chunk and query ids).
    again = tmp_path / "again"
    assert build(str(docs), "-o", str(again), "--model", minilm_path, "--chunk-size", "48", "--chunk-overlap",
                 "12", "--val-fraction", "0.3", "--seed", "1") == 0
    assert (again / "train.json").read_text() == (out / "train.json").read_text()


@pytest.mark.parametrize("name,problem", [
    ("encrypted.pdf", "encrypted PDF"), ("truncated.pdf", "truncated PDF"),
    ("empty.txt", "empty file"), ("binary.txt", "binary file"),
])
def test_bad_file_stops_the_build_with_one_line_naming_it(docs, tmp_path, capsys, name, problem):
    path = bad_files(docs, only=name)[name]
    code = build(str(docs), "-o", str(tmp_path / "out"), "--chunker", "recursive")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert err[-1].startswith("embtune: error: ") and str(path) in err[-1] and problem in err[-1]
    assert not (tmp_path / "out" / "train.json").exists()


def test_skip_bad_builds_the_rest_and_lists_skipped_files(docs, tmp_path, capsys):
    paths = bad_files(docs)
    out = tmp_path / "out"
    code = build(str(docs), "-o", str(out), "--chunker", "recursive", "--chunk-size", "200",
                 "--chunk-overlap", "40", "--skip-bad", "--generator", "crop")
    assert code == 0
    stdout = capsys.readouterr().out
    assert "skipped 4 bad file(s):" in stdout
    for name, path in paths.items():
        assert any(line.strip().startswith(f"{path}:") for line in stdout.splitlines()), name
    report = json.loads((out / "build-report.json").read_text())
    assert {s["path"] for s in report["skipped"]} == {str(p) for p in paths.values()}
    assert QADataset.load(out / "train.json").queries


def test_unsupported_file_named_explicitly(tmp_path, capsys):
    path = tmp_path / "slides.pptx"
    path.write_bytes(b"PK")
    assert build(str(path), "-o", str(tmp_path / "out")) == 3
    assert "unsupported file type '.pptx'; supported: .jsonl, .md, .pdf, .txt" in capsys.readouterr().err


def test_single_document_needs_split_by_page_or_no_validation(tmp_path, capsys):
    pdf = tmp_path / "one.pdf"
    pdf.write_bytes(make_pdf([paragraph(t) for t in TOPICS]))
    assert build(str(pdf), "-o", str(tmp_path / "a"), "--chunker", "recursive", "--chunk-size", "300") == 3
    assert "cannot split by source" in capsys.readouterr().err
    assert build(str(pdf), "-o", str(tmp_path / "b"), "--chunker", "recursive", "--chunk-size", "300",
                 "--split-by", "page") == 0
    assert build(str(pdf), "-o", str(tmp_path / "c"), "--chunker", "recursive", "--chunk-size", "300",
                 "--val-fraction", "0") == 0
    assert not (tmp_path / "c" / "val.json").exists() and (tmp_path / "c" / "train.json").exists()


def test_openai_generator_from_config_resumes_without_new_calls(docs, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MY_LLM_KEY", "sk-config-test")
    out, work = tmp_path / "out", tmp_path / "work"
    with OpenAIServer() as server:
        config = tmp_path / "embtune.toml"
        config.write_text(f"""
[dataset]
inputs = ["{docs}"]
out = "{out}"
chunker = "recursive"
chunk_size = 400
chunk_overlap = 0
generator = "openai"
llm_model = "test-model"
base_url = "{server.base_url}"
api_key_env = "MY_LLM_KEY"
questions_per_chunk = 2
val_fraction = 0.25
work_dir = "{work}"

[dataset.generator_options]
initial_backoff = 0.01
""", encoding="utf-8")
        assert build("--config", str(config)) == 0
        calls = server.count("/chat/completions")
        assert calls > 0 and server.requests[0][1]["model"] == "test-model"
        assert server.requests[0][2]["authorization"] == "Bearer sk-config-test"
        err = capsys.readouterr().err
        assert "token usage:" in err and "sk-config-test" not in err
        train = QADataset.load(out / "train.json")
        assert all(q.endswith("?") for q in train.queries.values())
        # Re-running the same command resumes from the journal: no new calls.
        assert build("--config", str(config)) == 0
        assert server.count("/chat/completions") == calls
    assert (work / "qgen-openai.journal.jsonl").exists()
    assert f"{calls} resumed" in capsys.readouterr().err


def test_unknown_config_key_is_a_one_line_error(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text("[dataset]\nchunk_sise = 3\n", encoding="utf-8")
    assert build("--config", str(config), "x", "-o", str(tmp_path)) == 3
    assert "unknown key(s) chunk_sise" in capsys.readouterr().err


@pytest.mark.slow
def test_lyft_10k_load_chunk_ict(shared_data, minilm_path, tmp_path):
    """The Lyft 2021 10-K: load, chunk (256 MiniLM tokens), ICT-generate. Target: under 2 minutes on 2 cores."""
    import re

    from embtune_core.data.loading import load_documents
    from embtune_core.plugins import get_registry

    started = time.perf_counter()
    documents, skipped = load_documents(shared_data / "10k-pdfs" / "lyft_2021.pdf")
    loaded = time.perf_counter()
    chunks = get_registry().create("chunkers", "sentence", chunk_size=256, model=minilm_path).chunk(documents)
    chunked = time.perf_counter()
    dataset = get_registry().create("question_generators", "ict", seed=0).generate(chunks)
    finished = time.perf_counter()
    glued = sum(1 for d in documents for w in re.findall(r"[A-Za-z]+", d.text) if len(w) >= 20)
    print(f"lyft_2021.pdf: {len(documents)} pages, {len(chunks)} chunks, {len(dataset.queries)} ICT queries; "
          f"load {loaded - started:.1f}s, chunk {chunked - loaded:.1f}s, ICT {finished - chunked:.1f}s, "
          f"total {finished - started:.1f}s; words of 20+ letters (glued): {glued}")
    assert not skipped and len(documents) >= 230 and len(chunks) > 500
    assert len(dataset.queries) > 0.8 * len(chunks)
    assert glued < 50  # pypdf's plain mode leaves ~175 on this file
    dataset.validate()
    assert finished - started < 120


@pytest.mark.parametrize("options, problem", [
    ("filterr = false", "dataset.generator_options.filterr: unknown key(s) filterr"),
    ('filter = "no"', "filter: must be true or false"),
])
def test_bad_generator_options_are_one_line_errors(tmp_path, docs, capsys, options, problem):
    config = tmp_path / "c.toml"
    config.write_text('[dataset]\ngenerator = "openai"\n[dataset.generator_options]\n'
                      f'base_url = "http://127.0.0.1:9/v1"\n{options}\n', encoding="utf-8")
    assert build("--config", str(config), str(docs), "-o", str(tmp_path / "out")) == 3
    err = capsys.readouterr().err
    assert problem in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
