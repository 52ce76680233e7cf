"""Exact top-k search by inner product over a whole corpus, in blocks, with FAISS or torch.

Contract of :func:`exact_search`:

* **Inputs**: ``query_emb`` (n_queries, d) and ``corpus_emb`` (n_corpus, d), any real dtype
  (converted to float32), finite values. Normalise both sides first for cosine similarity
  (:func:`normalize`).
* **Output**: ``(scores, indices)``, each of shape ``(n_queries, min(k, n_corpus))``, float32 and
  int64 numpy arrays, best first. ``indices`` are corpus row positions.
* **Scores and tie rule**: each returned score is the inner product computed in float64 and rounded
  once to float32, so it depends on the two vectors only (not on a BLAS's summation order or a
  document's place in a block): duplicated documents tie exactly. A higher score ranks first; equal
  scores rank the smaller corpus position first. Both backends return the same scores and indices to
  the last rank, whatever the block sizes. (Candidates are selected by each backend's float32 scores
  with 8 to spare beyond k; only a group of more than 8 documents whose float32 scores differ by
  rounding alone, straddling the k-th place, could tell the backends apart.)
* **Backends**: ``backend="auto"`` (the default, overridden by the environment variable
  ``EMBTUNE_SEARCH_BACKEND``) uses FAISS when a FAISS build is importable (``faiss-cpu`` from
  ``embtune[cpu]`` or ``faiss-gpu-cu12`` from ``embtune[gpu]``; its GPU index when the build is a GPU
  build and sees a GPU), else torch (on CUDA when ``torch.cuda.is_available()``, else on the CPU).
  ``"faiss"`` or ``"torch"`` forces one. ``use_gpu`` (None: decide automatically) picks the device
  within the backend. The backend and device in use are logged once per process, in one line.
* **Memory**: blocks over both queries and corpus keep memory bounded: a million 384-dim documents
  are 1.5 GB of float32, and a (10k x 1M) score matrix would be 40 GB, so each block's top-k is
  merged into a running top-k. One block of scores is ``query_block x corpus_block`` float32 values
  (4 GiB at the defaults) on the backend's device; torch on the CPU takes fewer queries per block so
  that one block stays under 256 MiB.
* **Errors**: ``ValueError`` for arrays that are not 2-D or whose widths differ;
  :class:`~embtune_core.errors.ConfigError` (one line, exit 3 in the CLI) for an unknown backend
  name, ``"faiss"`` forced without a FAISS build, or ``use_gpu=True`` where the backend sees no GPU.

How the backends agree: FAISS or a blocked torch matmul picks the best ``k + 8`` candidates per
block (torch: ``torch.topk``; where more entries tie with the last one kept than fit, the tied
entries at the smallest positions are taken, FAISS rows with such a tie are ranked exactly in
numpy), the running candidates and a block's are merged by (score desc, position asc), and
:func:`rescore` computes the final scores and order for both. TF32 is switched off during torch
search so that CUDA matmuls are full float32, like FAISS's.

Example::

    scores, ids = exact_search(query_emb, corpus_emb, k=10)
    scores, ids = exact_search(query_emb, corpus_emb, k=10, backend="torch")  # no FAISS needed
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass

import numpy as np

from embtune_core.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_QUERY_BLOCK = 4096
DEFAULT_CORPUS_BLOCK = 262_144
BACKENDS = ("auto", "faiss", "torch")
BACKEND_ENV = "EMBTUNE_SEARCH_BACKEND"
# Both backends select this many candidates beyond k (by their own float32 scores) before the exact
# rescoring: documents whose scores differ only by rounding at the k-th place are all kept, and ties
# at the k-th score can still be ordered by position.
_TIE_MARGIN = 8
_NO_ID = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Backend:
    """The search implementation in use: ``name`` is ``"faiss"`` or ``"torch"``, ``device`` ``"cpu"`` or ``"cuda"``."""

    name: str
    device: str

    def __str__(self) -> str:
        return f"{self.name} on {self.device}"


@functools.lru_cache(maxsize=1)
def faiss_module():
    """The ``faiss`` module, or None when no FAISS build is installed (or it cannot load)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when the installed FAISS is a GPU build and sees at least one GPU."""
    faiss = faiss_module()
    return faiss is not None and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@functools.lru_cache(maxsize=1)
def gpu_resources():
    """One FAISS GPU resources object for the whole process (they hold scratch memory)."""
    return faiss_module().StandardGpuResources()


def _torch_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def choose_backend(backend: str | None = None, use_gpu: bool | None = None) -> Backend:
    """The backend :func:`exact_search` uses for these arguments (see the module docstring).

    ``backend`` None reads ``EMBTUNE_SEARCH_BACKEND`` (unset or empty: ``"auto"``).
    Raises ConfigError for an unknown name, a forced FAISS without FAISS, or a GPU nobody sees.
    """
    source = "backend"
    if backend is None:
        backend = os.environ.get(BACKEND_ENV, "").strip().lower() or "auto"
        source = BACKEND_ENV
    if backend not in BACKENDS:
        raise ConfigError(f"search backend must be one of {', '.join(BACKENDS)}, got '{backend}'", field=source)
    if backend == "auto":
        backend = "faiss" if faiss_module() is not None else "torch"
    if backend == "faiss":
        if faiss_module() is None:
            raise ConfigError("search backend 'faiss' needs a FAISS build: install embtune[cpu] (faiss-cpu) "
                              "or embtune[gpu] (faiss-gpu-cu12), or use 'auto'/'torch'", field=source)
        gpu = gpu_available() if use_gpu is None else use_gpu
        if gpu and not gpu_available():
            raise ConfigError("use_gpu=True but the installed FAISS is not a GPU build or sees no GPU",
                              field="use_gpu")
    else:
        gpu = _torch_cuda() if use_gpu is None else use_gpu
        if gpu and not _torch_cuda():
            raise ConfigError("use_gpu=True but torch sees no CUDA device", field="use_gpu")
    return Backend(backend, "cuda" if gpu else "cpu")


_announced: set[Backend] = set()


def _announce(chosen: Backend) -> None:
    # One line per process (per distinct backend), not per call: evaluation searches once per dimension.
    if chosen not in _announced:
        _announced.add(chosen)
        log.info("exact search: %s", chosen)


def exact_search(query_emb: np.ndarray, corpus_emb: np.ndarray, k: int, *,
                 query_block: int = DEFAULT_QUERY_BLOCK, corpus_block: int = DEFAULT_CORPUS_BLOCK,
                 use_gpu: bool | None = None, backend: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` corpus rows by inner product for each query row (contract: the module docstring).

    Returns ``(scores, indices)`` of shape ``(n_queries, min(k, n_corpus))``, float32 and int64,
    best first, ties by smaller corpus position.
    """
    queries = np.ascontiguousarray(query_emb, dtype=np.float32)
    corpus = np.asarray(corpus_emb, dtype=np.float32)
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"shape mismatch: queries {queries.shape}, corpus {corpus.shape}")
    k = min(int(k), corpus.shape[0])
    chosen = choose_backend(backend, use_gpu)
    _announce(chosen)
    if queries.shape[0] == 0 or k == 0:
        return np.zeros((queries.shape[0], k), np.float32), np.zeros((queries.shape[0], k), np.int64)
    if chosen.name == "faiss":
        return _faiss_search(queries, corpus, k, query_block, corpus_block, chosen.device == "cuda")
    return _torch_search(queries, corpus, k, query_block, corpus_block, chosen.device)


# --- FAISS ----------------------------------------------------------------------------------------
def _flat_index(block: np.ndarray, use_gpu: bool):
    faiss = faiss_module()
    index = faiss.IndexFlatIP(block.shape[1])
    if use_gpu:
        index = faiss.index_cpu_to_gpu(gpu_resources(), 0, index)
    index.add(block)
    return index


def _top_k_sorted(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the k best by score, ties by smaller id."""
    order = np.lexsort((ids, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def _faiss_search(queries, corpus, k, query_block, corpus_block, use_gpu):
    n = queries.shape[0]
    keep = min(corpus.shape[0], k + _TIE_MARGIN)  # candidates carried to the exact rescoring
    best_scores = np.full((n, keep), -np.inf, dtype=np.float32)
    best_ids = np.full((n, keep), _NO_ID, dtype=np.int64)
    for start in range(0, corpus.shape[0], corpus_block):
        block = np.ascontiguousarray(corpus[start:start + corpus_block])
        fetch = min(block.shape[0], keep)
        index = _flat_index(block, use_gpu)
        for q0 in range(0, n, query_block):
            rows = slice(q0, q0 + query_block)
            scores, ids = index.search(queries[rows], fetch)
            if fetch < block.shape[0]:
                # FAISS keeps an arbitrary member of a tie group at its own cut-off: where the k-th
                # score still ties with the last one fetched, rank that row exactly here instead.
                for r in np.flatnonzero(scores[:, min(k, fetch) - 1] == scores[:, fetch - 1]):
                    row = block @ queries[q0 + r]
                    order = np.argsort(-row, kind="stable")[:fetch]
                    scores[r], ids[r] = row[order], order
            ids = np.where(ids >= 0, ids + start, _NO_ID)
            merged_s = np.concatenate([best_scores[rows], scores], axis=1)
            merged_i = np.concatenate([best_ids[rows], ids], axis=1)
            best_scores[rows], best_ids[rows] = _top_k_sorted(merged_s, merged_i, keep)
    return rescore(queries, corpus, best_ids, k)


def rescore(queries: np.ndarray, corpus: np.ndarray, candidates: np.ndarray, k: int,
            chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """The final ranking both backends share: candidates rescored exactly, then ordered by the tie rule.

    ``candidates`` (n_queries, c >= k) int64 corpus positions. Each score is recomputed in float64
    (products of float32 values are exact there; the sum is off by ~1e-13) and rounded once to
    float32, so a score depends on the two vectors only, not on a BLAS's summation order or a
    document's place in a block: duplicated documents tie exactly and both backends agree to the bit.
    Returns float32 scores and int64 positions of shape (n_queries, k), best first.
    """
    out_s = np.empty((queries.shape[0], k), np.float32)
    out_i = np.empty((queries.shape[0], k), np.int64)
    chunk = max(1, min(chunk, 2**24 // max(1, candidates.shape[1] * queries.shape[1])))  # <= 128 MiB float64
    for q0 in range(0, queries.shape[0], chunk):
        ids = candidates[q0:q0 + chunk]
        vecs = corpus[ids].astype(np.float64)  # (chunk, c, d)
        scores = np.einsum("nd,ncd->nc", queries[q0:q0 + chunk].astype(np.float64), vecs).astype(np.float32)
        out_s[q0:q0 + chunk], out_i[q0:q0 + chunk] = _top_k_sorted(scores, ids, k)
    return out_s, out_i


# --- torch ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _full_fp32_matmul(torch):
    """TF32 off for the duration (a trainer may have switched it on): scores must be float32 exact."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):  # torch >= 2.9 spells it this way; allow_tf32 is deprecated
        saved = matmul.fp32_precision
        matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = saved
    else:
        saved = matmul.allow_tf32
        matmul.allow_tf32 = False
        try:
            yield
        finally:
            matmul.allow_tf32 = saved


def _block_top_k(torch, scores, k: int):
    """Per row of a (rows, width) score block: the k best as (scores, positions), by the tie rule."""
    vals, idx = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    threshold = vals[:, -1:]
    # topk picks arbitrary members of a tie group at the k-th score; redo the rows where it had a choice.
    overfull = ((scores >= threshold).sum(dim=1) > k).nonzero().squeeze(1)
    if overfull.numel():
        sub, thr = scores[overfull], threshold[overfull]
        above = sub > thr
        room = k - above.sum(dim=1, keepdim=True)
        tied = sub == thr
        keep = above | (tied & (torch.cumsum(tied, dim=1, dtype=torch.int32) <= room))
        # nonzero walks row-major, so each row yields exactly k positions in ascending order.
        idx[overfull] = keep.nonzero()[:, 1].reshape(-1, k)
        vals[overfull] = torch.gather(sub, 1, idx[overfull])
    # Order the k kept by (score desc, position asc): sort by position, then a stable sort by score.
    by_pos = torch.argsort(idx, dim=1)
    idx, vals = torch.gather(idx, 1, by_pos), torch.gather(vals, 1, by_pos)
    by_score = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return torch.gather(vals, 1, by_score), torch.gather(idx, 1, by_score)


def _torch_search(queries, corpus, k, query_block, corpus_block, device: str):
    import torch

    dev = torch.device(device)
    n = queries.shape[0]
    # A CPU's RAM is shared with everything else: cap a score block (plus its masks) at 256 MiB there.
    cap = 2**30 if device == "cuda" else 2**26
    query_block = max(1, min(query_block, cap // max(1, min(corpus_block, corpus.shape[0]))))
    best_s: list = [None] * ((n + query_block - 1) // query_block)
    best_i: list = [None] * len(best_s)
    with torch.no_grad(), _full_fp32_matmul(torch):
        q_host = torch.from_numpy(queries)
        q_dev = q_host.to(dev) if n * queries.shape[1] * 4 <= 2**31 else None  # small enough to keep there
        keep = min(corpus.shape[0], k + _TIE_MARGIN)
        for start in range(0, corpus.shape[0], corpus_block):
            block = torch.from_numpy(np.ascontiguousarray(corpus[start:start + corpus_block])).to(dev)
            kk = min(keep, block.shape[0])
            for b, q0 in enumerate(range(0, n, query_block)):
                q = q_dev[q0:q0 + query_block] if q_dev is not None else q_host[q0:q0 + query_block].to(dev)
                vals, idx = _block_top_k(torch, q @ block.T, kk)
                idx = idx + start
                if best_s[b] is not None:
                    # Earlier blocks hold smaller positions and come first, so a stable sort by score
                    # keeps the tie rule across blocks.
                    vals, idx = torch.cat([best_s[b], vals], 1), torch.cat([best_i[b], idx], 1)
                    order = torch.sort(vals, dim=1, descending=True, stable=True).indices[:, :keep]
                    vals, idx = torch.gather(vals, 1, order), torch.gather(idx, 1, order)
                best_s[b], best_i[b] = vals, idx
            del block
        ids = torch.cat(best_i).cpu().numpy().astype(np.int64, copy=False)
    return rescore(queries, corpus, ids, k)


def normalize(emb: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)
