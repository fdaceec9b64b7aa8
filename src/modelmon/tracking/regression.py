"""Regression metrics of one split at one step, named as the registry's baseline names them.

``mae``, ``rmse``, ``r2`` and ``mean_error`` (predicted minus true: the bias), computed by
scikit-learn (``mean_error`` by numpy), so they equal ``sklearn.metrics`` by construction
and a run's final validation values are a registered regressor's baseline as they stand
(``run_baseline``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from modelmon.tracking.errors import TrackingError


def regression_metrics(y_true: Any, y_pred: Any, *, loss: float | None = None) -> dict[str, float]:
    """Metrics of predicted values ``y_pred`` against true values ``y_true`` (one number per
    row, ``[n]`` or ``[n, 1]``); ``loss``, the model's own training loss, is passed through."""
    truth = _values_1d(y_true, "y_true")
    predicted = _values_1d(y_pred, "y_pred")
    if len(truth) != len(predicted):
        raise TrackingError(f"y_true has {len(truth)} rows but y_pred has {len(predicted)}")
    if len(truth) == 0:
        raise TrackingError("no rows to compute regression metrics on")
    out = {
        "mae": float(mean_absolute_error(truth, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(truth, predicted))),
        # One row, or all true values equal: R² is not defined (scikit-learn warns, NaN).
        "r2": float(r2_score(truth, predicted)) if len(truth) > 1 and np.ptp(truth) > 0 else float("nan"),
        "mean_error": float(np.mean(predicted - truth)),
    }
    if loss is not None:
        out["loss"] = float(loss)
    return out


def _values_1d(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise TrackingError(f"{name} must hold one number per row, got shape {array.shape}")
    if array.dtype.kind not in "iuf":
        raise TrackingError(f"{name} must hold numbers, got {array.dtype}")
    return array.astype(np.float64)
