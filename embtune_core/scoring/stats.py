"""Uncertainty of per-query metric means: bootstrap confidence intervals and paired significance.

Every function takes per-query scores (one value per query; for paired tests the same queries in
the same order) and is seeded, so a report is reproducible. Scores may be a vector (one metric) or
an ``(n_queries, n_metrics)`` matrix: the columns share one set of resamples, computed as a matrix
product of resample counts with the scores, so many metrics cost little more than one.

* :func:`bootstrap_ci`: percentile bootstrap interval of the mean (resampling queries).
* :func:`paired_randomization_test`: two-sided sign-flip randomisation test of the mean paired
  difference (null hypothesis: per query, the two systems' scores are exchangeable).
* :func:`paired_ttest`: scipy's paired t-test (``scipy.stats.ttest_rel``).
* :func:`compare`: all of the above for system B against baseline A.

Example::

    low, high = bootstrap_ci(per_query_ndcg, seed=0)
    result = compare(base_ndcg, tuned_ndcg)     # {"difference": 0.04, "p_randomization": 0.002, ...}
"""

from __future__ import annotations

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_PERMUTATIONS = 10000
_BLOCK_CELLS = 4_000_000  # resamples x queries drawn at once: bounds memory (~32 MB per block)


def _matrix(values) -> tuple[np.ndarray, bool]:
    """Scores as an (n_queries, n_metrics) float64 matrix, and whether the input was a vector."""
    array = np.asarray(values, dtype=np.float64)
    vector = array.ndim <= 1
    array = array.reshape(-1, 1) if vector else array
    if array.ndim != 2 or array.shape[0] == 0:
        raise ValueError(f"no per-query scores (shape {np.shape(values)})")
    return array, vector


def _blocks(n_draws: int, n_queries: int):
    block = max(1, _BLOCK_CELLS // n_queries)
    for start in range(0, n_draws, block):
        yield start, min(block, n_draws - start)


def bootstrap_means(values, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` resamples of the queries drawn with replacement: ``(n_resamples[, m])``."""
    matrix, vector = _matrix(values)
    n = matrix.shape[0]
    rng = np.random.default_rng(seed)
    means = np.empty((n_resamples, matrix.shape[1]), dtype=np.float64)
    for start, count in _blocks(n_resamples, n):
        picks = rng.integers(0, n, size=(count, n)) + (np.arange(count) * n)[:, None]
        counts = np.bincount(picks.ravel(), minlength=count * n).reshape(count, n)
        means[start:start + count] = counts @ matrix / n
    return means[:, 0] if vector else means


def bootstrap_ci(values, *, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0):
    """Percentile bootstrap confidence interval of the mean: ``(low, high)`` floats for a vector,
    ``(low, high)`` arrays (one entry per column) for a matrix."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    means = bootstrap_means(values, n_resamples=n_resamples, seed=seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=0)
    # Float rounding in the matrix product must not put the interval outside the observed range.
    matrix, vector = _matrix(values)
    lowest, highest = matrix.min(axis=0), matrix.max(axis=0)
    low, high = np.clip(low, lowest, highest), np.clip(high, lowest, highest)
    return (float(low[0]), float(high[0])) if vector else (low, high)


def _paired(a, b) -> tuple[np.ndarray, bool]:
    a, vector = _matrix(a)
    b, _ = _matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same queries: {a.shape[0]} vs {b.shape[0]}")
    return b - a, vector


def paired_randomization_test(a, b, *, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0):
    """Two-sided p-value that mean(b - a) differs from 0, by random sign flips of the differences.

    Uses the (count + 1) / (n + 1) estimator, so a p-value is never 0; identical scores give 1.0.
    Returns a float for vectors, an array (one per column) for matrices.
    """
    diff, vector = _paired(a, b)
    n = diff.shape[0]
    observed = np.abs(diff.mean(axis=0))
    tolerance = 1e-12 * np.maximum(1.0, observed)  # float noise must not make the observed value less extreme
    rng = np.random.default_rng(seed)
    extreme = np.zeros(diff.shape[1], dtype=np.int64)
    for _, count in _blocks(n_permutations, n):
        signs = rng.integers(0, 2, size=(count, n)).astype(np.float64) * 2.0 - 1.0
        extreme += np.count_nonzero(np.abs(signs @ diff / n) >= observed - tolerance, axis=0)
    p = (extreme + 1) / (n_permutations + 1)
    p = np.where(np.any(diff != 0, axis=0), p, 1.0)
    return float(p[0]) if vector else p


def paired_ttest(a, b):
    """``(t statistic, two-sided p-value)`` of scipy's paired t-test of b against a.

    With zero variance of the differences the test is undefined; we return ``(0.0, 1.0)`` for
    identical scores and ``(±inf, 0.0)`` for a constant non-zero shift. Floats for vectors,
    arrays (one per column) for matrices.
    """
    from scipy import stats

    diff, vector = _paired(a, b)
    a_m, _ = _matrix(a)
    b_m, _ = _matrix(b)
    t = np.zeros(diff.shape[1])
    p = np.ones(diff.shape[1])
    constant = np.all(np.abs(diff - diff[:1]) <= 1e-15, axis=0) | (diff.shape[0] < 2)
    shift = diff[0]
    t[constant & (np.abs(shift) > 1e-15)] = np.sign(shift[constant & (np.abs(shift) > 1e-15)]) * np.inf
    p[constant & (np.abs(shift) > 1e-15)] = 0.0
    varying = ~constant
    if varying.any():
        result = stats.ttest_rel(b_m[:, varying], a_m[:, varying], axis=0)
        t[varying], p[varying] = result.statistic, result.pvalue
    return (float(t[0]), float(p[0])) if vector else (t, p)


def compare(a, b, *, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
            n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0):
    """System ``b`` against baseline ``a`` on the same queries: mean difference, its bootstrap CI,
    the randomisation-test and t-test p-values. A dict of floats for vectors; for matrices a dict
    of arrays (one entry per column)."""
    diff, vector = _paired(a, b)
    low, high = bootstrap_ci(diff[:, 0] if vector else diff, confidence=confidence, n_resamples=n_resamples,
                             seed=seed)
    t_stat, p_t = paired_ttest(a, b)
    mean = diff.mean(axis=0)
    return {
        "difference": float(mean[0]) if vector else mean,
        "ci_low": low,
        "ci_high": high,
        "p_randomization": paired_randomization_test(a, b, n_permutations=n_permutations, seed=seed),
        "t_statistic": t_stat,
        "p_ttest": p_t,
    }
