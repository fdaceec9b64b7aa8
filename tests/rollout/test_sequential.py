"""The always-valid intervals of the rollout gates (monitoring/sequential.py), against
scipy's numerical integral and root finder, a hand-worked case, and by simulation: the
share of paths whose interval ever misses the true mean stays under alpha. The drift
gate's interval of a total variation distance, against scipy's linear programming (the
smallest distance any distribution within the bins' intervals can have) and by simulation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats
from scipy.spatial import distance

from modelmon.monitoring.sequential import (
    difference_interval,
    distance_interval,
    log_mixture,
    share_interval,
)


@pytest.mark.parametrize(("successes", "n", "p"), [(0, 10, 0.2), (3, 10, 0.3), (2.5, 7, 0.6), (40, 1000, 0.02), (999.5, 1000, 0.9)])
def test_the_mixture_is_the_integral_of_the_likelihood_ratio(successes, n, p):
    """M_n(p) = integral of (q/p)^S ((1-q)/(1-p))^(n-S) dq over the uniform prior."""

    def log_ratio(q: float) -> float:
        return successes * math.log(q / p) + (n - successes) * math.log((1 - q) / (1 - p))

    # Scaled by the ratio's peak (at q = S/n) so that the integral is not lost to overflow.
    peak = min(max(successes / n, 1e-12), 1 - 1e-12)
    scale = log_ratio(peak)
    value, _ = integrate.quad(lambda q: math.exp(log_ratio(q) - scale), 0, 1, points=[peak], limit=200, epsabs=0, epsrel=1e-10)
    assert log_mixture(successes, n, p) == pytest.approx(scale + math.log(value), abs=1e-6)


def test_no_failure_in_n_has_a_closed_form_upper_bound():
    """With S = 0, log M_n(p) = -log(n + 1) - n log(1 - p): the bound is where that is log(1/alpha)."""
    n, alpha = 200, 0.01
    expected = 1 - math.exp(-(math.log(1 / alpha) + math.log(n + 1)) / n)
    low, high = share_interval(0, n, alpha)
    assert low == 0.0
    assert high == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("successes", "n"), [(5, 100), (40, 1000), (950.25, 1000)])
def test_the_ends_are_where_the_mixture_reaches_one_over_alpha(successes, n):
    alpha = 0.02

    def excess(p: float) -> float:
        return special.betaln(1 + successes, 1 + n - successes) - successes * math.log(p) - (n - successes) * math.log1p(-p) - math.log(1 / alpha)

    mean = successes / n
    low, high = share_interval(successes, n, alpha)
    assert low == pytest.approx(optimize.brentq(excess, 1e-12, mean), abs=1e-9)
    assert high == pytest.approx(optimize.brentq(excess, mean, 1 - 1e-12), abs=1e-9)
    assert low < mean < high


def test_before_any_value_anything_is_possible():
    assert share_interval(0, 0, 0.05) == (0.0, 1.0)
    assert difference_interval((0, 0), (0, 0), 0.05) == (-1.0, 1.0)


@pytest.mark.parametrize("kind", ["bernoulli", "beta"])
def test_the_false_alarm_rate_holds_under_continuous_monitoring(kind):
    """2000 paths of 1000 values with mean 0.1, watched after every value: the share of
    paths whose interval ever excludes 0.1 is at most alpha (within the simulation's own
    error). The crossing is computed with scipy's betaln, independently of the module, and
    the module agrees with it on a sample of the paths."""
    rng = np.random.default_rng(19)
    alpha, mean, paths, n = 0.05, 0.1, 2000, 1000
    if kind == "bernoulli":
        values = rng.random((paths, n)) < mean
    else:  # values in [0, 1] that are not 0/1: like a row's expected error from CBPE
        values = rng.beta(1.0, 9.0, (paths, n))
    sums = np.cumsum(values, axis=1)
    counts = np.arange(1, n + 1)
    log_m = special.betaln(1 + sums, 1 + counts - sums) - sums * np.log(mean) - (counts - sums) * np.log1p(-mean)
    crossed = (log_m >= math.log(1 / alpha)).any(axis=1)
    # One-sided binomial allowance: the observed rate may exceed alpha by chance only.
    assert crossed.mean() <= stats.binom.ppf(0.999, paths, alpha) / paths
    # A fixed-sample 95% interval (Wald, from the 30th value on) checked after every value
    # misses far more often: why the gates need the sequential one.
    sd = np.sqrt(values.var() / counts[29:])
    naive = (np.abs(sums[:, 29:] / counts[29:] - mean) > 1.96 * sd).any(axis=1)
    assert naive.mean() > 4 * alpha
    for path in range(0, paths, 400):
        for t in (10, 100, 999):
            low, high = share_interval(float(sums[path, t]), t + 1, alpha)
            assert (low <= mean <= high) == (log_m[path, t] < math.log(1 / alpha))


def test_a_worse_candidate_is_told_apart_and_an_equal_one_is_not():
    # 30% errors against none: the candidate is worse (the interval is above 0).
    low, high = difference_interval((30, 100), (0, 900), 0.05)
    assert 0 < low < 0.3 < high < 0.5
    # The same rate on both: the interval straddles 0 and narrows with evidence.
    narrow = difference_interval((50, 1000), (450, 9000), 0.05)
    wide = difference_interval((5, 100), (45, 900), 0.05)
    assert narrow[0] < 0 < narrow[1] and wide[0] < narrow[0] and narrow[1] < wide[1]


def total_variation(p: np.ndarray, r: np.ndarray) -> float:
    return float(distance.cityblock(p, r)) / 2


def vertices(ends: list[tuple[float, float]]) -> list[np.ndarray]:
    """The vertices of the distributions with every share in its interval: every bin at an
    end but one, which takes up the rest."""
    k, found = len(ends), []
    for free in range(k):
        others = [b for b in range(k) if b != free]
        for choice in itertools.product(*[ends[b] for b in others]):
            rest = 1 - sum(choice)
            if ends[free][0] - 1e-12 <= rest <= ends[free][1] + 1e-12:
                p = np.empty(k)
                p[others], p[free] = choice, rest
                found.append(p)
    return found


def extreme_distances(ends: list[tuple[float, float]], reference_ends: list[tuple[float, float]]) -> tuple[float, float]:
    """The smallest and largest total variation between any two distributions p and r with
    every p_b and r_b in their intervals, computed without the module's reasoning: the
    smallest by a linear program (minimise sum t_b / 2 subject to t_b >= |p_b - r_b|, both
    summing to 1), the largest at a pair of vertices (a convex function's maximum over a
    polytope)."""
    k = len(ends)
    # Variables: p_1..p_k, r_1..r_k, t_1..t_k.
    cost = np.r_[np.zeros(2 * k), np.ones(k) / 2]
    eye = np.eye(k)
    upper = np.block([[eye, -eye, -eye], [-eye, eye, -eye]])
    sums = np.block([[np.ones(k), np.zeros(k), np.zeros(k)], [np.zeros(k), np.ones(k), np.zeros(k)]])
    solved = optimize.linprog(cost, A_ub=upper, b_ub=np.zeros(2 * k), A_eq=sums, b_eq=[1.0, 1.0],
                              bounds=[*ends, *reference_ends, *[(0, 1)] * k])
    assert solved.status == 0
    largest = max(total_variation(p, r) for p in vertices(ends) for r in vertices(reference_ends))
    return float(solved.fun), largest


@pytest.mark.parametrize("reference_rows", [None, 200])
@pytest.mark.parametrize(("counts", "reference"), [
    ([30, 50, 20], [0.3, 0.5, 0.2]),  # as expected
    ([5, 0, 95, 0], [0.25, 0.25, 0.25, 0.25]),  # far from it
    ([400, 350, 250], [0.2, 0.3, 0.5]),
    ([0, 0, 1], [0.5, 0.5, 0.0]),  # a share the reference never had
    ([3000, 1000, 2000, 4000, 0], [0.1, 0.2, 0.3, 0.3, 0.1]),
])
def test_the_distance_interval_holds_every_distance_the_bins_intervals_allow(counts, reference, reference_rows):
    """With every bin's share in its interval (at alpha / bins; alpha / 2 / bins each side
    when the reference was counted on rows too), the distance interval contains the
    distance of every pair of distributions they allow (scipy's linear program for the
    smallest, every pair of vertices for the largest), its top is that largest, and it
    contains the observed shares' distance."""
    alpha, n = 0.05, sum(counts)
    if reference_rows is None:
        ends = [share_interval(c, n, alpha / len(counts)) for c in counts]
        reference_ends = [(r, r) for r in reference]
    else:
        ends = [share_interval(c, n, alpha / 2 / len(counts)) for c in counts]
        reference_ends = [share_interval(r * reference_rows, reference_rows, alpha / 2 / len(counts)) for r in reference]
    low, high = distance_interval(counts, reference, alpha, reference_rows)
    smallest, largest = extreme_distances(ends, reference_ends)
    assert low <= smallest + 1e-9
    assert high == pytest.approx(largest, abs=1e-9)
    observed = total_variation(np.array(counts) / n, np.array(reference))
    assert low <= observed <= high
    assert 0.0 <= low <= high <= 1.0
    if reference_rows is not None:  # the reference's own uncertainty widens the interval
        plain = distance_interval(counts, reference, alpha)
        assert high > plain[1] or plain[1] == 1.0


def test_the_distance_interval_narrows_to_the_true_distance():
    """A million rows: the interval is within 0.01 of the distance between the shares and the
    reference (hand-worked: all rows in one of four equal bins is 0.75 from them)."""
    low, high = distance_interval([1_000_000, 0, 0, 0], [0.25] * 4, 0.05)
    assert 0.74 < low <= 0.75 <= high < 0.76
    low, high = distance_interval([250_000] * 4, [0.25] * 4, 0.05)
    assert low == 0.0 and high < 0.01
    assert distance_interval([0, 0], [0.5, 0.5], 0.05) == (0.0, 1.0)  # before any row
    with pytest.raises(ValueError, match="same non-zero length"):
        distance_interval([1, 2], [1.0], 0.05)
    with pytest.raises(ValueError, match="positive sum"):
        distance_interval([1, 2], [0.0, 0.0], 0.05)
    # Shares rounded in a JSON profile are scaled to sum to 1: (0.45, 0.45, 0) is (0.5, 0.5, 0).
    assert distance_interval([500_000, 500_000, 0], [0.45, 0.45, 0.0], 0.05)[1] < 0.01


def test_the_distance_intervals_false_alarm_rate_holds_under_repeated_looks():
    """300 paths of 2,000 rows from shares (0.5, 0.3, 0.15, 0.05) against a reference 0.1
    away, each looked at 20 times (every 100 rows): the share of paths whose interval ever
    excludes the true distance (scipy's cityblock / 2) is at most alpha."""
    rng = np.random.default_rng(23)
    alpha, paths, looks, every = 0.05, 300, 20, 100
    shares, reference = np.array([0.5, 0.3, 0.15, 0.05]), np.array([0.4, 0.3, 0.15, 0.15])
    true = total_variation(shares, reference)
    assert true == pytest.approx(0.1)
    missed = 0
    for _ in range(paths):
        counts = np.cumsum(rng.multinomial(every, shares, size=looks), axis=0)
        for seen in counts:
            low, high = distance_interval(seen.tolist(), reference.tolist(), alpha)
            if not low <= true <= high:
                missed += 1
                break
    assert missed / paths <= stats.binom.ppf(0.999, paths, alpha) / paths
