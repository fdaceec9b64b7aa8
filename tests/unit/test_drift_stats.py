"""Drift statistics against scipy and hand-worked cases."""

import math

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from modelmon.monitoring import drift_stats


def hand_psi(p, q, eps=drift_stats.PSI_SMOOTHING):
    p = [(x + eps) / (1 + eps * len(p)) for x in p]
    q = [(x + eps) / (1 + eps * len(q)) for x in q]
    return sum((b - a) * math.log(b / a) for a, b in zip(p, q, strict=True))


def test_psi_hand_worked():
    # Two bins, 50/50 against 25/75: PSI = (0.25-0.5)ln(0.5) + (0.75-0.5)ln(1.5) = 0.27465...
    assert drift_stats.psi(np.array([0.5, 0.5]), np.array([25, 75]), epsilon=0) == pytest.approx(
        0.25 * math.log(2) + 0.25 * math.log(1.5), rel=1e-12
    )
    assert drift_stats.psi(np.array([0.2, 0.3, 0.5]), np.array([20, 30, 50])) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("seed", range(5))
def test_psi_matches_formula_on_random_counts(seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(10))
    counts = rng.integers(0, 50, 10)
    assert drift_stats.psi(p, counts) == pytest.approx(hand_psi(list(p), list(counts / counts.sum())), rel=1e-12)


def test_psi_with_empty_bins_is_finite_and_symmetric_in_smoothing():
    value = drift_stats.psi(np.array([0.0, 1.0]), np.array([10, 0]))
    assert math.isfinite(value) and value > 5
    assert drift_stats.psi(np.array([1.0, 0.0]), np.array([0, 10])) == pytest.approx(value)


@pytest.mark.parametrize("seed", range(5))
def test_js_distance_equals_scipy_base_2(seed):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet(np.ones(8))
    counts = rng.integers(0, 30, 8)
    counts[0] = 0  # an empty bin: 0 * log 0 counts as 0
    assert drift_stats.js_distance(p, counts) == pytest.approx(jensenshannon(p, counts / counts.sum(), base=2), rel=1e-12)
    assert drift_stats.js_distance(np.array([1.0, 0.0]), np.array([0, 5])) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(3))
def test_wasserstein_normalised_is_scipy_over_reference_std(seed):
    rng = np.random.default_rng(seed)
    reference, current = rng.normal(0, 3, 500), rng.normal(1, 3, 300)
    expected = stats.wasserstein_distance(reference, current) / reference.std()
    assert drift_stats.wasserstein_normalised(reference, current, reference.std()) == pytest.approx(expected, rel=1e-12)


def test_wasserstein_of_a_constant_reference_is_in_feature_units():
    assert drift_stats.wasserstein_normalised(np.full(10, 2.0), np.full(5, 3.5), 0.0) == pytest.approx(1.5)


def test_ks_and_chi2_equal_scipy():
    rng = np.random.default_rng(9)
    a, b = rng.normal(size=400), rng.normal(0.3, 1, 200)
    assert drift_stats.ks_pvalue(a, b) == stats.ks_2samp(a, b).pvalue
    ref, cur = np.array([50, 30, 20]), np.array([10, 10, 30])
    expected = stats.chi2_contingency(np.vstack([ref, cur]), correction=False).pvalue
    assert drift_stats.chi2_pvalue(ref, cur) == pytest.approx(expected, rel=1e-12)


def test_chi2_drops_bins_empty_on_both_sides():
    with_empty = drift_stats.chi2_pvalue(np.array([50, 0, 50]), np.array([10, 0, 30]))
    without = drift_stats.chi2_pvalue(np.array([50, 50]), np.array([10, 30]))
    assert with_empty == pytest.approx(without)
    assert drift_stats.chi2_pvalue(np.array([5, 0]), np.array([5, 0])) == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_wasserstein_distance_equals_scipy_with_ties_and_unequal_sizes(seed):
    rng = np.random.default_rng(seed)
    reference = rng.poisson(4, 700).astype(float)  # many ties
    current = rng.poisson(5, 123 + seed).astype(float)
    assert drift_stats.wasserstein_distance(reference, current) == pytest.approx(
        stats.wasserstein_distance(reference, current), rel=1e-12
    )


def test_wasserstein_distance_hand_worked():
    # half the mass moves 2 (0 -> 2), half moves 1 (1 -> 2)
    assert drift_stats.wasserstein_distance(np.array([0.0, 1.0]), np.array([2.0])) == pytest.approx(1.5)
    assert drift_stats.wasserstein_distance(np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, 3.0])) == 0.0
    assert drift_stats.wasserstein_distance(np.array([5.0]), np.array([5.0])) == 0.0


def test_js_distance_of_equal_distributions_is_zero():
    assert drift_stats.js_distance(np.array([0.2, 0.0, 0.8]), np.array([2, 0, 8])) == pytest.approx(0.0, abs=1e-12)
