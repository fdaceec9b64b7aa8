"""Drift statistics between a reference distribution and a current window.

Binned scores (PSI, Jensen-Shannon) take counts or shares over the same bins, which is what
both the in-process scorer and the PromQL recording rules have. Sample scores (KS,
Wasserstein) take values. scipy does the statistics it has; PSI and the smoothing are ours.
"""

from __future__ import annotations

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

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
    return float(jensenshannon(p, q, base=2))


def wasserstein_normalised(reference: np.ndarray, current: np.ndarray, reference_std: float | None) -> float:
    """Earth mover's distance in units of the reference's standard deviation, so one
    threshold fits features of any scale. A constant reference (std 0) is measured in the
    feature's own units."""
    distance = stats.wasserstein_distance(reference, current)
    spread = reference_std if reference_std and reference_std > 0 else 1.0
    return float(distance / spread)


def ks_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    return float(stats.ks_2samp(reference, current).pvalue)


def chi2_pvalue(reference_counts: np.ndarray, current_counts: np.ndarray) -> float:
    """Chi-square test of homogeneity between the two count vectors. Bins empty on both
    sides carry no information and are dropped (the test is undefined with them)."""
    table = np.vstack([reference_counts, current_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)
