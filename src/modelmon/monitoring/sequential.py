"""Always-valid confidence intervals for a share, and for the difference of two shares.

A rollout watches its gates continuously and must be allowed to look after every request
without the false-alarm rate growing with the number of looks. A fixed-sample test checked
over and over would: its error rate holds for one look only. So each gate's statistic is a
*confidence sequence*: an interval that covers the true value at every time at once with
probability at least 1 - alpha (Howard, Ramdas, McAuliffe and Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021).

The interval of a mean of values in [0, 1] (an error indicator, a row's expected
correctness from CBPE) is the set of means p that a test martingale has not rejected:

    M_n(p) = integral over q of (q / p)^S ((1 - q) / (1 - p))^(n - S) Beta(q; 1, 1) dq
           = B(1 + S, 1 + n - S) / (p^S (1 - p)^(n - S))

with n values summing to S. For values in [0, 1] with mean p each factor has expectation
at most 1 (by convexity, E exp(lambda X) <= 1 - p + p e^lambda), so M_n(p) is a nonnegative
supermartingale and by Ville's inequality P(M_n(p) >= 1 / alpha for some n) <= alpha. The
interval {p : M_n(p) < 1 / alpha} adapts to the variance: near 0, where error ratios live,
it is far narrower than a Hoeffding bound.
"""

from __future__ import annotations

import functools
import math

import numpy as np

#: Bisection steps: the interval's ends to 2^-60 (far below any margin).
_STEPS = 60


def log_mixture(successes: float, n: float, p: float) -> float:
    """log M_n(p) of the module's doc: ``n`` values in [0, 1] summing to ``successes``."""
    s, f = successes, n - successes
    log_beta = math.lgamma(1 + s) + math.lgamma(1 + f) - math.lgamma(2 + n)
    log_likelihood = (s * math.log(p) if s else 0.0) + (f * math.log1p(-p) if f else 0.0)
    return log_beta - log_likelihood


def share_interval(successes: float, n: float, alpha: float) -> tuple[float, float]:
    """The confidence sequence of a mean of values in [0, 1] at ``alpha``: (low, high),
    (0, 1) before any value. ``successes``: their sum."""
    if n <= 0:
        return 0.0, 1.0
    successes = min(max(successes, 0.0), n)
    mean = successes / n
    threshold = math.log(1 / alpha)
    # log M_n(p) is convex in p with its minimum (<= 0) at the mean: one crossing each side.
    low = 0.0 if successes == 0 else _crossing(successes, n, threshold, outside=0.0, inside=mean)
    high = 1.0 if successes == n else _crossing(successes, n, threshold, outside=1.0, inside=mean)
    return low, high


def _crossing(successes: float, n: float, threshold: float, outside: float, inside: float) -> float:
    """The p between ``inside`` (accepted) and ``outside`` where log M_n(p) = threshold."""
    for _ in range(_STEPS):
        middle = (outside + inside) / 2
        if middle in (0.0, 1.0) or log_mixture(successes, n, middle) >= threshold:
            outside = middle
        else:
            inside = middle
    return inside


def difference_interval(
    candidate: tuple[float, float], primary: tuple[float, float], alpha: float
) -> tuple[float, float]:
    """An always-valid interval of (candidate's mean - primary's mean) at ``alpha``: each
    mean's confidence sequence at alpha / 2, so both hold at all times with probability at
    least 1 - alpha, and then the difference lies between their far ends. Each argument is
    (sum, count) of values in [0, 1]."""
    c_low, c_high = share_interval(*candidate, alpha / 2)
    p_low, p_high = share_interval(*primary, alpha / 2)
    return c_low - p_high, c_high - p_low


def distance_interval(
    counts: list[float], reference: list[float], alpha: float, reference_rows: float | None = None
) -> tuple[float, float]:
    """An always-valid interval of the total variation distance between the distribution
    behind ``counts`` (rows per bin, so far) and the ``reference``'s (shares per bin): half
    the L1 distance, the largest difference in the share of any set of bins, in [0, 1].

    Each bin's share is a mean of 0/1 values (a row in the bin or not), so it has its
    confidence sequence at alpha / bins. When the reference shares were themselves counted
    on ``reference_rows`` rows (a model's validation predictions), each has its interval
    too, and alpha is split evenly between the two sides; else they are taken as exact.
    All the intervals hold at all times at once with probability at least 1 - alpha (a
    union bound), and then the distance lies between the smallest and the largest that
    distributions within them can have:

    - the largest is max over sets A of bins of (largest p(A)) - (smallest r(A)), where the
      largest p(A) within the bins' intervals is min(sum of A's tops, 1 - sum of the other
      bins' bottoms), and the smallest r(A) likewise: exact, by trying every set (up to
      ``_EXACT_BINS`` bins; beyond, a closed-form bound above it);
    - at least half the sum of the gaps between each bin's two intervals, and at least
      either side's total excess over the other's tops (TV = sum of max(0, p - r) = sum of
      max(0, r - p)): a bound below the smallest.

    The distance has a finite-sample bound of this kind where the PSI (a log ratio of
    shares, unbounded as a live share nears 0) has none."""
    if len(counts) != len(reference) or not counts:
        raise ValueError(f"counts and reference must be the same non-zero length, got {len(counts)} and {len(reference)}")
    total = float(sum(reference))
    if not total > 0:
        raise ValueError(f"the reference shares must have a positive sum, got {total}")
    bins, n = len(counts), float(sum(counts))
    if n <= 0:
        return 0.0, 1.0
    shares = np.asarray(reference, dtype=np.float64) / total  # rounded shares (JSON) may not sum to 1
    live_alpha = alpha / 2 if reference_rows else alpha
    live = np.array([share_interval(c, n, live_alpha / bins) for c in counts])
    if reference_rows:
        ref = np.array([share_interval(r * reference_rows, reference_rows, alpha / 2 / bins) for r in shares])
    else:
        ref = np.column_stack([shares, shares])
    (low, high), (ref_low, ref_high) = live.T, ref.T
    gaps = np.maximum(0.0, np.maximum(low - ref_high, ref_low - high))
    smallest = max(gaps.sum() / 2, np.maximum(low - ref_high, 0.0).sum(), np.maximum(ref_low - high, 0.0).sum())
    if bins <= _EXACT_BINS:
        sets = _sets(bins)
        most_p = np.minimum(sets @ high, 1 - ~sets @ low)
        least_r = np.maximum(sets @ ref_low, 1 - ~sets @ ref_high)
        largest = float(np.max(most_p - least_r))
    else:
        farthest = np.maximum(np.abs(high - ref_low), np.abs(ref_high - low))
        largest = min(farthest.sum() / 2, np.maximum(high - ref_low, 0.0).sum(), np.maximum(ref_high - low, 0.0).sum())
    largest = min(max(largest, 0.0), 1.0)
    return min(float(smallest), largest), largest


#: Up to this many bins the distance interval's top is exact (2^bins sets: 65,536 at 16).
_EXACT_BINS = 16


@functools.cache
def _sets(bins: int) -> np.ndarray:
    """Every set of ``bins`` bins, one boolean row each."""
    return ((np.arange(2**bins)[:, None] >> np.arange(bins)) & 1).astype(bool)
