"""The drift gate's decision (serving/rollout_gates.py) from two versions' prediction counts:
the candidate's drift from its own validation predictions minus the primary's, failed only
when that excess is surely above the margin."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.spatial import distance

from modelmon.monitoring import families
from modelmon.monitoring.array_metrics import ArrayMetrics
from modelmon.monitoring.sequential import distance_interval
from modelmon.monitoring.tasks import RegressionCounts
from modelmon.serving.rollout_gates import GATES, drift_interval
from modelmon.types import ModelOutput

#: A classifier's class shares on its validation rows, and how many rows they were counted on.
SHARES = np.array([0.3, 0.5, 0.2])
REFERENCE = (SHARES, 2000.0)
ALPHA = 0.05


def decide(candidate: np.ndarray, primary: np.ndarray, margin: float = 0.2):
    return GATES["drift"].compare(candidate, primary, ALPHA, margin, "drift", (REFERENCE, REFERENCE))


def test_versions_drifting_alike_pass():
    """The traffic moved both versions' classes from (0.3, 0.5, 0.2) to (0.6, 0.3, 0.1) (TV
    0.3 each): no excess, so the gate passes once the rows pin both distances down, and
    waits before."""
    moved = np.array([0.6, 0.3, 0.1]) * 50_000
    result = decide(moved, moved)
    assert result.verdict == "pass"
    assert result.low < 0 < result.high <= 0.2
    assert result.candidate == pytest.approx((0.3 * 50_000, 50_000))  # observed drift x rows, rows
    assert result.detail["candidate_drift"][0] <= 0.3 <= result.detail["candidate_drift"][1]
    few = np.array([0.6, 0.3, 0.1]) * 50
    assert decide(few, few).verdict == "wait"


def test_a_candidate_drifting_more_by_the_margin_fails():
    """The candidate's classes move 0.5 away (TV, by scipy) while the primary's stay: failed
    once the excess is surely above 0.2; a candidate 0.1 further is never failed at that
    margin, however many rows."""
    candidate_shares = np.array([0.8, 0.0, 0.2])
    assert distance.cityblock(candidate_shares, SHARES) / 2 == pytest.approx(0.5)
    primary = SHARES * 5_000
    result = decide(candidate_shares * 5_000, primary)
    assert result.verdict == "fail"
    assert result.low > 0.2
    slightly = np.array([0.4, 0.4, 0.2]) * 10**9  # TV 0.1
    assert decide(slightly, primary).verdict != "fail"
    assert decide(slightly, SHARES * 10**9).verdict == "pass"


def test_the_validation_shares_uncertainty_is_counted():
    """The version's interval is the distance interval with the reference counted on its
    validation rows (each side at alpha / 2), wider than with the shares taken as exact."""
    counts = np.array([0.5, 0.3, 0.2]) * 3_000
    assert drift_interval(counts, REFERENCE, ALPHA) == distance_interval(counts.tolist(), SHARES.tolist(), ALPHA, 2000.0)
    exact = drift_interval(counts, (SHARES, 0.0), ALPHA)
    assert exact == distance_interval(counts.tolist(), SHARES.tolist(), ALPHA)
    low, high = drift_interval(counts, REFERENCE, ALPHA)
    assert low < exact[0] <= 0.2 <= exact[1] < high


def test_no_rows_or_no_reference_is_no_evidence():
    assert drift_interval(np.zeros(3), REFERENCE, ALPHA) == (0.0, 1.0)
    assert drift_interval(np.zeros(0), None, ALPHA) == (0.0, 1.0)
    assert drift_interval(np.ones(2), REFERENCE, ALPHA) == (0.0, 1.0)  # counts of other bins
    assert decide(np.zeros(3), np.zeros(3)).verdict == "wait"


def test_a_regressor_answering_nan_drifts():
    """A regressor's NaN predictions are a cell of their own after its bins (none of its
    validation predictions were NaN): a candidate answering NaN for 30% of rows has drifted
    0.3, which the gate sees, where the bins alone would show it as undrifted."""
    shares = np.append(np.full(4, 0.25), 0.0)
    reference = (shares, 5000.0)
    healthy = np.append(np.full(4, 2500.0), 0.0)
    nan_answering = np.append(np.full(4, 0.7 * 2500.0), 0.3 * 10_000)
    low, high = drift_interval(nan_answering, reference, ALPHA)
    assert low <= 0.3 <= high and low > 0.2
    assert drift_interval(nan_answering[:4], (shares[:4], 5000.0), ALPHA)[0] == 0.0
    result = GATES["drift"].compare(nan_answering, healthy, ALPHA, 0.1, "drift", (reference, reference))
    assert result.verdict == "fail"


def test_a_regressors_nan_predictions_are_counted_beside_its_bins():
    """RegressionCounts puts a NaN prediction in no bin and counts it as missing, so bins plus
    missing are the rows predicted; infinities fall in the end bins."""
    arrays = ArrayMetrics()
    for family in families.ARRAY_FAMILIES:
        arrays.family(family)
    profile = SimpleNamespace(predicted_values=SimpleNamespace(edges=[0.0, 10.0], bin_labels=["a", "b", "c"], shares=[0.2, 0.5, 0.3]))
    task = RegressionCounts(arrays, ["m", "1"], None, profile, None)  # type: ignore[arg-type]
    task.count(ModelOutput(predicted=np.array([-1.0, 5.0, np.nan, 20.0, np.inf, -np.inf, np.nan])))
    assert task.bins.counts.tolist() == [2.0, 1.0, 2.0]
    assert task.missing.counts.tolist() == [2.0]
