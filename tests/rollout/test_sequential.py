"""The always-valid intervals of the rollout gates (monitoring/sequential.py), against
scipy's numerical integral and root finder, a hand-worked case, and by simulation: the
share of paths whose interval ever misses the true mean stays under alpha."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, special, stats

from modelmon.monitoring.sequential import difference_interval, log_mixture, share_interval


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
