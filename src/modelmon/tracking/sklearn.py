"""Training a scikit-learn classifier or regressor epoch by epoch, logging both splits after
each epoch (a regressor's MAE, RMSE, R² and mean error, see ``regression_metrics``).

An epoch is one ``partial_fit`` pass when the estimator has it (SGD, MLP, Perceptron,
naive Bayes), else one more round of a ``warm_start`` fit: ``per_epoch`` more trees for
ensembles, ``per_epoch`` more boosting iterations for HistGradientBoosting, ``per_epoch``
more solver iterations for iterative models such as LogisticRegression. A ``Pipeline``'s
preprocessing is fitted once, on the training data, and only its last step trains by
epochs, so the result is the same fitted pipeline that ``fit`` would give, with curves.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import is_regressor
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.pipeline import Pipeline

from modelmon.tracking.errors import TrackingError
from modelmon.tracking.run import TRAIN, VALIDATION, Run


@dataclass(frozen=True)
class EpochReport:
    """What ``on_epoch`` hears after each epoch."""

    epoch: int
    epochs: int
    #: Split ("train", "validation") to the metrics logged for it at this epoch.
    metrics: dict[str, dict[str, float]]
    #: Seconds since training started.
    elapsed: float


def fit_epochs(
    estimator: Any,
    X: Any,
    y: Any,
    *,
    run: Run,
    epochs: int,
    validation: tuple[Any, Any] | None = None,
    classes: Sequence[Any] | None = None,
    positive: Any = None,
    per_epoch: int = 1,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> Any:
    """Fit ``estimator`` (a classifier or regressor, or a Pipeline ending in one) on ``X, y`` for
    ``epochs`` epochs, logging the training and the ``validation=(X_val, y_val)`` metrics
    to ``run`` at steps 1..epochs and calling ``on_epoch`` after each. Returns the
    fitted ``estimator``.

    ``classes`` are every class the model must know [default: those in ``y``]; ``positive``
    is a binary problem's positive class (see ``classification_metrics``).
    """
    if epochs < 1:
        raise TrackingError(f"epochs must be at least 1, got {epochs}")
    if per_epoch < 1:
        raise TrackingError(f"per_epoch must be at least 1, got {per_epoch}")
    final = estimator[-1] if isinstance(estimator, Pipeline) else estimator
    regression = is_regressor(final)
    step_once = _epoch_strategy(final, per_epoch, regression)
    started = time.perf_counter()

    X_train, X_val = X, None if validation is None else validation[0]
    if isinstance(estimator, Pipeline) and len(estimator) > 1:
        preprocess = estimator[:-1]
        X_train = preprocess.fit_transform(X, y)
        X_val = None if validation is None else preprocess.transform(validation[0])
    all_classes = None if regression else np.unique(y) if classes is None else np.asarray(classes)
    splits = [(TRAIN, X_train, y)]
    if validation is not None:
        splits.append((VALIDATION, X_val, validation[1]))

    for epoch in range(1, epochs + 1):
        step_once(final, X_train, y, all_classes, epoch)
        logged = {
            split: (
                run.log_regression(split, labels, final.predict(features), step=epoch)
                if regression
                else _log_split(run, final, split, features, labels, epoch, positive)
            )
            for split, features, labels in splits
        }
        if on_epoch is not None:
            on_epoch(EpochReport(epoch, epochs, logged, time.perf_counter() - started))
    return estimator


def _epoch_strategy(final: Any, per_epoch: int, regression: bool) -> Callable[[Any, Any, Any, Any, int], None]:
    params = final.get_params()
    if hasattr(final, "partial_fit"):
        if regression:  # a regressor's partial_fit takes no classes
            return lambda model, X, y, classes, epoch: _repeat(per_epoch, lambda: model.partial_fit(X, y))
        return lambda model, X, y, classes, epoch: _repeat(
            per_epoch, lambda: model.partial_fit(X, y, classes=classes)
        )
    if "warm_start" not in params:
        raise TrackingError(
            f"{type(final).__name__} can be trained epoch by epoch only with partial_fit or "
            "warm_start, and has neither"
        )
    if "n_estimators" in params:
        grow = "n_estimators"
    elif isinstance(final, HistGradientBoostingClassifier | HistGradientBoostingRegressor):
        grow = "max_iter"
    elif "max_iter" in params:
        final.set_params(warm_start=True, max_iter=per_epoch)

        def more_iterations(model: Any, X: Any, y: Any, classes: Any, epoch: int) -> None:
            with warnings.catch_warnings():  # a few iterations per call never converge
                warnings.simplefilter("ignore", ConvergenceWarning)
                model.fit(X, y)

        return more_iterations
    else:
        raise TrackingError(
            f"{type(final).__name__} has warm_start but no n_estimators or max_iter to grow "
            "by epoch"
        )
    final.set_params(warm_start=True)
    return lambda model, X, y, classes, epoch: model.set_params(**{grow: epoch * per_epoch}).fit(
        X, y
    )


def _repeat(times: int, action: Callable[[], Any]) -> None:
    for _ in range(times):
        action()


def _log_split(
    run: Run, model: Any, split: str, X: Any, y: Any, epoch: int, positive: Any
) -> dict[str, float]:
    labels = model.classes_
    if hasattr(model, "predict_proba"):
        proba = model.predict_proba(X)
        predicted = labels[np.argmax(proba, axis=1)]
    else:
        proba, predicted = None, model.predict(X)
    return run.log_classification(
        split, y, predicted, proba, step=epoch, labels=labels, positive=positive
    )
