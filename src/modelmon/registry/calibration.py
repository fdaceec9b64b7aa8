"""Calibrating a model's probabilities at registration, for label-free quality estimates.

Confidence-based performance estimation (CBPE, as in NannyML) reads a calibrated
probability as the chance that the class is the true one: the expected confusion matrix of
a window is then the sum of the calibrated probabilities, and from it the expected
accuracy, precision, recall and F1, before any label arrives.

Each class is calibrated one-vs-rest with isotonic regression or a sigmoid on the logit, and
rows are renormalised. A method is kept only when it lowers the calibration error measured
out of sample (five-fold cross-validation on the validation data); otherwise the model's own
probabilities are used. The maps are stored in ``model.json`` and applied with plain numpy.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

METHODS = ("none", "isotonic", "sigmoid")
#: Bins of the calibration error (equal counts of rows).
ERROR_BINS = 10
MIN_ROWS = 100
EPS = 1e-6


class ClassMap(BaseModel):
    x: list[float] = Field(default_factory=list, description="Isotonic: input thresholds.")
    y: list[float] = Field(default_factory=list, description="Isotonic: calibrated values at the thresholds.")
    a: float = 1.0
    b: float = 0.0


class Calibration(BaseModel):
    method: Literal["none", "isotonic", "sigmoid"]
    maps: list[ClassMap] = Field(default_factory=list, description="One per class (binary: the positive class only).")
    cv_error: dict[str, float] = Field(default_factory=dict, description="Out-of-sample calibration error of each method.")
    rows: int = 0


def calibration_error(proba: np.ndarray, truth: np.ndarray) -> float:
    """Mean over classes of the one-vs-rest expected calibration error, with equal-count
    bins: sum over bins of (bin share) * |mean probability - observed frequency|."""
    errors = []
    for j in _calibrated_columns(proba.shape[1]):
        order = np.argsort(proba[:, j], kind="stable")
        error = 0.0
        for bin_rows in np.array_split(order, ERROR_BINS):
            if bin_rows.size:
                error += bin_rows.size / len(proba) * abs(proba[bin_rows, j].mean() - (truth[bin_rows] == j).mean())
        errors.append(error)
    return float(np.mean(errors))


def _calibrated_columns(n_classes: int) -> list[int]:
    return [1] if n_classes == 2 else list(range(n_classes))


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


def fit_maps(proba: np.ndarray, truth: np.ndarray, method: str) -> list[ClassMap]:
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    maps = []
    for j in _calibrated_columns(proba.shape[1]):
        target = (truth == j).astype(float)
        if method == "isotonic":
            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(proba[:, j], target)
            maps.append(ClassMap(x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist()))
        elif method == "sigmoid":
            if target.min() == target.max():  # one class only: nothing to fit
                maps.append(ClassMap())
                continue
            lr = LogisticRegression(C=1e6).fit(_logit(proba[:, j]).reshape(-1, 1), target)
            maps.append(ClassMap(a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0])))
        else:
            maps.append(ClassMap())
    return maps


def apply(calibration: Calibration | None, proba: np.ndarray) -> np.ndarray:
    """Calibrated probabilities, rows summing to one."""
    if calibration is None or calibration.method == "none":
        # float32 runtimes (ONNX) give rows that sum to 1 only within ~1e-7: renormalise so
        # expected counts add up to the rows exactly.
        totals = proba.sum(axis=1, keepdims=True)
        return np.divide(proba, totals, out=np.full_like(proba, 1.0 / proba.shape[1], dtype=np.float64), where=totals > 0)
    columns = _calibrated_columns(proba.shape[1])
    out = proba.astype(np.float64, copy=True)
    for j, class_map in zip(columns, calibration.maps, strict=True):
        if calibration.method == "isotonic":
            out[:, j] = np.interp(proba[:, j], class_map.x, class_map.y) if class_map.x else proba[:, j]
        else:
            out[:, j] = 1.0 / (1.0 + np.exp(-(class_map.a * _logit(proba[:, j]) + class_map.b)))
    if proba.shape[1] == 2:
        out[:, 0] = 1.0 - out[:, 1]
        return out
    totals = out.sum(axis=1, keepdims=True)
    return np.divide(out, totals, out=np.full_like(out, 1.0 / out.shape[1]), where=totals > 0)


def calibrate(proba: np.ndarray, truth: np.ndarray, folds: int = 5, seed: int = 0) -> Calibration:
    """Choose and fit the calibration for validation probabilities ``proba`` and true class
    indices ``truth`` (see the module doc).

    Each method is judged on out-of-fold predictions: fitted on four fifths of the rows,
    applied to the fifth left out, all folds pooled into one error. Two folds would judge
    maps fitted on half the data, which handicaps isotonic regression most, though the map
    kept is refitted on all of it."""
    if len(proba) < MIN_ROWS:
        return Calibration(method="none", rows=len(proba))
    order = np.random.default_rng(seed).permutation(len(proba))
    parts = np.array_split(order, folds)
    errors = {"none": calibration_error(proba, truth)}
    for method in METHODS[1:]:
        out_of_fold = np.empty_like(proba, dtype=np.float64)
        for k, held_out in enumerate(parts):
            fit_rows = np.concatenate([p for j, p in enumerate(parts) if j != k])
            maps = fit_maps(proba[fit_rows], truth[fit_rows], method)
            out_of_fold[held_out] = apply(Calibration(method=method, maps=maps), proba[held_out])
        errors[method] = calibration_error(out_of_fold, truth)
    best = min(METHODS, key=lambda m: (errors[m], METHODS.index(m)))
    return Calibration(method=best, maps=fit_maps(proba, truth, best), cv_error=errors, rows=len(proba))


def expected_confusion(calibrated: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Expected cells [actual, predicted]: each row adds its calibrated probabilities to the
    column of the class it was predicted as."""
    n_classes = calibrated.shape[1]
    cells = np.zeros((n_classes, n_classes))
    for k in range(n_classes):
        rows = predicted == k
        if rows.any():
            cells[:, k] = calibrated[rows].sum(axis=0)
    return cells
