"""Loaders and load_documents: PDF pages, text formats, and one-line errors for bad files."""

from __future__ import annotations

import io
import json
import re

import pytest

from embtune_core.data.loading import collect_files, load_documents
from embtune_core.errors import InputError
from embtune_plugins.loaders import clean_layout_text, load_jsonl, load_pdf


def make_pdf(pages: list[str]) -> bytes:
    """A minimal valid PDF, one page per string (one text line per ``\\n``), with a correct xref."""
    n = len(pages)
    font_id = 3 + 2 * n
    objects = ["<< /Type /Catalog /Pages 2 0 R >>",
               f"<< /Type /Pages /Kids [{' '.join(f'{3 + 2 * i} 0 R' for i in range(n))}] /Count {n} >>"]
    for i, text in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in text.split("\n"):
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        stream = "\n".join([*ops, "ET"])
        objects.append(f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
                       f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>")
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{off:010d} 00000 n \n" for off in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def encrypted_pdf(pages: list[str], password: str = "secret") -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(pages))))
    writer.encrypt(password, algorithm="RC4-128")
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()


def bad_files(folder, only: str | None = None):
    """The four bad inputs the issue names (or just ``only``), written to ``folder``; returns {name: path}."""
    files = {
        "encrypted.pdf": encrypted_pdf(["Secret revenue figures."]),
        "truncated.pdf": make_pdf(["Some text on a page that will be cut."])[:200],
        "empty.txt": b"",
        "binary.txt": bytes(range(256)) * 4,
    }
    paths = {}
    for name, data in files.items():
        if only is not None and name != only:
            continue
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


def test_pdf_pages_with_page_numbers(tmp_path):
    path = tmp_path / "report.pdf"
    path.write_bytes(make_pdf(["Revenue grew in 2021.\nDrivers earned more.", "", "Risk factors follow."]))
    docs = load_pdf(path)
    assert [d.metadata["page"] for d in docs] == [1, 3]  # the blank page 2 is left out
    assert docs[0].metadata["total_pages"] == 3 and docs[0].source == str(path)
    assert "Revenue grew in 2021." in docs[0].text and "Drivers earned more." in docs[0].text
    assert docs[1].text == "Risk factors follow."


def test_layout_padding_collapsed_but_line_breaks_kept():
    assert clean_layout_text("Total      revenue   3,208\n\n\n\n  Net loss    (1,009)  ") == \
        "Total revenue 3,208\n\nNet loss (1,009)"


@pytest.mark.parametrize("name,problem", [
    ("encrypted.pdf", "encrypted PDF"),
    ("truncated.pdf", "truncated PDF"),
    ("empty.txt", "empty file"),
    ("binary.txt", "binary file"),
])
def test_bad_input_is_one_line_error_naming_the_file(tmp_path, name, problem):
    path = bad_files(tmp_path)[name]
    with pytest.raises(InputError) as info:
        load_documents(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and problem in message


def test_encrypted_pdf_with_empty_user_password_is_read(tmp_path):
    path = tmp_path / "owner-only.pdf"
    path.write_bytes(encrypted_pdf(["Readable without a password."], password=""))
    assert load_pdf(path)[0].text == "Readable without a password."


def test_text_errors_invalid_utf8_nul_and_huge_lines(tmp_path):
    cases = {
        "latin1.txt": ("caf\xe9 au lait".encode("latin-1"), "not UTF-8 text (invalid byte at offset 3)"),
        "nul.txt": (b"hello\x00world", "NUL byte at offset 5"),
        "huge.txt": (b"x" * 2000, "line 1 is 2000 characters long"),
        "blank.md": (b"  \n\n ", "empty file"),
    }
    for name, (data, problem) in cases.items():
        (tmp_path / name).write_bytes(data)
    from embtune_plugins import loaders

    for name, (_, problem) in cases.items():
        with pytest.raises(InputError, match=re.escape(problem)):
            if name == "huge.txt":
                loaders.read_text_file(tmp_path / name, max_line_chars=1000)
            else:
                load_documents(tmp_path / name)


def test_text_markdown_and_bom(tmp_path):
    (tmp_path / "a.txt").write_bytes("\ufeffPlain text.".encode("utf-8"))
    (tmp_path / "b.md").write_text("# Title\n\nBody.", encoding="utf-8")
    docs, skipped = load_documents(tmp_path)
    assert [d.text for d in docs] == ["Plain text.", "# Title\n\nBody."] and skipped == []
    assert docs[1].metadata["format"] == "markdown" and docs[0].metadata["file_name"] == "a.txt"


def test_jsonl_one_document_per_line(tmp_path):
    path = tmp_path / "docs.jsonl"
    rows = [{"text": "First.", "metadata": {"title": "A"}}, {"text": "Second.", "url": "http://x"},
            {"text": "Third.", "metadata": {"source": "manual.pdf", "page": 4}}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    docs = load_jsonl(path)
    assert [d.text for d in docs] == ["First.", "Second.", "Third."]
    assert docs[0].metadata["title"] == "A" and docs[0].source == f"{path}:1"
    assert docs[1].metadata["url"] == "http://x"
    assert docs[2].source == "manual.pdf" and docs[2].metadata["page"] == 4
    path.write_text('{"text": "ok"}\n{"body": "no text"}\n', encoding="utf-8")
    with pytest.raises(InputError, match=r"line 2: missing or empty \"text\""):
        load_jsonl(path)
    path.write_text('{"text": "ok"}\n{"text": \n', encoding="utf-8")
    with pytest.raises(InputError, match="line 2: malformed JSON"):
        load_jsonl(path)


def test_unsupported_extension_lists_supported_ones(tmp_path):
    path = tmp_path / "notes.docx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(InputError) as info:
        load_documents(path)
    assert str(info.value) == f"{path}: unsupported file type '.docx'; supported: .jsonl, .md, .pdf, .txt"
    with pytest.raises(InputError, match="no such file or folder"):
        load_documents(tmp_path / "missing.txt")


def test_folder_walk_ignores_hidden_and_unsupported_files(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("B.", encoding="utf-8")
    (tmp_path / "a.txt").write_text("A.", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("H.", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    assert [p.name for p in collect_files(tmp_path)] == ["a.txt", "b.txt"]


def test_skip_bad_loads_the_rest_and_lists_reasons(tmp_path):
    paths = bad_files(tmp_path)
    (tmp_path / "good.pdf").write_bytes(make_pdf(["Good page."]))
    (tmp_path / "good.txt").write_text("Good text.", encoding="utf-8")
    docs, skipped = load_documents(tmp_path, skip_bad=True)
    assert sorted(d.text for d in docs) == ["Good page.", "Good text."]
    reasons = dict(skipped)
    assert set(reasons) == {str(p) for p in paths.values()}
    assert "encrypted" in reasons[str(paths["encrypted.pdf"])]
    assert "truncated" in reasons[str(paths["truncated.pdf"])]
    with pytest.raises(InputError, match="no documents could be loaded"):
        load_documents([paths["empty.txt"], paths["binary.txt"]], skip_bad=True)
