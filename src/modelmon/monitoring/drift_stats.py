"""Drift statistics between a reference distribution and a current window.

Binned scores (PSI, Jensen-Shannon) take counts or shares over the same bins, which is what
both the in-process scorer and the PromQL recording rules have. Sample scores (KS,
Wasserstein) take values.

The scores computed on every refresh (PSI, Jensen-Shannon, Wasserstein) are a few lines of
numpy each, checked against scipy in the tests; the p-value tests (KS, chi-square), used
only for windows of at most 1,000 rows, call scipy.stats, imported on first use: importing
it costs a serving process about 75 MiB and a second of start-up, which a server scoring
only large windows never needs.
"""

from __future__ import annotations

import numpy as np

#: Share added to every bin of both distributions before PSI, then renormalised. Symmetric,
#: so an empty bin on either side gives a large but finite term instead of infinity.
PSI_SMOOTHING = 1e-4


def shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts, dtype=np.float64)


def smooth(p: np.ndarray, epsilon: float = PSI_SMOOTHING) -> np.ndarray:
    return (p + epsilon) / (1.0 + epsilon * len(p))


def psi(reference: np.ndarray, current: np.ndarray, epsilon: float = PSI_SMOOTHING) -> float:
    """Population stability index of two share (or count) vectors over the same bins."""
    p, q = smooth(shares(np.asarray(reference, float)), epsilon), smooth(shares(np.asarray(current, float)), epsilon)
    return float(np.sum((q - p) * np.log(q / p)))


def js_distance(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance in base 2: 0 for equal distributions, 1 for disjoint ones."""
    p, q = shares(np.asarray(reference, float)), shares(np.asarray(current, float))
    m = (p + q) / 2
    divergence = 0.0
    for x in (p, q):
        present = x > 0  # 0 * log(0 / m) is 0
        divergence += float(np.sum(x[present] * np.log2(x[present] / m[present]))) / 2
    return float(np.sqrt(max(divergence, 0.0)))


def wasserstein_normalised(reference: np.ndarray, current: np.ndarray, reference_std: float | None) -> float:
    """Earth mover's distance in units of the reference's standard deviation, so one
    threshold fits features of any scale. A constant reference (std 0) is measured in the
    feature's own units."""
    distance = wasserstein_distance(np.asarray(reference, float), np.asarray(current, float))
    spread = reference_std if reference_std and reference_std > 0 else 1.0
    return float(distance / spread)


def wasserstein_distance(u: np.ndarray, v: np.ndarray) -> float:
    """1-D earth mover's distance between two samples: the area between their empirical
    distribution functions."""
    u, v = np.sort(u), np.sort(v)
    values = np.sort(np.concatenate([u, v]))
    steps = np.diff(values)
    u_cdf = np.searchsorted(u, values[:-1], side="right") / len(u)
    v_cdf = np.searchsorted(v, values[:-1], side="right") / len(v)
    return float(np.sum(np.abs(u_cdf - v_cdf) * steps))


def ks_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    from scipy import stats

    return float(stats.ks_2samp(reference, current).pvalue)


def chi2_pvalue(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Chi-square test of homogeneity between the two count vectors. Bins empty on both
    sides carry no information and are dropped (the test is undefined with them)."""
    table = np.vstack([reference_counts, current_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    from scipy import stats

    return float(stats.chi2_contingency(table, correction=False).pvalue)
