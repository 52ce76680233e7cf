"""Uncertainty of per-query metric means: bootstrap confidence intervals and paired significance.

Every function takes per-query scores (one float per query, the same queries in the same order for
paired tests) and is seeded, so a report is reproducible.

* :func:`bootstrap_ci`: percentile bootstrap interval of the mean (resampling queries).
* :func:`paired_randomization_test`: two-sided sign-flip randomisation test of the mean paired
  difference (exact null distribution under "the two systems are exchangeable per query").
* :func:`paired_ttest`: scipy's paired t-test (``scipy.stats.ttest_rel``).
* :func:`compare`: all of the above for system B against baseline A.

Example::

    low, high = bootstrap_ci(per_query_ndcg, seed=0)
    result = compare(base_ndcg, tuned_ndcg)     # {"difference": 0.04, "p_randomization": 0.002, ...}
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_RESAMPLES = 2000
DEFAULT_PERMUTATIONS = 10000
_BLOCK = 500  # resamples drawn at once: bounds memory at _BLOCK x n_queries


def _values(values) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64).ravel()
    if array.size == 0:
        raise ValueError("no per-query scores")
    return array


def bootstrap_means(values, *, n_resamples: int = DEFAULT_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of ``n_resamples`` resamples of ``values`` drawn with replacement."""
    array = _values(values)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples, dtype=np.float64)
    for start in range(0, n_resamples, _BLOCK):
        count = min(_BLOCK, n_resamples - start)
        picks = rng.integers(0, array.size, size=(count, array.size))
        means[start:start + count] = array[picks].mean(axis=1)
    return means


def bootstrap_ci(values, *, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values``."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    means = bootstrap_means(values, n_resamples=n_resamples, seed=seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail])
    return float(low), float(high)


def _paired(a, b) -> np.ndarray:
    a, b = _values(a), _values(b)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same queries: {a.size} vs {b.size}")
    return b - a


def paired_randomization_test(a, b, *, n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> float:
    """Two-sided p-value that mean(b - a) differs from 0, by random sign flips of the differences.

    Uses the (count + 1) / (n + 1) estimator, so the p-value is never 0; identical systems give 1.0.
    """
    diff = _paired(a, b)
    observed = abs(diff.mean())
    if not np.any(diff):
        return 1.0
    rng = np.random.default_rng(seed)
    extreme = 0
    tolerance = 1e-12 * max(1.0, observed)  # float noise must not make the observed value "less extreme"
    for start in range(0, n_permutations, _BLOCK):
        count = min(_BLOCK, n_permutations - start)
        signs = rng.integers(0, 2, size=(count, diff.size)) * 2 - 1
        extreme += int(np.count_nonzero(np.abs((signs * diff).mean(axis=1)) >= observed - tolerance))
    return (extreme + 1) / (n_permutations + 1)


def paired_bootstrap_ci(a, b, *, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
                        seed: int = 0) -> tuple[float, float]:
    """Bootstrap confidence interval of mean(b - a), resampling queries jointly."""
    return bootstrap_ci(_paired(a, b), confidence=confidence, n_resamples=n_resamples, seed=seed)


def paired_ttest(a, b) -> tuple[float, float]:
    """``(t statistic, two-sided p-value)`` of scipy's paired t-test of b against a.

    When every difference is equal (zero variance) the test is undefined; we return
    ``(0.0, 1.0)`` for identical scores and ``(inf, 0.0)`` for a constant non-zero shift.
    """
    from scipy import stats

    diff = _paired(a, b)
    if diff.size < 2 or np.allclose(diff, diff[0], rtol=0.0, atol=1e-15):
        if abs(diff[0]) <= 1e-15:
            return 0.0, 1.0
        return math.copysign(math.inf, diff[0]), 0.0
    result = stats.ttest_rel(_values(b), _values(a))
    return float(result.statistic), float(result.pvalue)


def compare(a, b, *, confidence: float = 0.95, n_resamples: int = DEFAULT_RESAMPLES,
            n_permutations: int = DEFAULT_PERMUTATIONS, seed: int = 0) -> dict[str, float]:
    """System ``b`` against baseline ``a`` on the same queries: difference, its CI and p-values."""
    diff = _paired(a, b)
    low, high = bootstrap_ci(diff, confidence=confidence, n_resamples=n_resamples, seed=seed)
    t_stat, p_t = paired_ttest(a, b)
    return {
        "difference": float(diff.mean()),
        "ci_low": low,
        "ci_high": high,
        "p_randomization": paired_randomization_test(a, b, n_permutations=n_permutations, seed=seed),
        "t_statistic": t_stat,
        "p_ttest": p_t,
    }
