"""The drift gate's decision (serving/rollout_gates.py) from two versions' prediction counts:
the candidate's drift from its own validation predictions minus the primary's, failed only
when that excess is surely above the margin."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import distance

from modelmon.serving.rollout_gates import GATES, drift_interval

#: A classifier's two distributions: two classes, and three confidence buckets.
REFERENCES = [np.array([0.5, 0.5]), np.array([0.2, 0.5, 0.3])]
ALPHA = 0.05


def counts(classes: list[float], confidence: list[float], rows: int) -> np.ndarray:
    """The expected counts of ``rows`` predicted rows with these shares, bins one after the other."""
    return np.r_[np.array(classes) * rows, np.array(confidence) * rows]


def decide(candidate: np.ndarray, primary: np.ndarray, margin: float = 0.15):
    gate = GATES["drift"]
    return gate.compare(candidate, primary, ALPHA, margin, "drift", (REFERENCES, REFERENCES))


def test_versions_drifting_alike_pass():
    """The traffic moved both versions' classes from 50/50 to 80/20 (TV 0.3 each): no excess,
    so the gate passes once the rows pin both distances down, and waits before."""
    moved = counts([0.8, 0.2], [0.2, 0.5, 0.3], 20_000)
    result = decide(moved, moved)
    assert result.verdict == "pass"
    assert result.low < 0 < result.high <= 0.15
    assert result.candidate == pytest.approx((0.3 * 20_000, 20_000))  # observed drift x rows, rows
    assert result.detail["candidate_drift"][0] <= 0.3 <= result.detail["candidate_drift"][1]
    few = counts([0.8, 0.2], [0.2, 0.5, 0.3], 50)
    assert decide(few, few).verdict == "wait"


def test_a_candidate_drifting_more_by_the_margin_fails():
    """The candidate's confidence moves 0.5 away (TV, by scipy) while the primary's stays:
    failed once the excess is surely above 0.15; a candidate 0.1 further is never failed at
    that margin, however many rows."""
    candidate_shares = [0.7, 0.3, 0.0]
    assert distance.cityblock(candidate_shares, REFERENCES[1]) / 2 == pytest.approx(0.5)
    primary = counts([0.5, 0.5], [0.2, 0.5, 0.3], 5_000)
    result = decide(counts([0.5, 0.5], candidate_shares, 5_000), primary)
    assert result.verdict == "fail"
    assert result.low > 0.15
    slightly = counts([0.5, 0.5], [0.3, 0.5, 0.2], 1_000_000)  # TV 0.1
    assert decide(slightly, primary).verdict != "fail"
    assert decide(slightly, counts([0.5, 0.5], [0.2, 0.5, 0.3], 1_000_000)).verdict == "pass"


def test_the_largest_distribution_decides_and_no_rows_is_no_evidence():
    # The class shares moved 0.4, the confidence not at all: the version's drift is 0.4.
    low, high = drift_interval(counts([0.9, 0.1], [0.2, 0.5, 0.3], 100_000), REFERENCES, ALPHA)
    assert low <= 0.4 <= high and high - low < 0.03
    assert drift_interval(np.zeros(5), REFERENCES, ALPHA) == (0.0, 1.0)
    assert drift_interval(np.zeros(4), REFERENCES, ALPHA) == (0.0, 1.0)  # counts of other bins: none
    assert decide(np.zeros(5), np.zeros(5)).verdict == "wait"
