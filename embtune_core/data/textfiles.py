"""Reading input files with one-line errors that name the file (every reader goes through here).

Readers agree with the libraries that read the same files: a line ends where Python's file iteration
ends it (``\n``, ``\r\n``), never at the other characters ``str.splitlines`` cuts at (U+2028, U+0085...),
and CSV/TSV is parsed by :func:`csv_rows` the way ``csv`` reads a file opened with ``newline=""``
(a quoted field keeps its line breaks).
"""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from pathlib import Path

from embtune_core.errors import InputError


def is_blank(text: str) -> bool:
    """True when ``text`` shows nothing: only whitespace and invisible format characters.

    ``str.strip`` keeps zero-width spaces and joiners (U+200B-U+200D, U+2060, U+FEFF: Unicode
    category Cf), so a text made only of them would pass an emptiness check and become an
    invisible chunk or query.
    """
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text)


def read_bytes(path: str | Path, *, error: type[InputError] = InputError) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise error("no such file", path=path) from None
    except IsADirectoryError:
        raise error("is a directory, expected a file", path=path) from None
    except OSError as exc:
        raise error(f"cannot read: {exc.strerror}", path=path) from None


def decode_utf8(data: bytes, path: str | Path, *, error: type[InputError] = InputError) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"not UTF-8 text (invalid byte at offset {exc.start})", path=path) from None


def read_text(path: str | Path, *, error: type[InputError] = InputError) -> str:
    return decode_utf8(read_bytes(path, error=error), path, error=error)


def read_jsonl(path: str | Path, *, error: type[InputError] = InputError, text: str | None = None
               ) -> list[tuple[int, dict]]:
    """(line number, object) of every non-blank line of a JSON Lines file (or of ``text`` read from it
    already); a line that is not a JSON object is ``error`` naming the file and the line
    (``line 3: malformed JSON at column 2: ...``)."""
    rows = []
    text = read_text(path, error=error) if text is None else text
    # Lines end at "\n" (and "\r\n"), as json/BEIR/datasets read a file line by line: str.splitlines would
    # also cut at U+2028, U+0085 or \x1c, which JSON strings may hold unescaped (json.dumps(..., ensure_ascii=False)).
    for number, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"line {number}: malformed JSON at column {exc.colno}: {exc.msg}", path=path) from None
        if not isinstance(row, dict):
            raise error(f"line {number}: expected a JSON object", path=path)
        rows.append((number, row))
    return rows


def csv_rows(text: str, **options) -> list[list[str]]:
    """The rows of CSV/TSV ``text`` as ``csv.reader`` reads a file opened with ``newline=""`` (Python's
    documented way): quoted fields keep their line breaks, and a row ends only at ``\n``/``\r\n``."""
    return list(csv.reader(io.StringIO(text, newline=""), **options))


def csv_dicts(text: str) -> list[dict[str, str]]:
    """The rows of CSV ``text`` as dicts keyed by its header row (``csv.DictReader``, ``newline=""``)."""
    return list(csv.DictReader(io.StringIO(text, newline="")))
