"""The serving and prediction metrics of the contract (docs/metrics.md).

Each server owns one ``CollectorRegistry`` (no global state, so tests and benchmarks can
run several servers in one process). Label children are bound once when a model version
loads: ``.labels()`` per request costs five times an ``inc()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from modelmon.errors import ERROR_REASONS
from modelmon.monitoring import families
from modelmon.monitoring.array_metrics import ArrayCounter, ArrayHistogram, ArrayMetrics
from modelmon.monitoring.drift_exporter import DriftExporter, Scored
from modelmon.monitoring.tasks import confusion_cells

# `_created` series double the exposition and confuse `increase()` users; the contract has none.
prometheus_client.disable_created_metrics()

#: Whole-request latency: from 100 us (ONNX on one row) to a minute (a big batch on a busy
#: CPU), so p99 is never clamped at the top bucket.
LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)

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
    """Every metric family of one server, and the monitors of the versions it serves.

    Request-level families are prometheus_client objects; the per-version monitors
    (``monitor.VersionMonitor``) add their array-backed series and drift reports when they
    are registered and take them away when they are removed, each as one unit."""

    def render(self) -> bytes:
        """The whole exposition: prometheus_client's families, then the array-backed and
        drift families, which render themselves (see ``exposition``). Every monitor counts
        its queued work first (``batch_accounting``), so the counts are exact."""
        for monitor in list(self.monitors.values()):
            monitor.flush()
        return generate_latest(self.registry) + self.arrays.render().encode() + self.drift.render().encode()

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry

        def labelled(family: families.Family) -> dict[str, Any]:
            return {"name": family.name, "documentation": family.help, "labelnames": family.labels, "registry": r}

        self.requests = Counter(**labelled(families.REQUESTS))
        self.request_duration = Histogram(**labelled(families.REQUEST_DURATION), buckets=LATENCY_BUCKETS)
        self.request_errors = Counter(**labelled(families.REQUEST_ERRORS))
        self.inflight = Gauge(**labelled(families.INFLIGHT))
        self.model_info = Gauge(**labelled(families.MODEL_INFO))
        self.baseline_metric = Gauge(**labelled(families.BASELINE_METRIC))
        self.feedback = Counter(**labelled(families.FEEDBACK))
        self.label_delay = Histogram(**labelled(families.LABEL_DELAY), buckets=LABEL_DELAY_BUCKETS)
        self.arrays = ArrayMetrics()
        for family in families.ARRAY_FAMILIES:
            self.arrays.family(family)
        #: The served versions' monitors, by (model, version); the drift exporter scores
        #: and writes out these.
        self.monitors: dict[tuple[str, str], Scored] = {}
        self.drift = DriftExporter(self.monitors)
        self._bound: dict[tuple[str, str], tuple[ModelMetrics, str, list[str]]] = {}
        self.unknown_model = self.bind_unknown_model()

    def add_monitor(self, key: tuple[str, str], monitor: Scored) -> None:
        self.monitors[key] = monitor

    def bind(
        self,
        model: str,
        version: str,
        flavor: str,
        classes: list[str],
        baseline: dict[str, float] | None = None,
    ) -> ModelMetrics:
        """Create the request-level series of one model version at zero (and the label-side
        ones for ``classes``), and return its bound children."""
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
            queue_duration=self.arrays.add(families.QUEUE_DURATION, ArrayHistogram(base, LATENCY_BUCKETS)),
            inference_duration=self.arrays.add(families.INFERENCE_DURATION, ArrayHistogram(base, LATENCY_BUCKETS)),
            batch_size=self.arrays.add(families.BATCH_SIZE, ArrayHistogram(base, BATCH_SIZE_BUCKETS)),
        )
        bound.create_request_series(MODEL_STATUS_CODES)
        self._bound[(model, version)] = (bound, flavor, sorted(baseline or {}))
        bound.quality = self.bind_quality(model, version, classes)
        return bound

    def bind_quality(self, model: str, version: str, classes: list[str]) -> QualityMetrics:
        """Label-side series of one version. Also made for a version that is not loaded here,
        when a label arrives for one of its predictions (from the store)."""
        base = [model, version]
        return QualityMetrics(
            confusion=self.arrays.add(families.CONFUSION, ArrayCounter(base, confusion_cells(classes))),
            feedback={o: self.feedback.labels(*base, o) for o in FEEDBACK_OUTCOMES},
            label_delay=self.label_delay.labels(*base),
        )

    def unbind(self, model: str, version: str) -> None:
        """Remove every series of an unloaded version, its monitor's included, so /metrics
        shows only what is served."""
        bound, flavor, baseline = self._bound.pop((model, version))
        self.monitors.pop((model, version), None)
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
        self.drift.forget(model, version)

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
    """The request-level children of one served model version, bound once at load."""

    inflight: Gauge
    queue_duration: ArrayHistogram
    inference_duration: ArrayHistogram
    batch_size: ArrayHistogram
    quality: QualityMetrics | None = None
