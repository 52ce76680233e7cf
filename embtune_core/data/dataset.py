"""The QA dataset: LlamaIndex's ``EmbeddingQAFinetuneDataset`` JSON, read and written unchanged.

The file holds ``queries`` ({query id: text}), ``corpus`` ({chunk id: text}), ``relevant_docs``
({query id: [chunk ids]}) and optionally ``mode`` ("text"). embtune may add keys LlamaIndex
ignores: ``negatives`` ({query id: [chunk ids]}), ``scores`` ({query id: {chunk id: float}}),
``corpus_metadata`` ({chunk id: {"source": ..., "page": ...}}) and ``qrels`` ({query id: {corpus id:
integer grade}}: a BEIR folder's judgements, kept whole so that evaluation scores them as pytrec_eval
does; a dataset without it is scored with sentence-transformers' conventions). Unknown keys are kept as they are,
so ``QADataset.load(p).save(q)`` writes JSON equal to the input, except that corpus ids written as
JSON integers in ``relevant_docs``/``negatives`` (``[1]``) are read, and written back, as the string
keys they name (``["1"]``): JSON object keys are always strings. A text made only of white space
or invisible characters (zero-width spaces) is refused as empty.

Importers turn BEIR folders and pairs/triplets JSONL or CSV into the same model.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embtune_core.data import textfiles
from embtune_core.data.documents import stable_id
from embtune_core.errors import DatasetError
from embtune_core.runtime import atomic

log = logging.getLogger(__name__)

CORE_KEYS = ("queries", "corpus", "relevant_docs", "mode")

# Chunks of 1024 tokens can exceed csv's default 128 KiB field limit.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
QRELS = "qrels"  # extra key: graded judgements {query id: {corpus id: grade}}, scored as pytrec_eval
EXTRA_KEYS = ("negatives", "scores", "corpus_metadata", QRELS)


@dataclass
class QADataset:
    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    mode: str | None = "text"
    extras: dict[str, Any] = field(default_factory=dict)

    # --- convenient views of the optional keys -------------------------------------------------
    @property
    def negatives(self) -> dict[str, list[str]]:
        return self.extras.get("negatives", {})

    @negatives.setter
    def negatives(self, value: dict[str, list[str]]) -> None:
        self.extras["negatives"] = value

    @property
    def corpus_metadata(self) -> dict[str, dict[str, Any]]:
        return self.extras.get("corpus_metadata", {})

    def __len__(self) -> int:
        return len(self.queries)

    def pairs(self) -> list[tuple[str, str]]:
        """(query text, positive chunk text) for each query and each of its relevant chunks."""
        return [(self.queries[q], self.corpus[c]) for q, cs in self.relevant_docs.items() for c in cs]

    def subset(self, query_ids: Iterable[str], *, corpus_ids: Iterable[str] | None = None) -> QADataset:
        """The queries given, with the whole corpus or only ``corpus_ids``; extras filtered to match."""
        qids = [q for q in query_ids if q in self.queries]
        keep_corpus = set(corpus_ids) if corpus_ids is not None else set(self.corpus)
        extras: dict[str, Any] = {}
        for key, value in self.extras.items():
            if key in ("negatives", "scores") and isinstance(value, dict):
                extras[key] = {q: _filter(value[q], keep_corpus) for q in qids if q in value}
            elif key == QRELS and isinstance(value, dict):
                # a judgement of a document the corpus never held stays (BEIR keeps it); one of a document
                # left in the other part of a split goes with it
                keep = keep_corpus | {c for q in qids for c in value.get(q, {}) if c not in self.corpus}
                extras[key] = {q: _filter(value[q], keep) for q in qids if q in value}
            elif key == "corpus_metadata" and isinstance(value, dict):
                extras[key] = {c: m for c, m in value.items() if c in keep_corpus}
            else:
                extras[key] = value
        return QADataset(
            queries={q: self.queries[q] for q in qids},
            corpus={c: t for c, t in self.corpus.items() if c in keep_corpus},
            relevant_docs={q: [c for c in self.relevant_docs.get(q, []) if c in keep_corpus] for q in qids},
            mode=self.mode,
            extras=extras,
        )

    # --- JSON ----------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "queries": self.queries,
            "corpus": self.corpus,
            "relevant_docs": self.relevant_docs,
        }
        if self.mode is not None:
            out["mode"] = self.mode
        out.update(self.extras)
        return out

    def save(self, path: str | Path, *, indent: int | None = None) -> None:
        """Write atomically. ``indent=None`` matches the compact layout of LlamaIndex's files."""
        self.validate(path)
        atomic.write_json(path, self.to_json(), indent=indent)

    @classmethod
    def from_json(cls, data: Any, path: str | Path = "<dataset>") -> QADataset:
        if not isinstance(data, dict):
            raise DatasetError("top level must be a JSON object with queries, corpus, relevant_docs", path=path)
        for key in ("queries", "corpus", "relevant_docs"):
            if key not in data:
                raise DatasetError("missing required key", path=path, field=key)
            if not isinstance(data[key], dict):
                raise DatasetError("must be a JSON object", path=path, field=key)
        mode = data.get("mode")
        if mode is not None and not isinstance(mode, str):
            raise DatasetError("must be a string such as \"text\"", path=path, field="mode")
        relevant = {}
        for qid, ids in data["relevant_docs"].items():
            if isinstance(ids, str):
                ids = [ids]
            if not isinstance(ids, list):
                raise DatasetError("must be a list of corpus ids", path=path, field=f"relevant_docs.{qid}")
            relevant[qid] = [_corpus_id(i, path, f"relevant_docs.{qid}") for i in ids]
        extras = {k: v for k, v in data.items() if k not in CORE_KEYS}
        if isinstance(extras.get("negatives"), dict):
            extras["negatives"] = {
                qid: [_corpus_id(i, path, f"negatives.{qid}") for i in ids] if isinstance(ids, list) else ids
                for qid, ids in extras["negatives"].items()}
        ds = cls(
            queries=data["queries"],
            corpus=data["corpus"],
            relevant_docs=relevant,
            mode=mode,
            extras=extras,
        )
        ds.validate(path)
        return ds

    @classmethod
    def load(cls, path: str | Path) -> QADataset:
        path = Path(path)
        return cls.from_json(read_json(path), path)

    # --- validation ----------------------------------------------------------------------------
    def validate(self, path: str | Path = "<dataset>") -> None:
        """Raise :class:`DatasetError` (one line, naming file and field) on the first problem."""
        for key, table in (("queries", self.queries), ("corpus", self.corpus)):
            for item_id, text in table.items():
                if not isinstance(text, str):
                    raise DatasetError("text must be a string", path=path, field=f"{key}.{item_id}")
                if textfiles.is_blank(text):
                    raise DatasetError("empty text", path=path, field=f"{key}.{item_id}")
        for qid, ids in self.relevant_docs.items():
            if qid not in self.queries:
                raise DatasetError(f"dangling query id '{qid}' (not in queries)", path=path,
                                   field="relevant_docs")
            for cid in ids:
                if cid not in self.corpus:
                    raise DatasetError(f"dangling relevant id '{cid}' (not in corpus)", path=path,
                                       field=f"relevant_docs.{qid}")
        for qid, ids in self.negatives.items():
            for cid in ids:
                if cid not in self.corpus:
                    raise DatasetError(f"dangling negative id '{cid}' (not in corpus)", path=path,
                                       field=f"negatives.{qid}")
        qrels = self.extras.get(QRELS)
        if qrels is not None:
            if not isinstance(qrels, dict):
                raise DatasetError("must be an object {query id: {corpus id: grade}}", path=path, field=QRELS)
            for qid, grades in qrels.items():
                if not isinstance(grades, dict) or not all(
                        isinstance(g, int) and not isinstance(g, bool) for g in grades.values()):
                    raise DatasetError("must be an object {corpus id: integer grade}", path=path,
                                       field=f"{QRELS}.{qid}")


def _corpus_id(value: Any, path: str | Path, field: str) -> str:
    """A corpus id as the string key it must match: JSON object keys are always strings, so an id
    written as a number (``[1]``) means the key ``"1"``; anything else is refused."""
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise DatasetError(f"corpus id {json.dumps(value)[:40]} must be a string (or an integer)", path=path,
                       field=field)


def _filter(value: Any, keep: set[str]) -> Any:
    if isinstance(value, list):
        return [c for c in value if c in keep]
    if isinstance(value, dict):
        return {c: s for c, s in value.items() if c in keep}
    return value


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def read_json(path: str | Path) -> Any:
    """Parse JSON, refusing duplicate keys (JSON allows them; silently keeping the last loses data)."""
    path = Path(path)
    text = read_text(path)
    try:
        return json.loads(text, object_pairs_hook=_reject_duplicate_keys)
    except _DuplicateKey as exc:
        raise DatasetError(f"duplicate id '{exc.key}'", path=path) from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"malformed JSON at line {exc.lineno} column {exc.colno} (char {exc.pos}): {exc.msg}",
                           path=path) from None


def read_text(path: str | Path) -> str:
    return textfiles.read_text(path, error=DatasetError)


# --- importers -----------------------------------------------------------------------------------
def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [row for _, row in textfiles.read_jsonl(path, error=DatasetError)]


def _beir_entries(path: Path, text_of) -> dict[str, str]:
    """{_id: text} of a BEIR corpus.jsonl or queries.jsonl; ids must be present and unique."""
    entries: dict[str, str] = {}
    for i, row in enumerate(_read_jsonl(path), 1):
        entry_id = str(row.get("_id", ""))
        if not entry_id:
            raise DatasetError(f"entry {i} has no _id", path=path)
        if entry_id in entries:
            raise DatasetError(f"duplicate id '{entry_id}'", path=path)
        entries[entry_id] = text_of(row)
    return entries


def _beir_document_text(row: dict[str, Any]) -> str:
    # Title and text joined as BEIR's own evaluation does.
    title, text = str(row.get("title") or "").strip(), str(row.get("text") or "").strip()
    return f"{title} {text}".strip() if title else text


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """A BEIR qrels TSV (``query-id corpus-id score``) as {query id: {corpus id: grade}}, as BEIR's
    ``GenericDataLoader`` reads it: a later row for the same pair replaces the earlier one, every grade
    is kept (0 and negative grades too) and documents need not be in the corpus. The header line is
    skipped when its score is not a number. Grades are integers (pytrec_eval reads integers): ``2`` and
    ``2.0`` are accepted, ``0.5`` is refused naming the line."""
    qrels: dict[str, dict[str, int]] = {}
    for lineno, row in enumerate(textfiles.csv_rows(read_text(path), delimiter="\t"), 1):
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) < 3:
            raise DatasetError(f"line {lineno}: expected query-id, corpus-id, score", path=path)
        qid, cid = row[0], row[1]
        try:
            score = float(row[2])
        except ValueError:
            if lineno == 1:
                continue  # header line "query-id corpus-id score"
            raise DatasetError(f"line {lineno}: score {row[2][:40]!r} is not a number", path=path) from None
        if not score.is_integer():
            raise DatasetError(f"line {lineno}: grade {row[2][:40]!r} is not a whole number (BEIR and pytrec_eval "
                               "read integer grades: 0 not relevant, 1 and up relevant)", path=path)
        qrels.setdefault(qid, {})[cid] = int(score)
    return qrels


def load_beir(folder: str | Path, split: str = "test") -> QADataset:
    """Import a BEIR folder: corpus.jsonl, queries.jsonl and qrels/<split>.tsv.

    Read as BEIR's ``GenericDataLoader`` reads it (title and text joined as BEIR's models embed them;
    the qrels as :func:`read_qrels` reads them), and kept whole in the ``qrels`` extra, which makes
    evaluation score it as pytrec_eval does (graded gains, grades >= 1 relevant, judged documents missing
    from the corpus counted; :mod:`embtune_core.scoring.evaluation`). ``queries`` holds every query of the qrels
    (a query judged only 0 included: BEIR evaluates it); ``relevant_docs`` its corpus documents of grade
    >= 1 (what training reads). Qrels queries missing from queries.jsonl are left out, in one line.
    """
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    for needed in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels_path):
        if not needed.is_file():
            raise DatasetError("missing BEIR file", path=needed)
    corpus = _beir_entries(folder / "corpus.jsonl", _beir_document_text)
    all_queries = _beir_entries(folder / "queries.jsonl", lambda row: str(row.get("text") or ""))
    qrels = read_qrels(qrels_path)
    no_text = [q for q in qrels if q not in all_queries]
    if no_text:
        log.warning("%s: %d of %d judged queries are not in queries.jsonl (e.g. '%s'); they are left out",
                    qrels_path, len(no_text), len(qrels), no_text[0])
    kept = {q: grades for q, grades in qrels.items() if q in all_queries}
    if not kept:
        raise DatasetError("no judged query is in queries.jsonl", path=qrels_path)
    relevant = {q: [c for c, grade in grades.items() if grade >= 1 and c in corpus] for q, grades in kept.items()}
    ds = QADataset(
        queries={q: all_queries[q] for q in kept},
        corpus=corpus,
        relevant_docs={q: ids for q, ids in relevant.items() if ids},
        extras={QRELS: kept},
    )
    ds.validate(qrels_path)
    return ds


_QUERY_KEYS = ("query", "anchor", "question")
_POSITIVE_KEYS = ("positive", "pos", "document", "passage")
_NEGATIVE_KEYS = ("negative", "neg", "hard_negative")


def _pick(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    for key in keys:
        if key in row and row[key] not in (None, ""):
            return row[key]
    return None


def load_pairs(path: str | Path) -> QADataset:
    """Import pairs or triplets from JSONL or CSV with columns query/anchor, positive[, negative].

    Ids are derived from text, so one chunk used by several queries appears once in the corpus.
    A ``negative`` column fills ``negatives``.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        text = read_text(path)
        try:
            rows = textfiles.csv_dicts(text)  # a quoted chunk keeps its line breaks
        except csv.Error as exc:
            raise DatasetError(f"malformed CSV: {exc}", path=path) from None
    else:
        rows = _read_jsonl(path)
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    negatives: dict[str, list[str]] = {}
    repeated = 0
    for i, row in enumerate(rows, 1):
        query, positive = _pick(row, _QUERY_KEYS), _pick(row, _POSITIVE_KEYS)
        if query is None or positive is None:
            raise DatasetError(f"row {i} needs a query (or anchor) and a positive", path=path)
        qid, pid = stable_id("q", query), stable_id("c", positive)
        queries[qid] = str(query)
        corpus[pid] = str(positive)
        if pid not in relevant.setdefault(qid, []):
            relevant[qid].append(pid)
        elif _pick(row, _NEGATIVE_KEYS) is None:
            repeated += 1  # the same (query, positive) again: one judgement, read once
        negative = _pick(row, _NEGATIVE_KEYS)
        for neg in negative if isinstance(negative, list) else ([negative] if negative is not None else []):
            nid = stable_id("c", neg)
            corpus[nid] = str(neg)
            if nid not in negatives.setdefault(qid, []):
                negatives[qid].append(nid)
    if not queries:
        raise DatasetError("no rows", path=path)
    if repeated:
        log.warning("%s: %d of %d rows repeat an earlier row's (query, positive) pair; each pair is read once", path,
                    repeated, len(rows))
    ds = QADataset(queries, corpus, relevant, extras={"negatives": negatives} if negatives else {})
    ds.validate(path)
    return ds


def beir_splits(folder: str | Path) -> list[str]:
    """The qrels splits a BEIR folder holds (``train``, ``dev``, ``test``...), sorted."""
    return sorted(p.stem for p in (Path(folder) / "qrels").glob("*.tsv"))


def load_split(path: str | Path, *, split: str, field: str, option: str = "--split") -> QADataset:
    """A dataset for a command that trains or mines: a BEIR folder is read with qrels/``split``.tsv,
    which must exist (a folder without it is refused, never replaced by another split: training on
    ``test`` by default would grade the model on its own training questions). Files have no split."""
    path = Path(path)
    if path.is_dir() and not (path / "qrels" / f"{split}.tsv").is_file() and (path / "corpus.jsonl").is_file():
        have = ", ".join(beir_splits(path)) or "none"
        raise DatasetError(f"no '{split}' split (qrels/{split}.tsv; this folder has: {have}); pass {option} "
                           "to read another", path=path, field=field)
    return load_any(path, split=split)


def source_of(path: str | Path, split: str | None = None) -> str:
    """Where a dataset's queries came from, for summaries and reports: the file, or a BEIR folder's
    qrels file of ``split``."""
    path = Path(path)
    return str(path / "qrels" / f"{split}.tsv") if split and path.is_dir() else str(path)


def check_disjoint_queries(train: QADataset, val: QADataset, *, path: str | Path, field: str) -> None:
    """Refuse a validation set that shares a query id or a query text with the training set: the
    best checkpoint (or adapter epoch) would be chosen on questions the model was trained on."""
    shared_ids = set(train.queries) & set(val.queries)
    train_texts = set(train.queries.values())
    shared_texts = {t for t in val.queries.values() if t in train_texts}
    if shared_ids or shared_texts:
        example = min(shared_ids) if shared_ids else min(shared_texts)
        raise DatasetError(f"validation shares {len(shared_ids)} query ids and {len(shared_texts)} query texts "
                           f"with the training set (e.g. {example[:60]!r}); validate on other queries "
                           "(another file, or a BEIR folder's dev split)", path=path, field=field)


_CORPUS_ID_KEYS = ("_id", "id")


def load_corpus(path: str | Path) -> dict[str, str]:
    """{chunk id: text} of the documents an index will hold, for the commands that read only chunk
    texts (``train --index-corpus``, ``train-adapter --index-corpus``, ``evaluate --index``). Accepts
    every dataset :func:`load_any` reads (its corpus, whatever its questions) and a bare corpus:

    * a BEIR folder (only its ``corpus.jsonl`` is read: no queries or qrels needed) or a BEIR
      ``corpus.jsonl`` file (``{"_id", "title", "text"}``; title and text joined as :func:`load_beir` does);
    * JSON Lines of ``{"id", "text"}`` (or ``"_id"``), e.g. a run's ``chunks.jsonl``;
    * a LlamaIndex JSON holding ``corpus`` without ``queries``/``relevant_docs``.

    A JSONL file is a corpus when its first row has an id and a ``text`` and no question; otherwise
    it is read as pairs. Raises DatasetError naming the file, the field (``line 3: text``,
    ``corpus.u7``) and the problem: a missing, non-string or empty text, a missing or repeated id,
    an empty corpus.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "corpus.jsonl").is_file():
            raise DatasetError("not a BEIR folder (a corpus needs corpus.jsonl)", path=path, field="corpus.jsonl")
        corpus = _corpus_rows(path / "corpus.jsonl")
    elif path.suffix.lower() in (".jsonl", ".csv"):
        rows = textfiles.read_jsonl(path, error=DatasetError) if path.suffix.lower() == ".jsonl" else []
        corpus = _corpus_rows(path, rows) if rows and _is_corpus_row(rows[0][1]) else load_pairs(path).corpus
    else:
        data = read_json(path)
        if isinstance(data, dict) and "corpus" not in data:
            raise DatasetError("missing required key (the chunks: {chunk id: text})", path=path, field="corpus")
        if isinstance(data, dict) and not {"queries", "relevant_docs"} & set(data):
            if not isinstance(data["corpus"], dict):
                raise DatasetError("must be a JSON object {chunk id: text}", path=path, field="corpus")
            QADataset({}, data["corpus"], {}).validate(path)
            corpus = dict(data["corpus"])
        else:
            corpus = QADataset.from_json(data, path).corpus
    if not corpus:
        raise DatasetError("holds no chunk", path=path, field="corpus")
    return corpus


def load_corpora(paths: Iterable[str | Path]) -> dict[str, str]:
    """The chunks of every corpus in ``paths`` (:func:`load_corpus`) as one {chunk id: text}; an id that
    names two different texts is refused (DatasetError naming the later file and ``corpus.<id>``)."""
    corpus: dict[str, str] = {}
    for path in paths:
        for chunk_id, text in load_corpus(path).items():
            if corpus.setdefault(chunk_id, text) != text:
                raise DatasetError("this chunk id names another text in an earlier corpus; give the chunks "
                                   "distinct ids", path=path, field=f"corpus.{chunk_id}")
    return corpus


def _is_corpus_row(row: dict[str, Any]) -> bool:
    return "text" in row and any(k in row for k in _CORPUS_ID_KEYS) and _pick(row, _QUERY_KEYS) is None


def _corpus_rows(path: Path, rows: list[tuple[int, dict[str, Any]]] | None = None) -> dict[str, str]:
    """{id: text} of a corpus JSON Lines file (``_id`` or ``id``, ``text``, optional ``title``);
    ``rows``: its (line number, object) pairs when already read."""
    corpus: dict[str, str] = {}
    for number, row in rows if rows is not None else textfiles.read_jsonl(path, error=DatasetError):
        def bad(problem: str, name: str, number: int = number) -> DatasetError:
            return DatasetError(problem, path=path, field=f"line {number}: {name}")

        key = next((k for k in _CORPUS_ID_KEYS if k in row), None)
        if key is None or row[key] in (None, ""):
            raise bad("missing (every row needs an id: _id or id)", key or "_id")
        if isinstance(row[key], bool) or not isinstance(row[key], (str, int)):
            raise bad(f"must be a string, not {json.dumps(row[key])[:40]}", key)
        for name in ("text", "title"):
            if name in row and not isinstance(row[name], (str, type(None))):
                raise bad(f"must be a string, not {json.dumps(row[name])[:40]}", name)
        if "text" not in row:
            raise bad("missing", "text")
        text = _beir_document_text(row)
        if textfiles.is_blank(text):
            raise bad("empty text", "text")
        chunk_id = str(row[key])
        if chunk_id in corpus:
            raise bad(f"duplicate id '{chunk_id}'", key)
        corpus[chunk_id] = text
    return corpus


def load_any(path: str | Path, *, split: str = "test") -> QADataset:
    """Load a dataset in whichever supported format ``path`` is (a BEIR folder with qrels/``split``.tsv;
    ``test`` suits evaluation; commands that train or mine use :func:`load_split`)."""
    path = Path(path)
    if path.is_dir():
        return load_beir(path, split=split)
    if path.suffix.lower() in (".jsonl", ".csv"):
        return load_pairs(path)
    return QADataset.load(path)
