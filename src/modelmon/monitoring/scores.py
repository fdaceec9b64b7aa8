"""Accuracy and F1 from a confusion matrix, as scikit-learn defines them, so a matrix of
counts (realized) or of expected counts (CBPE) gives numbers comparable with the baseline."""

from __future__ import annotations

import numpy as np


def scores_from_confusion(cells: np.ndarray) -> dict[str, float]:
    """``cells[actual, predicted]``: accuracy and macro F1 over the classes that occur as
    actual or predicted (scikit-learn's ``f1_score(average="macro")``, zero_division=0)."""
    cells = np.asarray(cells, dtype=np.float64)
    total = cells.sum()
    if total <= 0:
        return {"accuracy": float("nan"), "f1_macro": float("nan"), "rows": 0.0}
    true_positive = np.diag(cells)
    predicted, actual = cells.sum(axis=0), cells.sum(axis=1)
    present = (predicted + actual) > 0
    f1 = 2 * true_positive[present] / (predicted[present] + actual[present])
    return {"accuracy": float(true_positive.sum() / total), "f1_macro": float(f1.mean()), "rows": float(total)}
