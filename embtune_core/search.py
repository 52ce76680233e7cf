"""Exact top-k search by inner product over a whole corpus, in blocks, with FAISS.

Blocks over both queries and corpus keep memory bounded: a million 384-dim documents are 1.5 GB
of float32, and a (10k x 1M) score matrix would be 40 GB, so each block's top-k is merged into a
running top-k instead. FAISS runs on the GPU when a GPU build and a GPU are present
(``use_gpu=None`` decides automatically), else on the CPU.

Ties are broken by corpus position (the earlier document ranks first), so rankings are
deterministic whatever the block size.

Example::

    scores, ids = exact_search(query_emb, corpus_emb, k=10)
"""

from __future__ import annotations

import functools
import logging

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_QUERY_BLOCK = 4096
DEFAULT_CORPUS_BLOCK = 262_144


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    """True when the installed FAISS is a GPU build and sees at least one GPU."""
    try:
        import faiss
    except ImportError:
        return False
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


@functools.lru_cache(maxsize=1)
def gpu_resources():
    """One FAISS GPU resources object for the whole process (they hold scratch memory)."""
    import faiss

    return faiss.StandardGpuResources()


def _flat_index(block: np.ndarray, use_gpu: bool):
    import faiss

    index = faiss.IndexFlatIP(block.shape[1])
    if use_gpu:
        index = faiss.index_cpu_to_gpu(gpu_resources(), 0, index)
    index.add(block)
    return index


def _top_k_sorted(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: the k best by score, ties by smaller id."""
    order = np.lexsort((ids, -scores), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def exact_search(query_emb: np.ndarray, corpus_emb: np.ndarray, k: int, *,
                 query_block: int = DEFAULT_QUERY_BLOCK, corpus_block: int = DEFAULT_CORPUS_BLOCK,
                 use_gpu: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` corpus rows by inner product for each query row.

    Returns ``(scores, indices)`` of shape ``(n_queries, min(k, n_corpus))``, float32 and int64,
    best first. Normalise both sides first for cosine similarity.
    """
    queries = np.ascontiguousarray(query_emb, dtype=np.float32)
    corpus = np.asarray(corpus_emb, dtype=np.float32)
    if queries.ndim != 2 or corpus.ndim != 2 or queries.shape[1] != corpus.shape[1]:
        raise ValueError(f"shape mismatch: queries {queries.shape}, corpus {corpus.shape}")
    k = min(k, corpus.shape[0])
    if use_gpu is None:
        use_gpu = gpu_available()
    n = queries.shape[0]
    best_scores = np.full((n, k), -np.inf, dtype=np.float32)
    best_ids = np.full((n, k), np.iinfo(np.int64).max, dtype=np.int64)
    for start in range(0, corpus.shape[0], corpus_block):
        block = np.ascontiguousarray(corpus[start:start + corpus_block])
        # Ask for a few extra so that ties at the cut-off can still be ordered by position.
        fetch = min(block.shape[0], k + 8)
        index = _flat_index(block, use_gpu)
        for q0 in range(0, n, query_block):
            scores, ids = index.search(queries[q0:q0 + query_block], fetch)
            ids = np.where(ids >= 0, ids + start, np.iinfo(np.int64).max)
            merged_s = np.concatenate([best_scores[q0:q0 + query_block], scores], axis=1)
            merged_i = np.concatenate([best_ids[q0:q0 + query_block], ids], axis=1)
            best_scores[q0:q0 + query_block], best_ids[q0:q0 + query_block] = _top_k_sorted(merged_s, merged_i, k)
    return best_scores, best_ids


def normalize(emb: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    emb = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    return emb / np.maximum(norms, 1e-12)
