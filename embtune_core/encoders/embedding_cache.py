"""A content-addressed embedding cache: every text is embedded once per encoder, then read from disk.

Corpus and queries are embedded once and reused across adapter-training epochs, runs and
evaluations. An entry's key is (encoder identity, kind, hash of the text), so a changed model,
prompt or normalisation never returns stale vectors, and the same text in two datasets is
embedded once.

On-disk layout (``root`` defaults to ``embtune_core.encoders.models.cache_dir() / "embeddings"``)::

    root/<hash of encoder identity>/identity.txt      the identity in clear, to detect collisions
    root/<hash of encoder identity>/query/b2-<checksum>.npy  one shard per embedded batch
    root/<hash of encoder identity>/document/b2-<checksum>.npy

A shard is a plain ``.npy`` file (no pickle) holding a structured array of rows
``(key: 16-byte BLAKE2b of the UTF-8 text, vector: float32[dim])``; reads memory-map it. Each
shard is written to a temporary name and renamed into place, so a reader sees a whole shard or
none: an interrupted run keeps every batch it finished (the next run computes only the rest),
and two runs embedding at once each add their own shards (a text both computed is stored twice;
the first shard read wins, and both hold the same vector). Temporary files left by a killed
writer are ignored and removed after a day.

Every shard read back is verified. Its name is its checksum, ``b2-<BLAKE2b-128 of the file's
bytes>.npy``, checked when a process first opens it; a shard whose bytes no longer match (bit rot,
a bad copy), that is empty or unreadable, or whose vectors have another width than the rest of the
store (a shard copied from another encoder) is named in one warning line and deleted, and the
vectors it held are computed again. When the encoder itself returns vectors of another width than
every cached shard, the shards are the stale ones: they are deleted, named, and rebuilt. A shard of
an older embtune (a random name, no checksum) is checked for its layout and renamed to its checksum
once. ``identity.txt`` that is empty or unreadable is rewritten; one naming another encoder empties
the folder (its vectors are not this encoder's).

Example::

    cache = EmbeddingCache()
    corpus = cache.embed(encoder, list(dataset.corpus.values()), kind="document")  # (n, dim) float32
    again = cache.embed(encoder, list(dataset.corpus.values()), kind="document")   # no encoder call
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embtune_core.errors import InputError
from embtune_core.runtime import atomic
from embtune_core.runtime.progress import progress

log = logging.getLogger(__name__)

KINDS = ("query", "document")
KEY_BYTES = 16
DEFAULT_SHARD_SIZE = 1024
STALE_TEMP_SECONDS = 24 * 3600


def text_key(text: str) -> bytes:
    """The cache key of one text: 16 bytes of BLAKE2b over its UTF-8 encoding."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=KEY_BYTES).digest()


def identity_dir_name(identity: str) -> str:
    return hashlib.blake2b(identity.encode("utf-8"), digest_size=16).hexdigest()


def _shard_dtype(dim: int) -> np.dtype:
    return np.dtype([("key", f"V{KEY_BYTES}"), ("vector", "<f4", (dim,))])


CHECKSUM_PREFIX = "b2-"


def file_checksum(path: Path) -> str:
    """BLAKE2b-128 of a file's bytes, hex (the checksum a shard's name carries)."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class _Store:
    """The shards of one (encoder identity, kind): an in-memory index over memory-mapped files."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.dim: int | None = None
        self.index: dict[bytes, tuple[int, int]] = {}  # key -> (shard number, row)
        self.shards: list[np.ndarray] = []
        self.paths: list[Path] = []
        self.seen: set[str] = set()

    def _discard(self, path: Path, problem: str) -> None:
        """Delete a shard that cannot be trusted, naming it and why, in one line."""
        log.warning("embedding cache shard %s %s; deleted, its vectors will be computed again", path, problem)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    def _open(self, path: Path) -> np.ndarray | None:
        """The verified shard at ``path`` (checksum, layout), or None after discarding it."""
        try:
            if path.stat().st_size == 0:
                self._discard(path, "is empty (0 bytes)")
                return None
            checksum = file_checksum(path)
        except OSError as exc:
            self._discard(path, f"cannot be read ({exc.strerror})")
            return None
        named = path.stem[len(CHECKSUM_PREFIX):] if path.stem.startswith(CHECKSUM_PREFIX) else None
        if named is not None and named != checksum:
            self._discard(path, "does not match its checksum (damaged or altered)")
            return None
        try:
            shard = np.load(path, mmap_mode="r", allow_pickle=False)
            names = shard.dtype.names or ()
            if names != ("key", "vector") or shard.ndim != 1 or shard.dtype["key"].itemsize != KEY_BYTES \
                    or len(shard.dtype["vector"].shape) != 1:
                raise ValueError(f"unexpected layout {shard.dtype}")
        except (OSError, ValueError) as exc:
            self._discard(path, f"is unreadable ({' '.join(str(exc).split())[:120]})")
            return None
        if named is None:  # written by an older embtune, without a checksum: give it one
            verified = path.with_name(f"{CHECKSUM_PREFIX}{checksum}.npy")
            os.replace(path, verified)
            self.seen.add(verified.name)
            log.info("embedding cache shard %s had no checksum; renamed to %s", path, verified.name)
            shard = np.load(verified, mmap_mode="r", allow_pickle=False)
            path = verified
        self.paths.append(path)
        return shard

    def refresh(self) -> None:
        """Open shards written since the last look (by this process or another), verified."""
        if not self.directory.is_dir():
            return
        opened: list[tuple[Path, np.ndarray]] = []
        for path in sorted(self.directory.glob("[!.]*.npy")):
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            shard = self._open(path)
            if shard is not None:
                opened.append((self.paths[-1], shard))
        if self.dim is None and opened:
            # The store's width is the one most rows have: a foreign shard cannot set it by sorting first.
            rows: dict[int, int] = {}
            for _, shard in opened:
                width = shard.dtype["vector"].shape[0]
                rows[width] = rows.get(width, 0) + len(shard)
            self.dim = max(rows, key=lambda w: (rows[w], -w))
        for path, shard in opened:
            width = shard.dtype["vector"].shape[0]
            if width != self.dim:
                self.paths.remove(path)
                self._discard(path, f"holds {width}-dimensional vectors where this encoder's other shards hold "
                                    f"{self.dim} (a shard of another encoder?)")
                continue
            self.add(shard)

    def reset(self, problem: str) -> None:
        """Forget and delete every shard (they disagree with the encoder), naming why."""
        log.warning("embedding cache %s: %s; its %d shards are deleted and the vectors computed again",
                    self.directory, problem, len(self.paths))
        for path in self.paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.dim, self.index, self.shards, self.paths = None, {}, [], []

    def add(self, shard: np.ndarray) -> None:
        number = len(self.shards)
        self.shards.append(shard)
        raw = np.ascontiguousarray(shard["key"]).tobytes()
        index = self.index
        for row in range(len(shard)):
            index.setdefault(raw[row * KEY_BYTES:(row + 1) * KEY_BYTES], (number, row))

    def write(self, keys: list[bytes], vectors: np.ndarray) -> None:
        if self.dim is None:
            self.dim = vectors.shape[1]
        shard = np.empty(len(keys), dtype=_shard_dtype(self.dim))
        shard["key"] = np.frombuffer(b"".join(keys), dtype=f"V{KEY_BYTES}")
        shard["vector"] = vectors
        buffer = io.BytesIO()
        np.save(buffer, shard, allow_pickle=False)
        data = buffer.getvalue()
        path = self.directory / f"{CHECKSUM_PREFIX}{hashlib.blake2b(data, digest_size=16).hexdigest()}.npy"
        from embtune_core.runtime.resources import ResourceError

        try:
            atomic.write_bytes(path, data)
        except ResourceError as exc:
            raise ResourceError(f"{exc.problem.split(' (')[0]} while caching embeddings (the shards finished so far "
                                "are kept; free space, or set EMBTUNE_CACHE to a folder on a larger disk)",
                                path=path) from None
        self.seen.add(path.name)
        self.paths.append(path)
        self.add(np.load(path, mmap_mode="r", allow_pickle=False))

    def gather(self, keys: Sequence[bytes]) -> np.ndarray:
        locations = np.array([self.index[k] for k in keys], dtype=np.int64).reshape(-1, 2)
        out = np.empty((len(keys), self.dim or 0), dtype=np.float32)
        for number in np.unique(locations[:, 0]):
            where = np.nonzero(locations[:, 0] == number)[0]
            rows = locations[where, 1]
            out[where] = self.shards[number]["vector"][rows]
        return out


class EmbeddingCache:
    """Embeds texts through an encoder, computing only those not already on disk.

    ``root``: cache folder (default ``cache_dir()/"embeddings"``). ``shard_size``: texts per
    encoder call and per shard; a smaller size loses less work to an interruption.
    """

    def __init__(self, root: str | os.PathLike | None = None, *, shard_size: int = DEFAULT_SHARD_SIZE):
        if root is None:
            from embtune_core.encoders.models import cache_dir

            root = cache_dir() / "embeddings"
        self.root = Path(root)
        self.shard_size = max(1, int(shard_size))
        self._stores: dict[tuple[str, str], _Store] = {}

    def _store(self, identity: str, kind: str) -> _Store:
        if kind not in KINDS:
            raise InputError(f"unknown kind '{kind}'; expected one of {', '.join(KINDS)}", field="kind")
        store = self._stores.get((identity, kind))
        if store is None:
            encoder_dir = self.root / identity_dir_name(identity)
            _check_identity(encoder_dir, identity)
            _remove_stale_temporaries(encoder_dir / kind)
            store = self._stores[(identity, kind)] = _Store(encoder_dir / kind)
        store.refresh()
        return store

    def embed(self, encoder, texts: Sequence[str], *, kind: str = "query", desc: str | None = None) -> np.ndarray:
        """``(len(texts), dim)`` float32 vectors of ``texts``, in order; only missing ones are encoded.

        ``kind="query"`` calls ``encoder.encode_queries``, ``"document"`` ``encoder.encode_documents``.
        """
        identity = encoder.identity
        store = self._store(identity, kind)
        keys = [text_key(t) for t in texts]
        todo = self._missing(store, keys, texts)
        if todo:
            encode = encoder.encode_queries if kind == "query" else encoder.encode_documents
            label = desc or ("embedding queries" if kind == "query" else "embedding documents")
            with progress(desc=label, total=len(todo), unit="text") as bar:
                start = 0
                while start < len(todo):
                    batch = todo[start:start + self.shard_size]
                    vectors = np.asarray(encode([text for _, text in batch]), dtype=np.float32)
                    if (start == 0 and store.dim is not None and vectors.ndim == 2 and len(vectors) == len(batch)
                            and vectors.shape[1] != store.dim):
                        # Same identity, another width: the cached vectors are not this encoder's.
                        store.reset(f"the encoder returns {vectors.shape[1]}-dimensional vectors, the cached "
                                    f"shards hold {store.dim}")
                        store.write([key for key, _ in batch], vectors)
                        bar.update(len(batch))
                        todo = self._missing(store, keys, texts)  # what the deleted shards held, too
                        bar.total = len(batch) + len(todo)
                        start = 0
                        continue
                    expected_dim = store.dim if store.dim is not None else vectors.shape[-1]
                    if vectors.shape != (len(batch), expected_dim):
                        raise InputError(f"encoder returned shape {vectors.shape} for {len(batch)} texts "
                                         f"(expected dimension {expected_dim})", field=identity)
                    store.write([key for key, _ in batch], vectors)
                    bar.update(len(batch))
                    start += len(batch)
        if not keys:
            dim = store.dim if store.dim is not None else encoder.dimension
            return np.zeros((0, dim), dtype=np.float32)
        return store.gather(keys)

    @staticmethod
    def _missing(store: _Store, keys: list[bytes], texts: Sequence[str]) -> list[tuple[bytes, str]]:
        """(key, text) of each distinct text the store lacks, in order of first appearance."""
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in store.index and key not in missing:
                missing[key] = text
        return list(missing.items())

    def contains(self, encoder, texts: Sequence[str], *, kind: str = "query") -> np.ndarray:
        """A boolean per text: is its vector already cached?"""
        store = self._store(encoder.identity, kind)
        return np.array([text_key(t) in store.index for t in texts], dtype=bool)


def _check_identity(encoder_dir: Path, identity: str) -> None:
    """``identity.txt`` names the encoder whose vectors the folder holds. Missing, empty or unreadable: it
    is (re)written. Naming another encoder: the folder's shards are not this encoder's and are deleted."""
    marker = encoder_dir / "identity.txt"
    try:
        recorded = marker.read_text(encoding="utf-8") if marker.is_file() else None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("embedding cache %s is unreadable (%s); rewritten", marker, type(exc).__name__)
        recorded = None
    if recorded == identity:
        return
    if recorded:  # another encoder's folder under this encoder's name: a copy, or damage
        shards = [p for kind in KINDS for p in (encoder_dir / kind).glob("[!.]*.npy")]
        log.warning("embedding cache %s names another encoder; its %d shards are deleted and the vectors computed "
                    "again", marker, len(shards))
        for path in shards:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    elif recorded == "":
        log.warning("embedding cache %s is empty; rewritten", marker)
    atomic.write_text(marker, identity)


def _remove_stale_temporaries(directory: Path) -> None:
    """Delete temporaries of writers killed long ago (a live writer's file is younger than a day)."""
    if not directory.is_dir():
        return
    now = time.time()
    for path in directory.glob(".*.tmp"):
        try:
            if now - path.stat().st_mtime > STALE_TEMP_SECONDS:
                path.unlink()
        except OSError:
            pass
