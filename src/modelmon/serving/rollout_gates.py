"""The gates of a rollout, written once: what each compares, how it reads a served
version's monitor, its default margin, and the sequential test that decides it.

Every gate but one compares one *bad share* of the candidate with the primary's, each a
mean of values in [0, 1]: requests answered with a server error, requests slower than the
primary's p99, rows' expected error from CBPE (one minus a row's calibrated probability
of being right), labelled rows predicted wrong, a regressor's rows whose expected |error|
exceeds the primary's validation MAE. The drift gate compares each version's *prediction
drift*: the total variation distance between its predictions on the traffic and on its
own validation rows. The statistic is the always-valid interval of the difference,
candidate minus primary (``monitoring.sequential``), at the gate's share of the rollout's
false-alarm rate:

- **fail** (roll back) when the interval is above 0: the candidate is worse (for drift,
  above the margin: a version's predictions moving from its validation's is not a defect
  by itself, only a candidate that moves surely more than the primary by the margin is);
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
from modelmon.monitoring.sequential import difference_interval, distance_interval
from modelmon.monitoring.tasks import ClassificationCounts, ErrorEstimator, RegressionCounts
from modelmon.registry.card import ModelCard
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


#: The drift gate compares a task's first prediction distribution (``TaskCounts.distributions``):
#: a classifier's predicted classes, a regressor's prediction bins. Not a classifier's 13
#: confidence buckets: each bin widens the interval, and with the validation shares' own
#: uncertainty counted, the gate needs (at the default margin, ``rollout_spec._drift_can_decide``)
#: about 460 validation rows for 2 or 3 classes, 3,500 for the confidence buckets.
DRIFT_OUTPUT = 0


def _predictions(runtime: ModelRuntime) -> np.ndarray:
    """A version's predictions so far, counted into the bins of its drift distribution, and
    for a regressor its NaN predictions last (none without a reference)."""
    task = runtime.monitor.task
    found = task.distributions()[DRIFT_OUTPUT]
    if found.reference_shares is None:
        return np.zeros(0)
    counts = found.counts.astype(np.float64)
    return np.append(counts, task.missing.counts[0]) if isinstance(task, RegressionCounts) else counts


def _prediction_reference(runtime: ModelRuntime) -> tuple[np.ndarray, float] | None:
    """The validation rows' shares of the cells ``_predictions`` counts, and how many
    validation rows they were counted on."""
    shares = _validation_shares(runtime.card)
    return None if shares is None else (shares, validation_rows(runtime.card))


def _validation_shares(card: ModelCard) -> np.ndarray | None:
    """A classifier's validation class shares; a regressor's share of each prediction bin,
    then of NaN predictions (so that a candidate answering NaN shows as drift)."""
    profile = card.reference_profile
    if profile is None:
        return None
    if profile.prediction is not None:
        return np.asarray(profile.prediction.class_shares, dtype=np.float64)
    values = profile.predicted_values
    if values is None:
        return None
    return np.append(np.asarray(values.shares, dtype=np.float64) * (1 - values.missing_share), values.missing_share)


def has_prediction_reference(card: ModelCard) -> bool:
    """Whether a registered version has its outputs on held-out validation rows (what the
    drift gate compares its traffic's with). Outputs on the training rows would not do: a
    model that overfits is more confident there than on any traffic, so it would look
    drifted on the day it is deployed."""
    profile = card.reference_profile
    return profile is not None and profile.predictions_from_validation and _validation_shares(card) is not None


def validation_rows(card: ModelCard) -> float:
    """The rows a version's validation prediction shares were counted on (0 without them)."""
    profile = card.reference_profile
    if profile is None:
        return 0.0
    if profile.prediction is not None:
        return float(profile.prediction.rows)
    return float(profile.predicted_values.count) if profile.predicted_values is not None else 0.0


def drift_interval(counts: np.ndarray, reference: tuple[np.ndarray, float] | None, alpha: float) -> tuple[float, float]:
    """The always-valid interval of a version's prediction drift: the total variation
    distance between the distribution behind ``counts`` and its validation predictions'
    (shares counted on that many rows, so uncertain themselves)."""
    if reference is None or len(counts) != len(reference[0]):
        return 0.0, 1.0  # no reference (the start refuses the gate then): never any evidence
    shares, rows = reference
    return distance_interval(counts.tolist(), shares.tolist(), alpha, rows or None)


def drift_floor(card: ModelCard, alpha: float) -> float:
    """The top of a version's drift interval on unlimited traffic exactly like its validation
    rows: the uncertainty its validation shares alone leave. The gate can pass only a
    candidate whose floor is below the margin."""
    shares = _validation_shares(card)
    if shares is None:
        return 1.0
    return distance_interval((shares * 1e12).tolist(), shares.tolist(), alpha, validation_rows(card) or None)[1]


def _compare_drift(candidate: np.ndarray, primary: np.ndarray, alpha: float, margin: float, gate: str,
                   references: tuple[tuple[np.ndarray, float] | None, tuple[np.ndarray, float] | None]) -> GateResult:
    """Candidate's prediction drift minus the primary's, each version's interval at alpha / 2,
    so both hold at all times at once with probability at least 1 - alpha. The two versions
    see the same traffic (a weight canary or a shadow), so the primary's drift is what the
    traffic's own change does to a model's predictions, and the excess is the candidate's."""
    c_low, c_high = drift_interval(candidate, references[0], alpha / 2)
    p_low, p_high = drift_interval(primary, references[1], alpha / 2)
    low, high = c_low - p_high, c_high - p_low
    verdict: Verdict = "fail" if low > margin else "pass" if high <= margin else "wait"
    # (observed drift x rows, rows): bad / count is the observed drift, as a share's is the share.
    c, p = (_observed(candidate, references[0]), _observed(primary, references[1]))
    return GateResult(gate, verdict, low, high, margin, c, p, {
        "candidate_drift": [c_low, c_high], "primary_drift": [p_low, p_high]})


def _observed(counts: np.ndarray, reference: tuple[np.ndarray, float] | None) -> tuple[float, float]:
    """(observed drift x predicted rows, predicted rows) of a version: the total variation
    between its shares so far and its validation predictions'."""
    rows = float(counts.sum())
    if reference is None or len(counts) != len(reference[0]) or rows == 0:
        return 0.0, rows
    shares = reference[0] / reference[0].sum()
    return 0.5 * float(np.abs(counts / rows - shares).sum()) * rows, rows


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
    compare: Callable[..., GateResult]
    #: Only for regressors (their label-free error estimate).
    regressor_only: bool = False
    #: For a gate comparing each version with its own reference (drift): that reference,
    #: passed to ``compare`` after the gate's name; both versions must be registered with it.
    reference: Callable[[ModelRuntime], tuple[np.ndarray, float] | None] | None = None

    def evaluate(self, candidate: ModelRuntime, primary: ModelRuntime, since: tuple[np.ndarray, np.ndarray],
                 alpha: float, margin: float) -> GateResult:
        """The gate on the two versions' evidence since ``since`` (their reads when the
        rollout began here)."""
        counts = (self.read(candidate) - since[0], self.read(primary) - since[1])
        if self.reference is None:
            return self.compare(*counts, alpha, margin, self.name)
        return self.compare(*counts, alpha, margin, self.name, (self.reference(candidate), self.reference(primary)))

    def applies_to(self, primary: ModelCard, candidate: ModelCard) -> str | None:
        """Why the gate cannot judge these two versions, or None when it can."""
        task = candidate.signature.task
        if self.classifier_only and not task.is_classification:
            return f"{self.name!r} needs a classifier; {candidate.name} is a {task} model"
        if self.regressor_only and task.is_classification:
            return f"{self.name!r} needs a regressor; {candidate.name} is a {task} model"
        if self.reference is not None:
            missing = [card.version for card in (primary, candidate) if not has_prediction_reference(card)]
            if missing:
                return (f"{self.name!r} compares each version's predictions with its outputs on its validation rows; "
                        f"version(s) {missing} of {candidate.name} were registered without validation data")
        return None


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
        Gate("drift", "Prediction drift: the total variation distance between a version's predictions on the traffic "
             "and on its own validation rows (a classifier's class shares, a regressor's prediction bins). Fails only "
             "when the candidate's surely exceeds the primary's by the margin.",
             "predicted rows", 0.2, False, _predictions, _compare_drift, reference=_prediction_reference),
    )
}
#: The gates a rollout uses unless told otherwise (those that apply to its versions).
DEFAULT_GATES = ("errors", "latency", "estimated_quality", "estimated_error", "drift")
