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

import math

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


def distance_interval(counts: list[float], reference: list[float], alpha: float) -> tuple[float, float]:
    """An always-valid interval of the total variation distance between the distribution
    behind ``counts`` (rows per bin, so far) and a fixed ``reference`` (shares per bin,
    summing to 1): half the L1 distance, the largest difference in the share of any set of
    bins, in [0, 1].

    Each bin's share is a mean of 0/1 values (a row in the bin or not), so it has its
    confidence sequence at alpha / bins; all of them hold at all times at once with
    probability at least 1 - alpha (a union bound), and then the distance lies between the
    smallest and the largest it can be with every share in its interval:

    - at least half the sum of each reference share's distance from its bin's interval,
      and at least the reference's total excess over the intervals' tops (or the intervals'
      bottoms' total excess over the reference), since TV = sum of max(0, r - p) = sum of
      max(0, p - r);
    - at most half the sum of each bin's farthest end from its reference share, and at most
      the total excess either way taken at the far ends.

    The distance has a finite-sample bound of this kind where the PSI (a log ratio of
    shares, unbounded as a live share nears 0) has none."""
    if len(counts) != len(reference) or not counts:
        raise ValueError(f"counts and reference must be the same non-zero length, got {len(counts)} and {len(reference)}")
    n = float(sum(counts))
    if n <= 0:
        return 0.0, 1.0
    ends = [share_interval(c, n, alpha / len(counts)) for c in counts]
    outside = sum(max(r - high, low - r, 0.0) for (low, high), r in zip(ends, reference, strict=True))
    above = sum(max(low - r, 0.0) for (low, _), r in zip(ends, reference, strict=True))
    below = sum(max(r - high, 0.0) for (_, high), r in zip(ends, reference, strict=True))
    farthest = sum(max(abs(low - r), abs(high - r)) for (low, high), r in zip(ends, reference, strict=True))
    most_above = sum(max(high - r, 0.0) for (_, high), r in zip(ends, reference, strict=True))
    most_below = sum(max(r - low, 0.0) for (low, _), r in zip(ends, reference, strict=True))
    low_bound = max(outside / 2, above, below)
    high_bound = min(farthest / 2, most_above, most_below, 1.0)
    return min(low_bound, high_bound), high_bound
