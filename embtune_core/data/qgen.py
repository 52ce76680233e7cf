"""What every question generator shares, kept in core so that no plugin imports another: the
:class:`Journal` of completed LLM calls (an interrupted run resumes without paying a call twice),
:func:`parse_questions` (an LLM reply as a list of questions) and :func:`dataset_from_questions`
(generated questions as a :class:`~embtune_core.data.dataset.QADataset` with stable query ids).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from embtune_core.data.dataset import QADataset
from embtune_core.data.documents import Chunk, stable_id
from embtune_core.errors import InputError

log = logging.getLogger(__name__)


# Chunk metadata worth keeping per corpus entry (small, JSON-friendly).
_METADATA_KEYS = ("source", "file_name", "page", "line", "chunk_index", "start_char_idx", "end_char_idx")


def corpus_metadata(chunk: Chunk, **extra: Any) -> dict[str, Any]:
    meta = {k: chunk.metadata[k] for k in _METADATA_KEYS if k in chunk.metadata}
    meta.update(extra)
    return meta


def query_id(chunk_id: str, index: int, question: str) -> str:
    """Stable query id: the same chunk and question give the same id on every run."""
    return stable_id("query", chunk_id, index, question)


def dataset_from_questions(chunks: Sequence[Chunk], questions: dict[str, list[str]]) -> QADataset:
    """A QADataset whose corpus is every chunk and whose queries are ``questions[chunk.id]``.

    Chunks keep their input order, so the output does not depend on which call finished first.
    """
    queries: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    corpus: dict[str, str] = {}
    metadata: dict[str, dict[str, Any]] = {}
    for chunk in chunks:
        corpus[chunk.id] = chunk.text
        metadata[chunk.id] = corpus_metadata(chunk)
        for i, question in enumerate(questions.get(chunk.id, [])):
            qid = query_id(chunk.id, i, question)
            queries[qid] = question
            relevant[qid] = [chunk.id]
    return QADataset(queries, corpus, relevant, extras={"corpus_metadata": metadata})


# --- parsing ---------------------------------------------------------------------------------------
_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_MARKER = re.compile(
    r"^\s*(?:[-*\u2022\u25cf>]+\s*|#+\s*|\(?\d{1,3}\s*[.):\]]\s*|\(?[a-hA-H][.)]\s+|"
    r"(?:q(?:uestion)?\s*\d*\s*[:.)-])\s*)+", re.IGNORECASE)
_PREAMBLE = re.compile(r"^(?:here (?:are|is)|sure|certainly|okay|ok,|of course|below (?:are|is)|"
                       r"the following|i (?:have|hope|can)|these questions|note:)", re.IGNORECASE)


def _clean(line: str) -> str:
    line = _MARKER.sub("", line.strip()).strip()
    line = line.replace("**", "").replace("__", "").strip()
    if len(line) >= 2 and line[0] in "\"'\u201c`" and line[-1] in "\"'\u201d`":
        line = line[1:-1].strip()
    return line


_FENCE = re.compile(r"^\s*```(?:json)?\s*|\s*```\s*$", re.IGNORECASE)
# A reply that starts as JSON ("```json", "{", '["', "[{"): when it does not parse (cut off at the
# token limit, or a small model's invented nesting), its lines are JSON syntax, not questions.
_JSON_START = re.compile(r"^\s*(?:```\s*json|\{|\[\s*(?:[\"{]|$))", re.IGNORECASE)
_NO_WORDS = re.compile(r"^[\W_]*$|^```", re.UNICODE)


def _json_queries(text: str) -> list[str] | None:
    """The strings of a JSON reply: ``{"queries": [...]}`` (or ``"questions"``), or a bare list; None
    when the reply is not such JSON (then it is read line by line)."""
    body = _FENCE.sub("", text.strip())
    start = min((i for i in (body.find("{"), body.find("[")) if i >= 0), default=-1)
    if start < 0:
        return None
    try:
        value, _ = json.JSONDecoder().raw_decode(body[start:])
    except ValueError:
        return None
    if isinstance(value, dict):
        value = next((value[k] for k in ("queries", "questions") if isinstance(value.get(k), list)), None)
    if not isinstance(value, list):
        return None
    return [" ".join(item.split()) for item in value if isinstance(item, str) and item.strip()]


def parse_questions(text: str | None, limit: int | None = None) -> list[str]:
    """The questions in an LLM reply, in order: the strings of a JSON reply (embtune's default prompt
    asks for ``{"queries": [...]}``, keyword queries included), else the reply's lines without
    numbering, bullets or preamble lines.

    A reply that starts as JSON but does not parse (cut off by the token limit, or nested objects a
    small model invented) gives no questions, rather than its ``{`` and fence lines as questions: the
    ``openai`` generator then asks again and, failing that, counts the chunk as failed."""
    if not text:
        return []
    text = _THINK.sub("", text)
    from_json = _json_queries(text)
    if from_json is not None:
        unique = list(dict.fromkeys(from_json))
        return unique[:limit] if limit else unique
    if _JSON_START.match(text):
        return []
    lines = [_clean(line) for line in text.replace("\r", "\n").split("\n")]
    lines = [line for line in lines if line and not _NO_WORDS.match(line)]
    candidates = []
    for line in lines:
        if line.endswith(":") and "?" not in line:
            continue  # "Here are two questions:", "Questions:"
        if _PREAMBLE.match(line) and "?" not in line:
            continue
        candidates.append(line)
    # When some lines are questions, lines that are not ("I hope this helps.") are chatter.
    if any(c.endswith("?") for c in candidates):
        candidates = [c for c in candidates if "?" in c]
    seen, out = set(), []
    for c in candidates:
        if c.lower() not in seen:
            seen.add(c.lower())
            out.append(c)
    return out[:limit] if limit else out


# --- journal ---------------------------------------------------------------------------------------
class Journal:
    """Append-only JSONL of completed calls: one fsynced line per call; a torn last line is dropped."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[str, dict[str, Any]] = {}
        self._handle = None
        self._lock_handle = None

    def open(self) -> Journal:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock()
        if self.path.exists():
            data = self.path.read_bytes()
            good_end = data.rfind(b"\n") + 1  # bytes after the last newline are a torn write
            if good_end < len(data):
                log.warning("%s: dropping a torn last line (%d bytes) from an interrupted run",
                            self.path, len(data) - good_end)
                with open(self.path, "r+b") as handle:
                    handle.truncate(good_end)
                    handle.flush()
                    os.fsync(handle.fileno())
            for number, line in enumerate(data[:good_end].splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    log.warning("%s: line %d is damaged; that call will be made again", self.path, number)
        self._handle = open(self.path, "ab")  # noqa: SIM115 - held for the whole run, closed in close()
        return self

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no advisory lock
            return
        self._lock_handle = open(self.path.with_name(self.path.name + ".lock"), "w")  # noqa: SIM115
        try:
            fcntl.flock(self._lock_handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_handle.close()
            raise InputError("another run is using this journal; wait for it or use another --work-dir",
                             path=self.path) from None

    def append(self, entry: dict[str, Any]) -> None:
        assert self._handle is not None, "journal not open"
        self._write(entry)
        os.fsync(self._handle.fileno())
        self.entries[entry["key"]] = entry

    async def append_async(self, entry: dict[str, Any]) -> None:
        """:meth:`append` whose fsync runs in a thread, so other requests proceed meanwhile.

        The line is written whole from the event loop's thread (no interleaving); concurrent
        fsyncs of one file coalesce in the kernel."""
        assert self._handle is not None, "journal not open"
        self._write(entry)
        await asyncio.to_thread(os.fsync, self._handle.fileno())
        self.entries[entry["key"]] = entry

    def _write(self, entry: dict[str, Any]) -> None:
        from embtune_core.runtime.secrets_scrub import scrub_known

        # a reply may quote what it was sent: no known secret reaches the journal (a scrubbed key never matches)
        self._handle.write(scrub_known(json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        self._handle.flush()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._lock_handle is not None:
            self._lock_handle.close()
            self._lock_handle = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
