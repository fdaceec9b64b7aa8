"""The gates of a rollout, written once: what each compares, how it reads a served
version's monitor, its default margin, and the sequential test that decides it.

Every gate compares one *bad share* of the candidate with the primary's, each a mean of
values in [0, 1]: requests answered with a server error, requests slower than the
primary's p99, rows' expected error from CBPE (one minus a row's calibrated probability
of being right), labelled rows predicted wrong, a regressor's rows whose expected |error|
exceeds the primary's validation MAE. The statistic is the always-valid interval
of the difference, candidate minus primary (``monitoring.sequential``), at the gate's
share of the rollout's false-alarm rate:

- **fail** (roll back) when the interval is above 0: the candidate is worse;
- **pass** (the step's evidence holds) when the interval's top is at most the margin:
  the candidate is worse by less than the margin, if at all;
- otherwise **wait** for more evidence.

A gate reads cumulative counters, so it keeps a vector per version and the evaluator
subtracts the vector it read when the rollout began (``Gate.read``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from modelmon.monitoring.metrics import GRPC_INFER, LATENCY_BUCKETS
from modelmon.monitoring.sequential import difference_interval
from modelmon.monitoring.tasks import ClassificationCounts, ErrorEstimator, RegressionCounts
from modelmon.serving.runtime import ModelRuntime
from modelmon.types import FeatureBatch

Verdict = Literal["fail", "pass", "wait"]
#: The endpoints whose requests a model answers (the others are metadata); gRPC's exists
#: only on a server serving gRPC.
ANSWERING = ("infer", "predict", GRPC_INFER)
#: The latency gate's tail: the share of the primary's requests above its threshold.
LATENCY_TAIL = 0.01


@dataclass(slots=True)
class GateResult:
    gate: str
    verdict: Verdict
    low: float
    high: float
    margin: float
    candidate: tuple[float, float]  # (bad, count) since the rollout began here
    primary: tuple[float, float]
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict, "low": self.low, "high": self.high, "margin": self.margin,
            "candidate": {"bad": self.candidate[0], "count": self.candidate[1]},
            "primary": {"bad": self.primary[0], "count": self.primary[1]}, **self.detail,
        }


def answered_requests(runtime: ModelRuntime) -> float:
    """Requests a version answered on its model endpoints, whatever their status."""
    return sum(child.get() for (endpoint, _), child in runtime.metrics._requests.items() if endpoint in ANSWERING)


def _errors(runtime: ModelRuntime) -> np.ndarray:
    bad = sum(c.get() for (e, code), c in runtime.metrics._requests.items() if e in ANSWERING and code >= 500)
    return np.array([bad, answered_requests(runtime)])


def _latency(runtime: ModelRuntime) -> np.ndarray:
    # Per-bucket (not cumulative) counts of the answering endpoints, the last +Inf.
    total = np.zeros(len(LATENCY_BUCKETS) + 1)
    for endpoint in ANSWERING:
        child = runtime.metrics.durations.get(endpoint)
        if child is None:
            continue
        total += child.values[child.offset : child.offset + len(LATENCY_BUCKETS) + 1]
    return total


def _estimated_errors(runtime: ModelRuntime) -> np.ndarray:
    task = runtime.monitor.task
    if not isinstance(task, ClassificationCounts):
        return np.zeros(2)
    cells = task.expected_confusion.counts
    classes = round(len(cells) ** 0.5)
    rows = float(cells.sum())  # each row adds probabilities summing to 1
    return np.array([rows - float(np.trace(cells.reshape(classes, classes))), rows])


def _labelled_errors(runtime: ModelRuntime) -> np.ndarray:
    quality = runtime.metrics.quality
    if quality is None or quality.regression is not None:
        return np.zeros(2)
    cells = quality.confusion.counts
    classes = round(len(cells) ** 0.5)
    rows = float(cells.sum())
    return np.array([rows - float(np.trace(cells.reshape(classes, classes))), rows])


class Exceedances:
    """A regressor version's label-free error estimate (``registry.loss_estimator``), wrapped
    to also count the rows whose expected |error| exceeds ``threshold``: (rows above, rows
    estimated). The monitor keeps only sums of the estimate, which are unbounded; this share
    is a mean of 0/1 values, so the gates' interval applies to it. Called by the monitor's
    settle, one call at a time (its lock)."""

    def __init__(self, inner: ErrorEstimator, threshold: float) -> None:
        self.inner = inner
        self.threshold = threshold
        self.counts = np.zeros(2)

    def expected_errors(self, features: FeatureBatch, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        absolute, squared = self.inner.expected_errors(features, predicted)
        finite = np.isfinite(absolute) & np.isfinite(squared)  # the rows the monitor counts
        self.counts += (np.count_nonzero(absolute[finite] > self.threshold), np.count_nonzero(finite))
        return absolute, squared


def watch_exceedances(primary: ModelRuntime, candidate: ModelRuntime) -> None:
    """Count, in both versions, the rows whose expected |error| exceeds the primary's mean
    absolute error on its validation rows (its estimator's reference error): what the
    ``estimated_error`` gate compares. A version without an estimator counts nothing."""
    reference = getattr(_estimator(primary), "reference", None)
    if reference is None:
        return
    for runtime in (primary, candidate):
        task, inner = runtime.monitor.task, _estimator(runtime)
        if not isinstance(task, RegressionCounts) or inner is None:
            continue
        if isinstance(task.estimator, Exceedances) and task.estimator.threshold == reference[0]:
            continue
        task.estimator = Exceedances(inner, float(reference[0]))  # a new threshold counts afresh


def _estimator(runtime: ModelRuntime) -> Any:
    """A regressor version's own estimator (unwrapped), or None."""
    estimator = getattr(runtime.monitor.task, "estimator", None)
    return estimator.inner if isinstance(estimator, Exceedances) else estimator


def _exceedances(runtime: ModelRuntime) -> np.ndarray:
    estimator = getattr(runtime.monitor.task, "estimator", None)
    return estimator.counts.copy() if isinstance(estimator, Exceedances) else np.zeros(2)


def _compare_shares(candidate: np.ndarray, primary: np.ndarray, alpha: float, margin: float, gate: str) -> GateResult:
    c, p = (float(candidate[0]), float(candidate[1])), (float(primary[0]), float(primary[1]))
    low, high = difference_interval(c, p, alpha)
    return GateResult(gate, _verdict(low, high, margin), low, high, margin, c, p, {})


def _compare_latency(candidate: np.ndarray, primary: np.ndarray, alpha: float, margin: float, gate: str) -> GateResult:
    """The share of requests slower than the primary's p99, candidate minus primary. The
    threshold is the histogram bound where the primary's share above first falls to 1%;
    it moves with the data, so every bound is tested at once (alpha split among them) and
    the one chosen is covered whichever it is."""
    bounds = len(LATENCY_BUCKETS)
    alpha_each = alpha / bounds
    p_total, c_total = float(primary.sum()), float(candidate.sum())
    p_above = p_total - np.cumsum(primary)[:bounds]  # requests above bound i
    c_above = c_total - np.cumsum(candidate)[:bounds]
    if p_total > 0:
        index = int(np.argmax(p_above <= LATENCY_TAIL * p_total)) if (p_above <= LATENCY_TAIL * p_total).any() else bounds - 1
    else:
        index = bounds - 1
    c, p = (float(c_above[index]), c_total), (float(p_above[index]), p_total)
    low, high = difference_interval(c, p, alpha_each)
    return GateResult(gate, _verdict(low, high, margin), low, high, margin, c, p, {"threshold_seconds": LATENCY_BUCKETS[index]})


def _verdict(low: float, high: float, margin: float) -> Verdict:
    if low > 0:
        return "fail"
    return "pass" if high <= margin else "wait"


@dataclass(frozen=True, slots=True)
class Gate:
    name: str
    description: str
    #: What one value of the bad share is.
    counts: str
    default_margin: float
    #: Only for classifiers (CBPE and the confusion matrix).
    classifier_only: bool
    read: Callable[[ModelRuntime], np.ndarray]
    compare: Callable[[np.ndarray, np.ndarray, float, float, str], GateResult]
    #: Only for regressors (their label-free error estimate).
    regressor_only: bool = False

    def evaluate(self, candidate: np.ndarray, primary: np.ndarray, alpha: float, margin: float) -> GateResult:
        return self.compare(candidate, primary, alpha, margin, self.name)


GATES: dict[str, Gate] = {
    gate.name: gate
    for gate in (
        Gate("errors", "Requests answered with a server error (5xx): the model failed.",
             "answered requests", 0.01, False, _errors, _compare_shares),
        Gate("latency", "Requests slower than the primary's p99 (a bucket bound of modelmon_request_duration_seconds).",
             "answered requests", 0.05, False, _latency, _compare_latency),
        Gate("estimated_quality", "Expected error from CBPE, before labels: one minus each row's calibrated probability of its predicted class.",
             "predicted rows", 0.02, True, _estimated_errors, _compare_shares),
        Gate("quality", "Labelled rows predicted wrong (realized quality, as labels arrive).",
             "labelled rows", 0.02, True, _labelled_errors, _compare_shares),
        Gate("estimated_error", "A regressor's rows whose expected |error| (its label-free estimate) exceeds the "
             "primary's validation MAE, before labels.",
             "estimated rows", 0.05, False, _exceedances, _compare_shares, regressor_only=True),
    )
}
#: The gates a rollout uses unless told otherwise.
DEFAULT_GATES = ("errors", "latency", "estimated_quality", "estimated_error")
