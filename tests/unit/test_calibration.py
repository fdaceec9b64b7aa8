"""Calibration at registration and the expected confusion matrix (CBPE)."""

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from modelmon.registry.calibration import (
    Calibration,
    apply,
    calibrate,
    calibration_error,
    expected_confusion,
    fit_maps,
)


def overconfident(n=4000, seed=0):
    """Binary scores whose true probability is much less extreme than they claim."""
    rng = np.random.default_rng(seed)
    true_p = rng.uniform(0.2, 0.8, n)
    truth = (rng.random(n) < true_p).astype(int)
    claimed = np.clip(0.5 + (true_p - 0.5) * 1.6, 0.01, 0.99)
    return np.column_stack([1 - claimed, claimed]), truth


def test_calibration_error_hand_worked():
    # Binary: the positive class's column. Ten rows in ten equal-count bins: one row each,
    # so the error is the mean of |p - y| = (4 x 0.1 + 0.9 + 5 x 0.1) / 10.
    proba = np.array([[0.9, 0.1]] * 5 + [[0.1, 0.9]] * 5)
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    assert calibration_error(proba, truth) == pytest.approx(0.18)


def test_isotonic_maps_equal_scikit_learn():
    proba, truth = overconfident()
    (class_map,) = fit_maps(proba, truth, "isotonic")
    reference = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(proba[:, 1], truth)
    calibrated = apply(Calibration(method="isotonic", maps=[class_map]), proba)
    np.testing.assert_allclose(calibrated[:, 1], reference.predict(proba[:, 1]), atol=1e-12)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)


def test_a_method_is_kept_only_when_it_lowers_the_error():
    proba, truth = overconfident()
    chosen = calibrate(proba, truth)
    assert chosen.method in ("isotonic", "sigmoid")
    assert chosen.cv_error[chosen.method] < chosen.cv_error["none"]
    # Already calibrated scores: whatever is kept does no harm on fresh data from the same
    # distribution.
    for seed in range(5):
        rng = np.random.default_rng(seed)
        p, fresh = rng.uniform(0.05, 0.95, 4000), rng.uniform(0.05, 0.95, 20000)
        chosen = calibrate(np.column_stack([1 - p, p]), (rng.random(4000) < p).astype(int))
        fresh_truth = (rng.random(20000) < fresh).astype(int)
        raw_error = calibration_error(np.column_stack([1 - fresh, fresh]), fresh_truth)
        assert calibration_error(apply(chosen, np.column_stack([1 - fresh, fresh])), fresh_truth) < raw_error + 0.01


def test_calibration_lowers_the_error_out_of_sample():
    proba, truth = overconfident(seed=2)
    fresh_proba, fresh_truth = overconfident(seed=3)
    chosen = calibrate(proba, truth)
    assert calibration_error(apply(chosen, fresh_proba), fresh_truth) < calibration_error(fresh_proba, fresh_truth)


def test_multiclass_rows_are_renormalised():
    rng = np.random.default_rng(4)
    proba = rng.dirichlet([1, 1, 1], 1000)
    truth = np.array([rng.choice(3, p=row) for row in proba])
    calibrated = apply(Calibration(method="sigmoid", maps=fit_maps(proba, truth, "sigmoid")), proba)
    np.testing.assert_allclose(calibrated.sum(axis=1), 1.0)


def test_expected_confusion_hand_worked():
    calibrated = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    predicted = np.array([0, 0, 1])
    cells = expected_confusion(calibrated, predicted)
    # Column "predicted 0" sums rows 0 and 1; column "predicted 1" is row 2.
    np.testing.assert_allclose(cells, [[1.4, 0.3], [0.6, 0.7]])
    # Expected accuracy = trace / rows = (1.4 + 0.7) / 3, CBPE's mean top-class probability.
    assert np.trace(cells) / 3 == pytest.approx(np.mean([0.8, 0.6, 0.7]))


def test_too_little_validation_data_keeps_raw_probabilities():
    proba, truth = overconfident(n=50)
    assert calibrate(proba, truth).method == "none"
