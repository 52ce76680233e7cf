"""A content-addressed embedding cache: every text is embedded once per encoder, then read from disk.

Corpus and queries are embedded once and reused across adapter-training epochs, runs and
evaluations. An entry's key is (encoder identity, kind, hash of the text), so a changed model,
prompt or normalisation never returns stale vectors, and the same text in two datasets is
embedded once.

On-disk layout (``root`` defaults to ``embtune_core.models.cache_dir() / "embeddings"``)::

    root/<hash of encoder identity>/identity.txt      the identity in clear, to detect collisions
    root/<hash of encoder identity>/query/<uuid>.npy  one shard per embedded batch
    root/<hash of encoder identity>/document/<uuid>.npy

A shard is a plain ``.npy`` file (no pickle) holding a structured array of rows
``(key: 16-byte BLAKE2b of the UTF-8 text, vector: float32[dim])``; reads memory-map it. Each
shard is written to a temporary name and renamed into place, so a reader sees a whole shard or
none: an interrupted run keeps every batch it finished (the next run computes only the rest),
and two runs embedding at once each add their own shards (a text both computed is stored twice;
the first shard read wins, and both hold the same vector). Temporary files left by a killed
writer are ignored and removed after a day.

Example::

    cache = EmbeddingCache()
    corpus = cache.embed(encoder, list(dataset.corpus.values()), kind="document")  # (n, dim) float32
    again = cache.embed(encoder, list(dataset.corpus.values()), kind="document")   # no encoder call
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from embtune_core import atomic
from embtune_core.errors import InputError
from embtune_core.progress import progress

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


class _Store:
    """The shards of one (encoder identity, kind): an in-memory index over memory-mapped files."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.dim: int | None = None
        self.index: dict[bytes, tuple[int, int]] = {}  # key -> (shard number, row)
        self.shards: list[np.ndarray] = []
        self.seen: set[str] = set()

    def refresh(self) -> None:
        """Open shards written since the last look (by this process or another)."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("[!.]*.npy")):
            if path.name in self.seen:
                continue
            self.seen.add(path.name)
            try:
                shard = np.load(path, mmap_mode="r", allow_pickle=False)
                names = shard.dtype.names or ()
                if names != ("key", "vector") or shard.ndim != 1 or shard.dtype["key"].itemsize != KEY_BYTES:
                    raise ValueError(f"unexpected layout {shard.dtype}")
                dim = shard.dtype["vector"].shape[0]
            except (OSError, ValueError) as exc:
                log.warning("ignoring unreadable embedding cache shard %s: %s", path, exc)
                continue
            if self.dim is None:
                self.dim = dim
            elif dim != self.dim:
                log.warning("ignoring embedding cache shard %s: dimension %d, expected %d", path, dim, self.dim)
                continue
            self.add(shard)

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
        path = self.directory / f"{uuid.uuid4().hex}.npy"
        with atomic.atomic_open(path, "wb") as handle:
            np.save(handle, shard, allow_pickle=False)
        self.seen.add(path.name)
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
            from embtune_core.models import cache_dir

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
            marker = encoder_dir / "identity.txt"
            if marker.is_file():
                if marker.read_text(encoding="utf-8") != identity:
                    raise InputError("embedding cache folder belongs to another encoder (hash collision)",
                                     path=encoder_dir)
            else:
                atomic.write_text(marker, identity)
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
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in store.index and key not in missing:
                missing[key] = text
        if missing:
            encode = encoder.encode_queries if kind == "query" else encoder.encode_documents
            todo = list(missing.items())
            label = desc or ("embedding queries" if kind == "query" else "embedding documents")
            with progress(desc=label, total=len(todo), unit="text") as bar:
                for start in range(0, len(todo), self.shard_size):
                    batch = todo[start:start + self.shard_size]
                    vectors = np.asarray(encode([text for _, text in batch]), dtype=np.float32)
                    expected_dim = store.dim if store.dim is not None else vectors.shape[-1]
                    if vectors.shape != (len(batch), expected_dim):
                        raise InputError(f"encoder returned shape {vectors.shape} for {len(batch)} texts "
                                         f"(expected dimension {expected_dim})", field=identity)
                    store.write([key for key, _ in batch], vectors)
                    bar.update(len(batch))
        if not keys:
            dim = store.dim if store.dim is not None else encoder.dimension
            return np.zeros((0, dim), dtype=np.float32)
        return store.gather(keys)

    def contains(self, encoder, texts: Sequence[str], *, kind: str = "query") -> np.ndarray:
        """A boolean per text: is its vector already cached?"""
        store = self._store(encoder.identity, kind)
        return np.array([text_key(t) in store.index for t in texts], dtype=bool)


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
