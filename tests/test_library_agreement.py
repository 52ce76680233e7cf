"""Kind 9 of issue 26: embtune's own checks never refuse (or misread) a file the library underneath reads
correctly. Each test builds the file as real tools write it and asks the library itself for the truth."""

from __future__ import annotations

import csv
import json

import pytest

from embtune_core.data.dataset import load_any, load_corpus, load_pairs


@pytest.fixture(scope="module")
def real_pdf(tmp_path_factory):
    """A PDF as matplotlib writes it (a real producer: fonts, xref, trailer), with a page of text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = tmp_path_factory.mktemp("pdf") / "report.pdf"
    figure = plt.figure(figsize=(6, 4))
    figure.text(0.1, 0.5, "Revenue grew in the mobility segment during the fourth quarter.")
    figure.savefig(path, format="pdf")
    plt.close(figure)
    return path


def test_a_pdf_with_bytes_after_its_end_marker_reads_as_pypdf_reads_it(real_pdf, tmp_path):
    from pypdf import PdfReader

    from embtune_plugins.loaders import load_pdf

    padded = tmp_path / "padded.pdf"
    padded.write_bytes(real_pdf.read_bytes() + b"\0" * 4096 + b"\r\n-- sent from a mail client --\r\n")
    assert "Revenue grew" in PdfReader(padded).pages[0].extract_text()  # the library reads it
    docs = load_pdf(padded)  # before: "truncated PDF (no %%EOF marker at the end of the file)"
    assert "Revenue grew" in docs[0].text
    cut = tmp_path / "cut.pdf"
    cut.write_bytes(real_pdf.read_bytes()[: len(real_pdf.read_bytes()) // 2])
    from embtune_core.errors import InputError

    with pytest.raises(InputError, match="truncated PDF"):
        load_pdf(cut)


def test_json_lines_with_unescaped_line_separators_read_as_json_reads_them(tmp_path):
    text = "first line\u2028second line\u0085third\x1cfourth"  # legal unescaped in a JSON string
    path = tmp_path / "corpus.jsonl"
    path.write_text(json.dumps({"_id": "d1", "text": text}, ensure_ascii=False) + "\n", encoding="utf-8")
    with open(path, encoding="utf-8") as handle:  # how BEIR's loader and datasets read JSON Lines
        expected = {row["_id"]: row["text"] for row in map(json.loads, handle)}
    assert load_corpus(path) == expected  # before: "line 1: malformed JSON"
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "q\u2028?", "positive": text}, ensure_ascii=False) + "\n", encoding="utf-8")
    assert list(load_pairs(pairs).corpus.values()) == [text]


def test_a_csv_chunk_keeps_its_line_breaks_as_the_csv_module_reads_it(tmp_path):
    path = tmp_path / "pairs.csv"
    with open(path, "w", newline="", encoding="utf-8") as handle:  # what csv.writer (and pandas) produce
        writer = csv.writer(handle)
        writer.writerow(["query", "positive"])
        writer.writerow(["what grew?", "Revenue grew.\nCosts fell.\r\nMargins rose."])
    with open(path, newline="", encoding="utf-8") as handle:
        expected = [row["positive"] for row in csv.DictReader(handle)]
    assert list(load_pairs(path).corpus.values()) == expected  # before: the line breaks were lost


def test_beir_qrels_and_corpus_read_as_beir_reads_them(tmp_path):
    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d\u20281", "title": "", "text": "a\u2028b"},
                                                    ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / "queries.jsonl").write_text('{"_id": "q1", "text": "x"}\n')
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td\u20281\t1\n", encoding="utf-8")
    with open(folder / "qrels" / "test.tsv", encoding="utf-8") as handle:  # BeIR's GenericDataLoader
        reader = csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        next(reader)
        beir = {row[0]: {row[1]: int(row[2])} for row in reader}
    assert load_any(folder).extras["qrels"] == beir  # before: "line 2: expected query-id, corpus-id, score"


def test_text_with_old_mac_line_endings_is_not_one_huge_line(tmp_path):
    from embtune_plugins.loaders import MAX_LINE_CHARS, read_text_file

    path = tmp_path / "notes.txt"
    line = "A sentence of ordinary prose, repeated on many lines. " * 2
    path.write_bytes((line + "\r").encode() * (MAX_LINE_CHARS // len(line) + 10))
    with open(path, encoding="utf-8") as handle:  # Python (and LangChain's TextLoader) see many lines
        assert len(handle.readlines()) > 1000
    assert len(read_text_file(path)) > MAX_LINE_CHARS  # before: "line 1 is ... characters long"


def test_a_legacy_torch_file_in_a_checkpoint_is_not_called_torn(tmp_path):
    import torch

    from embtune_core.finetuning.checkpoints import checkpoint_problem

    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "trainer_state.json").write_text('{"global_step": 3}')
    torch.save({"step": torch.tensor(3)}, folder / "rng_state.pth", _use_new_zipfile_serialization=False)
    assert torch.load(folder / "rng_state.pth", weights_only=True)["step"].item() == 3  # torch reads it
    assert checkpoint_problem(folder) is None  # before: "rng_state.pth: File is not a zip file"
