"""Classification metrics of one split at one step, named as the run store keeps them.

Binary problems get precision, recall and F1 of the positive class; every problem gets
accuracy and the macro and weighted averages (the registry's baseline compares on
``f1_macro``), multiclass problems also one value per class (``f1[gold]``), and log loss
when probabilities are given. scikit-learn computes them, in one pass for the per-class
values, so they equal ``sklearn.metrics`` by construction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, log_loss, precision_recall_fscore_support

from modelmon.tracking.errors import TrackingError

AVERAGES = ("macro", "weighted")
#: numpy dtype kinds of numeric labels (bool, int, unsigned, float).
NUMERIC_KINDS = "biuf"


def classification_metrics(
    y_true: Any,
    y_pred: Any,
    y_proba: Any = None,
    *,
    labels: Sequence[Any] | None = None,
    positive: Any = None,
    loss: float | None = None,
) -> dict[str, float]:
    """Metrics of predictions ``y_pred`` against ``y_true`` (one label per row).

    ``labels`` are the classes, in the column order of ``y_proba`` [default: the sorted
    labels seen in ``y_true`` and ``y_pred``]. ``y_proba`` is ``[n, classes]``, or ``[n]``
    (probability of the positive class) for a binary problem. ``positive`` is the positive
    class of a binary problem [default: the second label, so 1, True or "yes"]. ``loss``,
    the model's own training loss, is passed through as ``loss``.
    """
    truth = _labels_1d(y_true, "y_true")
    predicted = _labels_1d(y_pred, "y_pred")
    if len(truth) != len(predicted):
        raise TrackingError(f"y_true has {len(truth)} rows but y_pred has {len(predicted)}")
    if len(truth) == 0:
        raise TrackingError("no rows to compute classification metrics on")
    classes = _classes(truth, predicted, labels, y_proba)

    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=classes, average=None, zero_division=0
    )
    out: dict[str, float] = {"accuracy": float(accuracy_score(truth, predicted))}
    if len(classes) == 2:
        pos = classes[1] if positive is None else positive
        if pos not in list(classes):
            raise TrackingError(
                f"positive class {pos!r} is not one of the labels {classes.tolist()}"
            )
        i = list(classes).index(pos)
        out.update(precision=float(precision[i]), recall=float(recall[i]), f1=float(f1[i]))
    for average in AVERAGES:
        weights = support if average == "weighted" else None
        for name, values in (("precision", precision), ("recall", recall), ("f1", f1)):
            out[f"{name}_{average}"] = float(np.average(values, weights=weights))
    if len(classes) != 2:
        for j, label in enumerate(classes):
            key = _label_text(label)
            out[f"precision[{key}]"] = float(precision[j])
            out[f"recall[{key}]"] = float(recall[j])
            out[f"f1[{key}]"] = float(f1[j])
    if y_proba is not None:
        out["log_loss"] = _log_loss(truth, y_proba, classes, positive)
    if loss is not None:
        out["loss"] = float(loss)
    return out


def _labels_1d(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise TrackingError(
            f"{name} must hold one label per row, got shape {array.shape}; pass class "
            "probabilities as y_proba and one-hot labels as their argmax"
        )
    return array


def _classes(
    truth: np.ndarray, predicted: np.ndarray, labels: Sequence[Any] | None, y_proba: Any
) -> np.ndarray:
    if labels is not None:
        classes = np.asarray(labels)
        unknown = set(np.unique(truth).tolist() + np.unique(predicted).tolist()) - set(
            classes.tolist()
        )
        if unknown:
            raise TrackingError(
                f"y_true or y_pred hold {sorted(unknown, key=str)}, which are not in "
                f"labels={classes.tolist()}"
            )
        return classes
    if (truth.dtype.kind in NUMERIC_KINDS) != (predicted.dtype.kind in NUMERIC_KINDS):
        raise TrackingError(
            f"y_true ({truth.dtype}) and y_pred ({predicted.dtype}) hold labels of different "
            "types: numbers in one, text in the other"
        )
    try:
        classes = np.unique(np.concatenate([truth, predicted]))
    except TypeError:
        raise TrackingError("y_true and y_pred hold labels that cannot be compared") from None
    width = np.shape(y_proba)[1] if y_proba is not None and np.ndim(y_proba) == 2 else None
    if width is not None and width != len(classes):
        raise TrackingError(
            f"y_proba has {width} columns but {len(classes)} classes appear in y_true and "
            "y_pred; pass labels=[...] in the column order of y_proba"
        )
    return classes


def _log_loss(truth: np.ndarray, y_proba: Any, classes: np.ndarray, positive: Any) -> float:
    proba = np.asarray(y_proba)
    if proba.dtype.kind != "f":
        proba = proba.astype(float)
    # float32 stays float32: scikit-learn then checks that rows sum to one, and clips,
    # with float32 tolerances, as it would on the same array.
    if proba.ndim == 2 and proba.shape[1] == 1 and len(classes) == 2:
        proba = proba[:, 0]
    if proba.ndim == 1:
        if len(classes) != 2:
            raise TrackingError(
                f"y_proba is one column but there are {len(classes)} classes; pass [n, classes]"
            )
        pos = list(classes).index(classes[1] if positive is None else positive)
        proba = np.column_stack([1 - proba, proba] if pos == 1 else [proba, 1 - proba])
    if proba.shape != (len(truth), len(classes)):
        raise TrackingError(
            f"y_proba has shape {proba.shape}, expected ({len(truth)}, {len(classes)}): one "
            "row per label and one column per class"
        )
    if not np.isfinite(proba).all():
        return math.nan  # recorded and flagged like any other non-finite value
    order = np.argsort(classes, kind="stable")  # log_loss takes columns in sorted label order
    return float(log_loss(truth, proba[:, order], labels=classes[order]))


def _label_text(label: Any) -> str:
    return str(label.item() if isinstance(label, np.generic) else label)
