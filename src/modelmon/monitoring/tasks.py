"""What monitoring counts of a model's outputs, decided by its task, in one place.

Each task (``types.Task``) has one class here, registered once with the tasks it serves. A
served version's monitor builds the instance for its signature's task; the instance creates
its series at zero (``families`` name them), counts each group of model calls, and tells the
drift scorer which of its arrays are the prediction distribution. Nothing above this module
asks which task a model has.

The label side of a task is counted by the feedback join into the version's
``QualityMetrics``: the confusion cells of a classifier, the sums of ``RegressionLabels`` of
a regressor.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Protocol

import numpy as np

from modelmon.errors import RegistryError
from modelmon.monitoring import families
from modelmon.monitoring.array_metrics import ArrayCounter, ArrayHistogram, ArrayMetrics
from modelmon.registry import calibration
from modelmon.registry.calibration import Calibration
from modelmon.registry.profile import CONFIDENCE_BUCKETS, ReferenceProfile, interval_labels
from modelmon.types import FeatureBatch, ModelOutput, Signature, Task


class ErrorEstimator(Protocol):
    """What monitoring calls of a regressor's label-free error estimate
    (``registry.loss_estimator.LossEstimator``)."""

    def expected_errors(self, features: FeatureBatch, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...


@dataclass(slots=True)
class PredictionDistribution:
    """A cumulative count array of the outputs, and the validation data's shares of it:
    what prediction drift (``modelmon_prediction_drift{output}``) compares."""

    output: str
    counts: np.ndarray
    reference_shares: np.ndarray | None


class TaskCounts(ABC):
    """The output-side series of one model version, for its task."""

    tasks: ClassVar[tuple[Task, ...]]

    def __init__(
        self,
        arrays: ArrayMetrics,
        base_labels: list[str],
        signature: Signature,
        profile: ReferenceProfile | None,
        calibration_map: Calibration | None,
        loss_estimator: ErrorEstimator | None = None,
    ) -> None:
        self.arrays = arrays
        self.base_labels = base_labels
        self.signature = signature

    @abstractmethod
    def count(self, output: ModelOutput, batch: FeatureBatch | None = None) -> None:
        """Count a group of model calls' outputs (on one thread at a time); ``batch``: their
        features, for a task that reads them."""

    @abstractmethod
    def distributions(self) -> list[PredictionDistribution]:
        """The prediction distributions drift is scored on."""

    def settle(self) -> None:  # noqa: B027 (optional: most tasks count everything in ``count``)
        """Finish work ``count`` left pending because it is too slow for the event loop
        (from any thread, before the counts are read: ``BatchAccounting.flush``)."""


_TASKS: dict[Task, type[TaskCounts]] = {}

#: A regressor's queued rows are estimated in parts of about this many rows (whole groups:
#: a group is one ``BatchAccounting`` flush, 0.1 s of traffic). One estimate over everything
#: queued since the last settle (a second of traffic, or more when the thread falls behind)
#: got slower per row as it grew, from its temporaries: on the Ridge case of
#: benchmarks/serving.py, CPU time, 4.6-4.7 µs per row from 250 to 4,000 rows, 5.1-6.4 at
#: 20,000 and 11 at 140,000.
SETTLE_ROWS = 2048


def register_task(cls: type[TaskCounts]) -> type[TaskCounts]:
    for task in cls.tasks:
        _TASKS[task] = cls
    return cls


def task_counts_for(task: Task) -> type[TaskCounts]:
    try:
        return _TASKS[task]
    except KeyError:
        raise RegistryError(f"modelmon does not monitor {task} models yet") from None


def supported_tasks() -> list[Task]:
    return list(_TASKS)


def confusion_cells(classes: list[str]) -> list[list[str]]:
    """(actual, predicted) label pairs, actual-major: cell index = actual * C + predicted."""
    return [[a, p] for a in classes for p in classes]


@register_task
class ClassificationCounts(TaskCounts):
    """Predicted rows per class, the top-class probability, and the expected confusion
    cells of the label-free estimate (CBPE: each row adds its calibrated probabilities to
    the column of the class it was predicted as)."""

    tasks = (Task.BINARY, Task.MULTICLASS)

    def __init__(
        self,
        arrays: ArrayMetrics,
        base_labels: list[str],
        signature: Signature,
        profile: ReferenceProfile | None,
        calibration_map: Calibration | None,
        loss_estimator: ErrorEstimator | None = None,
    ) -> None:
        super().__init__(arrays, base_labels, signature, profile, calibration_map)
        classes = [str(c) for c in signature.class_labels]
        self.calibration = calibration_map
        add: Callable = arrays.add
        self.predictions: ArrayCounter = add(families.PREDICTIONS, ArrayCounter(base_labels, [[c] for c in classes]))
        self.confidence: ArrayHistogram = add(families.PREDICTION_CONFIDENCE, ArrayHistogram(base_labels, CONFIDENCE_BUCKETS))
        self.expected_confusion: ArrayCounter = add(
            families.EXPECTED_CONFUSION, ArrayCounter(base_labels, confusion_cells(classes))
        )
        prediction = profile.prediction if profile is not None else None
        self.reference_class = None if prediction is None else np.array(prediction.class_shares)
        self.reference_confidence = None if prediction is None else np.array(prediction.confidence_shares)
        if self.reference_class is not None:
            ratio = add(families.REFERENCE_CLASS_RATIO, ArrayCounter(base_labels, [[c] for c in classes]))
            ratio.counts[:] = self.reference_class

    def count(self, output: ModelOutput, batch: FeatureBatch | None = None) -> None:
        proba = output.probabilities
        if proba is None:
            raise TypeError("a classifier's output needs probabilities")
        top = output.predicted
        confidence = proba[np.arange(len(top)), top]
        cells = calibration.expected_confusion(calibration.apply(self.calibration, proba), top)
        self.expected_confusion.add(cells.ravel())
        self.predictions.add(np.bincount(top, minlength=len(self.predictions.counts)))
        self.confidence.observe(confidence)

    def distributions(self) -> list[PredictionDistribution]:
        return [
            PredictionDistribution("class", self.predictions.counts, self.reference_class),
            PredictionDistribution("confidence", self.confidence.bucket_counts, self.reference_confidence),
        ]


@register_task
class RegressionCounts(TaskCounts):
    """A regressor's predictions counted into the reference's prediction bins (so prediction
    drift is scored as a feature's), and the label-free estimate: each prediction's expected
    absolute and squared error, from the estimator fitted at registration, summed."""

    tasks = (Task.REGRESSION,)

    def __init__(
        self,
        arrays: ArrayMetrics,
        base_labels: list[str],
        signature: Signature,
        profile: ReferenceProfile | None,
        calibration_map: Calibration | None,
        loss_estimator: ErrorEstimator | None = None,
    ) -> None:
        super().__init__(arrays, base_labels, signature, profile, calibration_map)
        add: Callable = arrays.add
        reference = profile.predicted_values if profile is not None else None
        # Without a reference, one bin: the count of predictions, still present from zero.
        self.edges = np.asarray(reference.edges if reference is not None else [], dtype=np.float64)
        labels = reference.bin_labels if reference is not None else interval_labels(self.edges)
        self.bins: ArrayCounter = add(families.PREDICTION_BIN, ArrayCounter(base_labels, [[b] for b in labels]))
        # A NaN prediction has no bin: counted here, so that bins + missing = rows predicted.
        self.missing: ArrayCounter = add(families.PREDICTION_MISSING, ArrayCounter(base_labels, [[]]))
        self.reference_shares = None if reference is None else np.asarray(reference.shares, dtype=np.float64)
        if self.reference_shares is not None:
            ratio = add(families.REFERENCE_PREDICTION_RATIO, ArrayCounter(base_labels, [[b] for b in labels]))
            ratio.counts[:] = self.reference_shares
        self.estimator = loss_estimator
        # Rows counted but not yet estimated: the estimate (0.7-2.5 µs of CPU per row, mostly
        # onnxruntime with the GIL released) is left to the scrape's and the drift scorer's
        # threads (``settle``), off the event loop, which counts every 0.1 s on the request
        # path (issue 18: the serving cost at c=1), unless that loop is saturated
        # (``batch_accounting``: then the loop settles it when it counts).
        self._unestimated: list[tuple[FeatureBatch, np.ndarray]] = []
        self._unestimated_lock = threading.Lock()  # the list: held for an append or a swap
        self._estimate_lock = threading.Lock()  # one settle at a time, so no sum is lost
        self.estimated: ArrayCounter = add(families.REGRESSION_ESTIMATED, ArrayCounter(base_labels, [[]]))
        self.expected_absolute: ArrayCounter = add(families.REGRESSION_EXPECTED_ABSOLUTE_ERROR, ArrayCounter(base_labels, [[]]))
        self.expected_squared: ArrayCounter = add(families.REGRESSION_EXPECTED_SQUARED_ERROR, ArrayCounter(base_labels, [[]]))

    def count(self, output: ModelOutput, batch: FeatureBatch | None = None) -> None:
        predicted = output.predicted
        present = predicted[~np.isnan(predicted)]
        if len(present) < len(predicted):
            self.missing.counts[0] += len(predicted) - len(present)
        self.bins.add(np.bincount(np.searchsorted(self.edges, present, side="right"), minlength=len(self.bins.counts)))
        if self.estimator is not None and batch is not None and len(predicted):
            with self._unestimated_lock:
                self._unestimated.append((batch, predicted))

    def settle(self) -> None:
        if self.estimator is None:
            return
        with self._estimate_lock:
            with self._unestimated_lock:
                pending, self._unestimated = self._unestimated, []
            part: list[tuple[FeatureBatch, np.ndarray]] = []
            rows = 0
            for group in pending:
                part.append(group)
                rows += len(group[1])
                if rows >= SETTLE_ROWS:
                    self._estimate(part)
                    part, rows = [], 0
            if part:
                self._estimate(part)

    def _estimate(self, pending: list[tuple[FeatureBatch, np.ndarray]]) -> None:
        assert self.estimator is not None
        batch = FeatureBatch.concat([b for b, _ in pending])
        absolute, squared = self.estimator.expected_errors(batch, np.concatenate([p for _, p in pending]))
        # A row without a finite estimate (a NaN prediction) is left out of all three
        # sums: one NaN would make the counters NaN for good.
        finite = np.isfinite(absolute) & np.isfinite(squared)
        self.estimated.counts[0] += int(finite.sum())
        self.expected_absolute.counts[0] += float(np.sum(absolute[finite]))
        self.expected_squared.counts[0] += float(np.sum(squared[finite]))

    def distributions(self) -> list[PredictionDistribution]:
        return [PredictionDistribution("value", self.bins.counts, self.reference_shares)]


class RegressionLabels:
    """A regressor's labelled predictions as sums that add up across replicas and windows:
    their count, the sums of errors (predicted minus true), absolute and squared errors, and
    of the true values and their squares. Over any window and set of replicas, MAE = sum of
    absolute errors / count, RMSE = sqrt(squared errors / count), bias = errors / count and
    R² = 1 - squared errors / (sum of squared targets - sum of targets² / count)."""

    def __init__(self, arrays: ArrayMetrics, base_labels: list[str]) -> None:
        self.sums: list[ArrayCounter] = [
            arrays.add(family, ArrayCounter(base_labels, [[]])) for family in families.REGRESSION_LABEL_FAMILIES
        ]

    def count(self, predicted: np.ndarray, actual: np.ndarray) -> None:
        error = predicted - actual
        values = (len(error), error.sum(), np.abs(error).sum(), (error**2).sum(), actual.sum(), (actual**2).sum())
        for series, value in zip(self.sums, values, strict=True):
            series.counts[0] += float(value)
