"""The embedding cache: hits never re-encode, keys separate encoders and kinds, concurrent and
interrupted writers leave a readable cache."""

from __future__ import annotations

import hashlib
import inspect
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from embtune_core.encoders.embedding_cache import EmbeddingCache
from embtune_core.errors import InputError


class CountingEncoder:
    """A deterministic encoder that records what it is asked to embed (child processes import a copy)."""

    def __init__(self, identity="counting v1", dim=8, delay=0.0):
        self.identity, self.dimension, self.delay = identity, dim, delay
        self.calls = []

    def _vectors(self, texts):
        self.calls.append(list(texts))
        time.sleep(self.delay)
        seeds = [int.from_bytes(hashlib.md5(t.encode()).digest()[:4], "little") for t in texts]
        return np.array([np.random.default_rng(s).standard_normal(self.dimension) for s in seeds],
                        dtype=np.float32).reshape(len(texts), self.dimension)

    def encode_queries(self, texts):
        return self._vectors(texts)

    def encode_documents(self, texts):
        return self._vectors(texts) * 2  # documents differ from queries

    @property
    def encoded(self):
        return [t for call in self.calls for t in call]


def test_hits_do_not_re_encode(tmp_path):
    cache = EmbeddingCache(tmp_path, shard_size=3)
    encoder = CountingEncoder()
    first = cache.embed(encoder, ["a", "b", "c", "a", "d"])
    assert encoder.encoded == ["a", "b", "c", "d"]  # a duplicate is embedded once
    assert first.dtype == np.float32 and first.shape == (5, 8)
    np.testing.assert_array_equal(first[0], first[3])
    second = cache.embed(encoder, ["d", "e", "a"])
    assert encoder.encoded[4:] == ["e"]  # only the missing text
    np.testing.assert_array_equal(second[0], first[4])
    np.testing.assert_array_equal(second[2], first[0])
    # A fresh cache object (a new run) reads everything from disk.
    fresh = CountingEncoder()
    again = EmbeddingCache(tmp_path).embed(fresh, ["a", "b", "c", "d", "e"])
    assert fresh.calls == []
    np.testing.assert_array_equal(again[:4], first[[0, 1, 2, 4]])


def test_keys_separate_kinds_and_encoders(tmp_path):
    cache = EmbeddingCache(tmp_path)
    encoder = CountingEncoder()
    query = cache.embed(encoder, ["x"], kind="query")
    document = cache.embed(encoder, ["x"], kind="document")
    np.testing.assert_allclose(document, query * 2)
    other = CountingEncoder(identity="counting v2")
    cache.embed(other, ["x"], kind="query")
    assert other.encoded == ["x"]
    with pytest.raises(InputError):
        cache.embed(encoder, ["x"], kind="passage")
    assert cache.embed(encoder, [], kind="query").shape == (0, 8)


def test_shards_are_plain_npy_files_read_by_memory_map(tmp_path):
    cache = EmbeddingCache(tmp_path, shard_size=2)
    cache.embed(CountingEncoder(), ["a", "b", "c"], kind="document")
    shards = sorted(tmp_path.rglob("document/*.npy"))
    assert len(shards) == 2
    for shard in shards:
        array = np.load(shard, allow_pickle=False, mmap_mode="r")
        assert isinstance(array, np.memmap) and array.dtype.names == ("key", "vector")
    assert (shards[0].parent.parent / "identity.txt").read_text() == "counting v1"


def test_an_interrupted_write_leaves_a_readable_cache(tmp_path):
    cache = EmbeddingCache(tmp_path)
    encoder = CountingEncoder()
    expected = cache.embed(encoder, ["a", "b"])
    folder = next(tmp_path.rglob("query"))
    # What a writer killed mid-write leaves: a torn temporary file, and a truncated shard copied in by hand.
    (folder / ".deadbeef.npy.tmp").write_bytes(b"\x93NUMPY\x01\x00garbage")
    good = next(folder.glob("*.npy")).read_bytes()
    (folder / "torn.npy").write_bytes(good[: len(good) // 2])
    fresh = CountingEncoder()
    again = EmbeddingCache(tmp_path).embed(fresh, ["a", "b", "c"])
    np.testing.assert_array_equal(again[:2], expected)
    assert fresh.encoded == ["c"]


def _child(tmp_path: Path, root: Path, texts: list[str], delay: float, shard_size: int) -> subprocess.Popen:
    source = "import hashlib, time\nimport numpy as np\n\n" + inspect.getsource(CountingEncoder)
    (tmp_path / "counting_encoder.py").write_text(source)
    code = textwrap.dedent(f'''
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        from counting_encoder import CountingEncoder
        from embtune_core.encoders.embedding_cache import EmbeddingCache
        EmbeddingCache({str(root)!r}, shard_size={shard_size}).embed(
            CountingEncoder(delay={delay}), {texts!r}, kind="document")
    ''')
    env = {**os.environ, "EMBTUNE_NO_PROGRESS": "1"}
    return subprocess.Popen([sys.executable, "-c", code], env=env)


def test_two_processes_writing_at_once(tmp_path):
    root = tmp_path / "cache"
    first = [f"text {i}" for i in range(40)]
    second = [f"text {i}" for i in range(20, 60)]  # half overlaps the first writer's texts
    children = [_child(tmp_path, root, first, 0.05, 4), _child(tmp_path, root, second, 0.05, 4)]
    assert [c.wait(timeout=120) for c in children] == [0, 0]
    fresh = CountingEncoder()
    texts = [f"text {i}" for i in range(60)]
    vectors = EmbeddingCache(root).embed(fresh, texts, kind="document")
    assert fresh.calls == []
    np.testing.assert_allclose(vectors, CountingEncoder().encode_documents(texts))


def test_a_killed_process_keeps_its_finished_shards(tmp_path):
    root = tmp_path / "cache"
    texts = [f"text {i}" for i in range(40)]
    child = _child(tmp_path, root, texts, 0.3, 2)
    deadline = time.time() + 60
    while time.time() < deadline and len(list(root.rglob("document/[!.]*.npy"))) < 2:
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    finished = len(list(root.rglob("document/[!.]*.npy")))
    assert 2 <= finished < 20
    fresh = CountingEncoder()
    vectors = EmbeddingCache(root).embed(fresh, texts, kind="document")
    assert len(fresh.encoded) == 40 - 2 * finished  # only what the killed run had not finished
    np.testing.assert_allclose(vectors, CountingEncoder().encode_documents(texts))
