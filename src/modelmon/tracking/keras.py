"""A Keras 3 callback that logs every epoch to a run, on any Keras backend.

Keras's own epoch logs become the ``train`` split (``loss``, ``accuracy``, ...) and the
``validation`` split (its ``val_*`` entries). Precision, recall and F1 need the whole
validation set's predictions, which Keras does not keep, so at each epoch's end the
callback predicts ``validation_data`` once and logs ``classification_metrics`` of it. A
regressor (``task="regression"``) gets ``regression_metrics`` (MAE, RMSE, R², mean error)
instead, of the validation data and, given ``training_data``, of the training data too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import keras
import numpy as np

from modelmon.tracking.classification import classification_metrics
from modelmon.tracking.errors import TrackingError
from modelmon.tracking.regression import regression_metrics
from modelmon.tracking.run import TRAIN, VALIDATION, Run

VALIDATION_PREFIX = "val_"


class ModelmonCallback(keras.callbacks.Callback):
    """``model.fit(..., callbacks=[ModelmonCallback(run, validation_data=(X_val, y_val))])``.

    Epochs are logged as steps 1, 2, ... as Keras prints them. The model's output decides
    the labels: ``[n, k]`` scores (softmax) mean class ``argmax``, ``[n]`` or ``[n, 1]``
    (sigmoid) mean class 1 when above ``threshold``. ``y_val`` holds class indices or one-hot
    rows; ``labels`` names the classes in index order [default: the indices 0..k-1].

    ``task="regression"``: the model predicts one number per row (``[n]`` or ``[n, 1]``)
    and each split gets ``regression_metrics``; ``training_data=(X, y)`` is predicted at each
    epoch's end for the training split's (Keras's own training logs are averages over the
    epoch's batches, taken while the weights changed).
    """

    def __init__(
        self,
        run: Run,
        validation_data: tuple[Any, Any] | None = None,
        *,
        labels: Sequence[Any] | None = None,
        threshold: float = 0.5,
        batch_size: int | None = None,
        task: Literal["classification", "regression"] = "classification",
        training_data: tuple[Any, Any] | None = None,
    ) -> None:
        super().__init__()
        if task not in ("classification", "regression"):
            raise TrackingError(f"task must be 'classification' or 'regression', got {task!r}")
        self.run = run
        self.task = task
        self.training_data = training_data
        self.validation_data = validation_data
        self.labels = None if labels is None else list(labels)
        self.threshold = threshold
        self.batch_size = batch_size

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        logs = dict(logs or {})
        step = epoch + 1
        train = {k: v for k, v in logs.items() if not k.startswith(VALIDATION_PREFIX)}
        validation = {
            k[len(VALIDATION_PREFIX) :]: v
            for k, v in logs.items()
            if k.startswith(VALIDATION_PREFIX)
        }
        if self.training_data is not None:
            train.update(self._metrics(*self.training_data))
        if train:
            self.run.log_metrics(train, step=step, split=TRAIN)
        if self.validation_data is not None:
            validation.update(self._metrics(*self.validation_data))
        if validation:
            self.run.log_metrics(validation, step=step, split=VALIDATION)

    def _metrics(self, features: Any, targets: Any) -> dict[str, float]:
        if self.task == "regression":
            predictions = self.model.predict(features, batch_size=self.batch_size, verbose=0)
            return regression_metrics(targets, np.asarray(keras.ops.convert_to_numpy(predictions)))
        return self._classification(features, targets)

    def _classification(self, features: Any, targets: Any) -> dict[str, float]:
        predictions = self.model.predict(features, batch_size=self.batch_size, verbose=0)
        scores = np.asarray(keras.ops.convert_to_numpy(predictions))
        if scores.ndim == 2 and scores.shape[1] > 1:
            width, predicted = scores.shape[1], np.argmax(scores, axis=1)
        else:
            scores = scores.reshape(-1)
            width, predicted = 2, (scores > self.threshold).astype(int)
        names = np.asarray(self.labels if self.labels is not None else range(width))
        if len(names) != width:
            raise TrackingError(f"the model predicts {width} classes but labels has {len(names)}")
        truth = np.asarray(targets)
        truth = np.argmax(truth, axis=1) if truth.ndim == 2 and truth.shape[1] > 1 else truth
        return classification_metrics(
            names[truth.reshape(-1).astype(int)], names[predicted], scores, labels=list(names)
        )
