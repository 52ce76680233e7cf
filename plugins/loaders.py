"""Built-in document loaders: PDF (pypdf), plain text, Markdown and JSON Lines.

Each loader reads one file and returns :class:`~embtune_core.data.documents.Document` objects whose
``metadata`` holds at least ``source`` (the path) and ``file_name``; PDFs give one document per
page with ``page`` (1-based) and ``total_pages``. A file that cannot be read raises
:class:`~embtune_core.errors.InputError` naming the file and the problem: empty, binary, not
UTF-8, encrypted, truncated, or with a line too long to be prose.

PDF text is extracted with pypdf's ``extraction_mode="layout"``: on the Lyft 2021 10-K the plain
mode glues words across line breaks ("potentiallyavailable", "onForm": 175 words of 20+ letters
and 369 camel-case joins) where layout mode has 7 and 60, at a similar speed. Layout mode pads
columns with runs of spaces, which are collapsed here.

Example::

    from embtune_core.plugins import get_registry

    docs = get_registry().create("loaders", ".pdf", path=Path("lyft_2021.pdf"))
    docs[0].metadata   # {'source': 'lyft_2021.pdf', 'file_name': 'lyft_2021.pdf', 'page': 1, ...}
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Any

from embtune_core import hookimpl
from embtune_core.data import textfiles
from embtune_core.data.documents import Document
from embtune_core.errors import InputError

log = logging.getLogger(__name__)

# A "line" longer than this is not prose: a minified blob, base64 or a binary file misnamed.
MAX_LINE_CHARS = 1_000_000
_SPACE_RUNS = re.compile(r"[ \t\u00a0]{2,}")
_BLANK_RUNS = re.compile(r"\n{3,}")


def _base_metadata(path: Path) -> dict[str, Any]:
    return {"source": str(path), "file_name": path.name}


def read_text_file(path: Path, *, max_line_chars: int = MAX_LINE_CHARS) -> str:
    """The file as text, or :class:`InputError` when it is empty, binary, not UTF-8 or has huge lines."""
    path = Path(path)
    data = textfiles.read_bytes(path)
    if not data.strip():
        raise InputError("empty file", path=path)
    nul = data.find(b"\x00")
    if nul >= 0:
        raise InputError(f"binary file, not text (NUL byte at offset {nul})", path=path)
    text = textfiles.decode_utf8(data, path)
    if textfiles.is_blank(text):
        raise InputError("empty file (only white space or invisible characters)", path=path)
    longest, line_no = 0, 0
    for number, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), 1):  # "\r" too
        if len(line) > longest:
            longest, line_no = len(line), number
    if longest > max_line_chars:
        raise InputError(f"line {line_no} is {longest} characters long (limit {max_line_chars}); "
                         "not a text document?", path=path)
    return text


def load_text(path: Path, **_: Any) -> list[Document]:
    """A ``.txt`` file as one document."""
    path = Path(path)
    return [Document(read_text_file(path), _base_metadata(path))]


def load_markdown(path: Path, **_: Any) -> list[Document]:
    """A ``.md`` file as one document; the Markdown is kept (headings help chunkers and LLMs)."""
    path = Path(path)
    return [Document(read_text_file(path), {**_base_metadata(path), "format": "markdown"})]


def load_jsonl(path: Path, *, text_key: str = "text", **_: Any) -> list[Document]:
    """One document per line: ``{"text": ..., "metadata": {...}}``; other top-level keys join the metadata.

    A line's ``source`` defaults to ``<file>:<line>`` so that splitting by source document treats
    each line as its own document; give ``metadata.source`` to group lines.
    """
    path = Path(path)
    docs = []
    for number, row in textfiles.read_jsonl(path, text=read_text_file(path)):
        text = row.get(text_key)
        if not isinstance(text, str) or textfiles.is_blank(text):
            raise InputError(f"line {number}: missing or empty \"{text_key}\" string", path=path)
        metadata = row.get("metadata", {})
        if not isinstance(metadata, dict):
            raise InputError(f"line {number}: \"metadata\" must be a JSON object", path=path)
        extra = {k: v for k, v in row.items() if k not in (text_key, "metadata")}
        merged = {**_base_metadata(path), "source": f"{path}:{number}", "line": number, **extra, **metadata}
        docs.append(Document(text, merged))
    if not docs:
        raise InputError("no documents (every line is blank)", path=path)
    return docs


def clean_layout_text(text: str) -> str:
    """Collapse layout mode's column padding and blank-line runs; keep line breaks."""
    lines = [_SPACE_RUNS.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


@contextlib.contextmanager
def _quiet_pypdf():
    """pypdf logs repairs it made ("incorrect startxref pointer") as warnings; they are not the user's problem."""
    logger = logging.getLogger("pypdf")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


_PDF_OBJECT = re.compile(rb"\d+\s+\d+\s+obj\b|\bendobj\b|\bstream\b|\bxref\b|\btrailer\b")


def _truncated_pdf(data: bytes) -> bool:
    """A PDF is cut short when no %%EOF marker ends it, or when PDF objects follow its last one (an
    incremental update lost its end). Bytes after the last marker that are no PDF syntax (padding, an
    e-mail's trailer) are what pypdf skips too: it looks for the marker backwards through the whole file."""
    last = data.rfind(b"%%EOF")
    return last < 0 or bool(_PDF_OBJECT.search(data[last + 5:]))


def load_pdf(path: Path, *, extraction_mode: str = "layout", password: str = "", **_: Any) -> list[Document]:
    """One document per page with text; ``page`` is 1-based. Pages without text are left out."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    path = Path(path)
    if extraction_mode not in ("layout", "plain"):
        raise InputError(f"extraction_mode must be 'layout' or 'plain', not {extraction_mode!r}", path=path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("no such file", path=path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None
    if not data:
        raise InputError("empty file", path=path)
    if b"%PDF-" not in data[:1024]:
        raise InputError("not a PDF (no %PDF- header)", path=path)
    if _truncated_pdf(data):
        # pypdf would rebuild what it can and silently drop the rest of the document.
        raise InputError("truncated PDF (its last part ends without an %%EOF marker)", path=path)
    with _quiet_pypdf():
        try:
            reader = PdfReader(path, strict=False)
            if reader.is_encrypted and not reader.decrypt(password):
                raise InputError("encrypted PDF: a password is required to read it", path=path)
            total = len(reader.pages)
            docs = []
            for number, page in enumerate(reader.pages, 1):
                if extraction_mode == "layout":
                    text = clean_layout_text(page.extract_text(extraction_mode="layout"))
                else:
                    text = page.extract_text().strip()
                if not textfiles.is_blank(text):
                    docs.append(Document(text, {**_base_metadata(path), "page": number, "total_pages": total}))
        except InputError:
            raise
        except (PyPdfError, ValueError, KeyError, TypeError, AttributeError, IndexError,
                NotImplementedError, OSError) as exc:
            # pypdf raises many types on damaged files; all mean "cannot read this PDF".
            if "decrypt" in str(exc).lower() or "crypt" in type(exc).__name__.lower():
                raise InputError(f"encrypted PDF: {exc}", path=path) from None
            raise InputError(f"unreadable PDF: {type(exc).__name__}: {exc}", path=path) from None
    if total == 0:
        raise InputError("the PDF has no pages", path=path)
    if not docs:
        raise InputError(f"no extractable text in {total} page(s) (a scanned PDF needs OCR first)", path=path)
    return docs


LOADERS = {
    ".pdf": (load_pdf, "PDF through pypdf, one document per page (layout-mode extraction)"),
    ".txt": (load_text, "plain UTF-8 text, one document per file"),
    ".md": (load_markdown, "Markdown, one document per file"),
    ".jsonl": (load_jsonl, "JSON Lines, one document per line: {\"text\": ..., \"metadata\": {...}}"),
}


@hookimpl
def register_loaders(register):
    for extension, (factory, description) in LOADERS.items():
        register(extension, factory, description=description)
