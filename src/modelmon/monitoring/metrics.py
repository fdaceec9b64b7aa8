"""The serving and prediction metrics of the contract in DESIGN.md.

Each server owns one ``CollectorRegistry`` (no global state, so tests and benchmarks can
run several servers in one process). Label children are bound once when a model version
loads: ``.labels()`` per request costs five times an ``inc()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from modelmon.errors import ERROR_REASONS
from modelmon.monitoring.accounting import FeatureAccountant
from modelmon.monitoring.array_metrics import ArrayCounter, ArrayHistogram, ArrayMetrics
from modelmon.monitoring.drift import DriftMonitor, DriftSettings
from modelmon.monitoring.drift_exporter import DriftExporter
from modelmon.monitoring.profile import ReferenceProfile
from modelmon.registry.signature import Signature

# `_created` series double the exposition and confuse `increase()` users; the contract has none.
prometheus_client.disable_created_metrics()

#: Whole-request latency: from 100 us (ONNX on one row) to a minute (a big batch on a busy
#: CPU), so p99 is never clamped at the top bucket.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

#: Model label for requests naming a model that is not served: request paths must never
#: become label values.
UNKNOWN_MODEL = "_unknown_"

#: Endpoint label values.
ENDPOINTS = ("infer", "predict", "metadata", "ready", "feedback")
#: The status codes each endpoint of a served model can answer, created at zero at load so
#: that `increase()` sees the first error too. (404s are counted under UNKNOWN_MODEL.)
MODEL_STATUS_CODES = {
    "infer": (200, 400, 401, 413, 500),
    "predict": (200, 400, 401, 413, 500),
    "metadata": (200,),
    "ready": (200, 503),
    "feedback": (200, 400, 401, 409, 413, 503),
}
#: Time from a prediction to its ground-truth label: seconds to a month.
LABEL_DELAY_BUCKETS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400)
FEEDBACK_OUTCOMES = ("matched", "duplicate", "unknown_id")


class ServerMetrics:
    """Every metric family of one server."""

    def render(self) -> bytes:
        """The whole exposition: prometheus_client's families, then the array-backed and
        drift families, which render themselves (see ``exposition``). Work queued for bulk
        counting (``batch_accounting``) is counted first, so the counts are exact."""
        for flush in list(self.flushers.values()):
            flush()
        return generate_latest(self.registry) + self.arrays.render().encode() + self.drift.render().encode()

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter(
            "modelmon_requests", "HTTP requests answered.",
            ["model", "version", "endpoint", "code"], registry=r,
        )
        self.request_duration = Histogram(
            "modelmon_request_duration_seconds", "Whole request, from body read to response.",
            ["model", "version", "endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.request_errors = Counter(
            "modelmon_request_errors", "Rejected or failed requests, by reason.",
            ["model", "version", "reason"], registry=r,
        )
        self.inflight = Gauge(
            "modelmon_inflight_requests", "Requests in progress.", ["model"], registry=r
        )
        self.model_info = Gauge(
            "modelmon_model_info", "Loaded model versions (always 1).",
            ["model", "version", "flavor"], registry=r,
        )
        self.baseline_metric = Gauge(
            "modelmon_baseline_metric", "Validation metrics recorded at registration.",
            ["model", "version", "metric"], registry=r,
        )
        self.feedback = Counter(
            "modelmon_feedback", "Ground-truth labels received, by outcome.",
            ["model", "version", "outcome"], registry=r,
        )
        self.label_delay = Histogram(
            "modelmon_label_delay_seconds", "Time from a prediction to its label.",
            ["model", "version"], buckets=LABEL_DELAY_BUCKETS, registry=r,
        )
        self.arrays = ArrayMetrics()
        self.confusion_family = self.arrays.family(
            "modelmon_confusion", "Labelled predictions, by cell.", "counter",
            ["model", "version", "actual", "predicted"],
        )
        self.expected_confusion_family = self.arrays.family(
            "modelmon_expected_confusion",
            "Expected cells from calibrated probabilities (label-free estimate).", "counter",
            ["model", "version", "actual", "predicted"],
        )
        self.predictions_family = self.arrays.family(
            "modelmon_predictions", "Predicted rows per class.", "counter", ["model", "version", "class"]
        )
        # Observed in bulk with the rest of the monitoring work (``batch_accounting``).
        self.queue_duration_family = self.arrays.family(
            "modelmon_queue_duration_seconds", "Time a request's rows waited for their batch.", "histogram", ["model", "version"]
        )
        self.inference_duration_family = self.arrays.family(
            "modelmon_inference_duration_seconds", "Model call per batch.", "histogram", ["model", "version"]
        )
        self.batch_size_family = self.arrays.family(
            "modelmon_batch_size", "Rows per model call.", "histogram", ["model", "version"]
        )
        self.confidence_family = self.arrays.family(
            "modelmon_prediction_confidence", "Top-class probability.", "histogram", ["model", "version"]
        )
        self.bin_family = self.arrays.family(
            "modelmon_feature_bin", "Live rows per reference bin of each feature.", "counter",
            ["model", "version", "feature", "bin"],
        )
        self.reference_bin_family = self.arrays.family(
            "modelmon_reference_bin_ratio", "The training data's share of each bin.", "gauge",
            ["model", "version", "feature", "bin"],
        )
        self.missing_family = self.arrays.family(
            "modelmon_feature_missing", "Missing values per feature.", "counter", ["model", "version", "feature"]
        )
        self.unseen_family = self.arrays.family(
            "modelmon_feature_unseen",
            "Values never seen in training: a new category, or a number outside the training range.",
            "counter", ["model", "version", "feature"],
        )
        self.reference_class_family = self.arrays.family(
            "modelmon_reference_class_ratio", "Class shares of the model's predictions on the validation data.",
            "gauge", ["model", "version", "class"],
        )
        self.drift = DriftExporter()
        self._bound: dict[tuple[str, str], tuple[ModelMetrics, str, list[str]]] = {}
        #: Per model version: counts queued work into the arrays (see ``render``).
        self.flushers: dict[tuple[str, str], Callable[[], None]] = {}
        self.unknown_model = self.bind_unknown_model()

    def bind(
        self,
        model: str,
        version: str,
        flavor: str,
        classes: list[str],
        baseline: dict[str, float] | None = None,
    ) -> ModelMetrics:
        """Create every series of one model version at zero and return its bound children."""
        self.model_info.labels(model, version, flavor).set(1)
        for metric, value in (baseline or {}).items():
            self.baseline_metric.labels(model, version, metric).set(value)
        base = [model, version]
        bound = ModelMetrics(
            server=self,
            model=model,
            version=version,
            inflight=self.inflight.labels(model),
            errors={reason: self.request_errors.labels(*base, reason) for reason in ERROR_REASONS},
            durations={e: self.request_duration.labels(*base, e) for e in ENDPOINTS},
            queue_duration=self.arrays.add(self.queue_duration_family, ArrayHistogram(base, LATENCY_BUCKETS)),
            inference_duration=self.arrays.add(self.inference_duration_family, ArrayHistogram(base, LATENCY_BUCKETS)),
            batch_size=self.arrays.add(self.batch_size_family, ArrayHistogram(base, BATCH_SIZE_BUCKETS)),
            predictions=self.arrays.add(self.predictions_family, ArrayCounter(base, [[str(c)] for c in classes])),
            confidence=self.arrays.add(self.confidence_family, ArrayHistogram(base, CONFIDENCE_BUCKETS)),
        )
        bound.create_request_series(MODEL_STATUS_CODES)
        self._bound[(model, version)] = (bound, flavor, sorted(baseline or {}))
        bound.quality = self.bind_quality(model, version, classes)
        bound.expected_confusion = self.arrays.add(self.expected_confusion_family, ArrayCounter(base, confusion_cells(classes)))
        return bound

    def bind_quality(self, model: str, version: str, classes: list[str]) -> QualityMetrics:
        """Label-side series of one version. Also made for a version that is not loaded here,
        when a label arrives for one of its predictions (from the store)."""
        base = [model, version]
        return QualityMetrics(
            confusion=self.arrays.add(self.confusion_family, ArrayCounter(base, confusion_cells(classes))),
            feedback={o: self.feedback.labels(*base, o) for o in FEEDBACK_OUTCOMES},
            label_delay=self.label_delay.labels(*base),
        )

    def unbind(self, model: str, version: str) -> None:
        """Remove every series of an unloaded version, so /metrics shows only what is served."""
        bound, flavor, baseline = self._bound.pop((model, version))
        self.flushers.pop((model, version), None)
        base = (model, version)
        for endpoint, code in bound._requests:
            self.requests.remove(*base, endpoint, str(code))
        for reason in bound.errors:
            self.request_errors.remove(*base, reason)
        for endpoint in bound.durations:
            self.request_duration.remove(*base, endpoint)
        self.label_delay.remove(*base)
        for outcome in FEEDBACK_OUTCOMES:
            self.feedback.remove(*base, outcome)
        for metric in baseline:
            self.baseline_metric.remove(*base, metric)
        self.model_info.remove(*base, flavor)
        self.arrays.remove_series(list(base))
        self.drift.remove(model, version)

    def bind_unknown_model(self) -> RequestMetrics:
        """Requests naming a model or version that is not served: only their count, their
        latency and the one error they can meet."""
        base = [UNKNOWN_MODEL, ""]
        bound = RequestMetrics(
            server=self,
            model=UNKNOWN_MODEL,
            version="",
            errors={"model_not_found": self.request_errors.labels(*base, "model_not_found")},
            durations={e: self.request_duration.labels(*base, e) for e in ENDPOINTS},
        )
        bound.create_request_series({e: (404,) for e in ENDPOINTS})
        return bound

    def bind_drift(
        self,
        bound: ModelMetrics,
        signature: Signature,
        profile: ReferenceProfile,
        sample: dict[str, np.ndarray],
        settings: DriftSettings,
    ) -> DriftMonitor:
        """Feature accounting and windowed drift scores for one model version."""
        base = [bound.model, bound.version]
        accountant = FeatureAccountant(signature, profile, base, settings.recent_rows, settings.max_features)
        self.arrays.add(self.bin_family, accountant.bins)
        self.arrays.add(self.reference_bin_family, accountant.reference_ratio)
        self.arrays.add(self.missing_family, accountant.missing)
        self.arrays.add(self.unseen_family, accountant.unseen)
        prediction = profile.prediction
        if prediction is not None:
            ratio = ArrayCounter(base, [[str(c)] for c in signature.classes])
            ratio.counts[:] = prediction.class_shares
            self.arrays.add(self.reference_class_family, ratio)
        monitor = DriftMonitor(
            accountant,
            sample,
            bound.predictions.counts,
            bound.confidence.bucket_counts,
            prediction.class_shares if prediction else None,
            prediction.confidence_shares if prediction else None,
            settings,
        )
        self.drift.add(bound.model, bound.version, monitor)
        return monitor


def confusion_cells(classes: list[str]) -> list[list[str]]:
    """(actual, predicted) label pairs, actual-major: cell index = actual * C + predicted."""
    return [[a, p] for a in classes for p in classes]


@dataclass(slots=True)
class QualityMetrics:
    confusion: ArrayCounter
    feedback: dict[str, Counter]
    label_delay: Histogram


@dataclass(slots=True)
class RequestMetrics:
    """Request-level children, bound once: counts, latency, errors."""

    server: ServerMetrics
    model: str
    version: str
    errors: dict[str, Counter]
    durations: dict[str, Histogram]
    _requests: dict[tuple[str, int], Counter] = field(default_factory=dict)

    def create_request_series(self, codes: dict[str, tuple[int, ...]]) -> None:
        for endpoint, endpoint_codes in codes.items():
            for code in endpoint_codes:
                self.request_counter(endpoint, code)

    def request_counter(self, endpoint: str, code: int) -> Counter:
        key = (endpoint, code)
        child = self._requests.get(key)
        if child is None:  # status codes are a small fixed set, so this cache stays small
            child = self.server.requests.labels(self.model, self.version, endpoint, str(code))
            self._requests[key] = child
        return child

    def observe_request(self, endpoint: str, code: int, seconds: float) -> None:
        self.request_counter(endpoint, code).inc()
        self.durations[endpoint].observe(seconds)

    def count_error(self, reason: str) -> None:
        counter = self.errors.get(reason) or self.errors.get("invalid_input") or self.errors["model_not_found"]
        counter.inc()


@dataclass(slots=True, kw_only=True)
class ModelMetrics(RequestMetrics):
    """The children of one served model version, bound once at load."""

    inflight: Gauge
    queue_duration: ArrayHistogram
    inference_duration: ArrayHistogram
    batch_size: ArrayHistogram
    predictions: ArrayCounter
    confidence: ArrayHistogram
    quality: QualityMetrics | None = None
    expected_confusion: ArrayCounter | None = None

    def observe_predictions(self, top_class: np.ndarray, confidence: np.ndarray) -> None:
        """Count predicted rows: ``top_class`` is each row's predicted class index."""
        self.predictions.add(np.bincount(top_class, minlength=len(self.predictions.counts)))
        self.confidence.observe(confidence)
