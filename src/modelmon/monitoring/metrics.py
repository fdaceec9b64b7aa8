"""The serving and prediction metrics of the contract (docs/metrics.md), and the exposition.

Each server owns its series (no global state, so tests and benchmarks can run several
servers in one process). Every series of a model version lives in ``array_metrics`` objects,
created at zero when the version loads, with children bound once: a request adds to a list
item (``CounterChild.inc``, ``HistogramChild.observe``), about a tenth of what
prometheus_client's ``labels().inc()`` cost. A ``CollectorRegistry`` remains for process-level
collectors (the prediction log's), rendered by prometheus_client, and another holds
prometheus_client's standard process collector (``process_cpu_seconds_total``,
``process_resident_memory_bytes``, ...), read from /proc at each scrape.

A scrape (``ServerMetrics.scrape``, in a worker thread) counts every monitor's queued work,
then writes out only the pieces whose values changed since the last scrape (``exposition``),
in the text format or OpenMetrics, plain or gzip-compressed.

The series limit (``max_series``): a version whose monitoring would take the server's series
past it loads with reduced monitoring (``ServerMetrics.admit``), announced in
``modelmon_monitoring_reduced`` and in the log.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum

import prometheus_client
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.openmetrics import exposition as openmetrics_exposition

from modelmon.errors import ERROR_REASONS
from modelmon.monitoring import families
from modelmon.monitoring.array_metrics import (
    ArrayCounter,
    ArrayHistogram,
    ArrayMetrics,
    CounterChild,
    GaugeChild,
    HistogramChild,
    ListCounter,
    ListHistogram,
    Series,
)
from modelmon.monitoring.drift_exporter import DriftExporter, Scored
from modelmon.monitoring.exposition import Body, Deflater, Piece, Slicer, changed
from modelmon.monitoring.tasks import RegressionLabels, confusion_cells

# `_created` series double the exposition and confuse `increase()` users; the contract has none.
prometheus_client.disable_created_metrics()

logger = logging.getLogger("modelmon.monitoring")

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
#: The V2 gRPC ModelInfer RPC, counted only by a server that serves gRPC (``--grpc-port``):
#: its series exist only there. gRPC's metadata and readiness RPCs count as ``metadata`` and
#: ``ready``; its status codes are counted as the HTTP status REST answers for the same error.
GRPC_INFER = "grpc_infer"
#: The status codes each endpoint of a served model can answer, created at zero at load so
#: that `increase()` sees the first error too. (404s are counted under UNKNOWN_MODEL.)
MODEL_STATUS_CODES = {
    "infer": (200, 400, 401, 413, 500),
    GRPC_INFER: (200, 400, 401, 413, 500),
    "predict": (200, 400, 401, 413, 500),
    "metadata": (200,),
    "ready": (200, 503),
    "feedback": (200, 400, 401, 409, 413, 503),
}
#: Time from a prediction to its ground-truth label: seconds to a month.
LABEL_DELAY_BUCKETS = (1, 10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 86400, 3 * 86400, 7 * 86400, 30 * 86400)
FEEDBACK_OUTCOMES = ("matched", "duplicate", "unknown_id")

#: The default of ``modelmon serve --max-series``: about 110 versions of 30 numeric features
#: fully monitored (~920 series each), a 10 MB exposition (~0.6 MB gzipped).
DEFAULT_MAX_SERIES = 100_000


class Monitoring(Enum):
    """How much of a version is monitored; past the series limit, less (the ``dropped`` label)."""

    FULL = ""
    #: No feature accounting or drift scores: modelmon_feature_bin_total,
    #: modelmon_reference_bin_ratio, modelmon_feature_missing_total,
    #: modelmon_feature_unseen_total and the drift families.
    NO_DRIFT = "drift"
    #: Also none of the task's output series: modelmon_predictions_total,
    #: modelmon_prediction_confidence, modelmon_expected_confusion_total,
    #: modelmon_reference_class_ratio. The request-level series stay (they always do).
    REQUESTS_ONLY = "predictions_and_drift"


class ServerMetrics:
    """Every metric family of one server, and the monitors of the versions it serves.

    The per-version monitors (``monitor.VersionMonitor``) add their series and drift reports
    when they are registered and take them away when they are removed, each as one unit."""

    def __init__(self, max_series: int = 0, process_metrics: bool = True, grpc: bool = False) -> None:
        #: Process-level prometheus_client collectors (the prediction log's).
        self.registry = CollectorRegistry(auto_describe=False)
        #: The standard process metrics (CPU, memory, file descriptors, start time), in a
        #: registry of their own so that they are their own piece: they change at every
        #: scrape (``process_metrics=False`` leaves them out, for tests of whole bodies).
        self.process = CollectorRegistry(auto_describe=False)
        if process_metrics:
            ProcessCollector(registry=self.process)
        #: The endpoints whose series each version has: gRPC's too when it is served.
        self.endpoints = (*ENDPOINTS, GRPC_INFER) if grpc else ENDPOINTS
        #: What a request naming no served model can fail with: over gRPC, where the model's
        #: name is inside the message, also a message that does not decode or names none.
        self.unknown_model_reasons = ("model_not_found", "malformed_request") if grpc else ("model_not_found",)
        self.arrays = ArrayMetrics()
        for family in families.REQUEST_FAMILIES:
            self.arrays.family(family, sort_labels=True)
        for family in families.ARRAY_FAMILIES:
            self.arrays.family(family)
        #: The served versions' monitors, by (model, version); the drift exporter scores
        #: and writes out these.
        self.monitors: dict[tuple[str, str], Scored] = {}
        self.drift = DriftExporter(self.monitors)
        self._bound: dict[tuple[str, str], ModelMetrics] = {}
        self._quality: dict[tuple[str, str], QualityMetrics] = {}
        self._inflight: dict[str, GaugeChild] = {}
        #: The series limit (0: none), and the series each version's drift scores may take.
        self.max_series = max_series
        self._drift_series: dict[tuple[str, str], int] = {}
        self._series = self._gauge(families.MONITORING_SERIES)
        self._gauge(families.MONITORING_SERIES_LIMIT).set(max_series)
        self.unknown_model = self.bind_unknown_model()
        self._update_series_count()
        self._scrape_lock = threading.Lock()  # one scrape at a time: pieces and the compressor are shared
        self._deflater = Deflater()
        self._registry_pieces: dict[tuple[int, bool], Piece] = {}
        self._eof = Piece(b"# EOF\n")
        #: Give the GIL away during a scrape (off only to measure what that is worth).
        self.slice = True

    def _gauge(self, family: families.Family) -> GaugeChild:
        return self.arrays.add(family, ListCounter([], [[]])).child(0)

    # -- the exposition ---------------------------------------------------------------

    def exposition(self, openmetrics: bool = False, pause: Callable[[], None] = lambda: None) -> Body:
        """The whole exposition as pieces: the series, the drift reports, the registry's
        collectors. Every monitor counts its queued work first (``batch_accounting``), so the
        counts are exact. ``pause`` is called between pieces of work (``exposition.Slicer``).
        Call under ``_scrape_lock`` (``scrape``)."""
        self.flush(pause)
        pieces = self.arrays.pieces(openmetrics, pause)
        pieces += self.drift.pieces(openmetrics, self.arrays.reuse, pause)
        pieces.append(self._registry_piece(self.registry, openmetrics))
        pieces.append(self._registry_piece(self.process, openmetrics))
        if openmetrics:
            pieces.append(self._eof)
        return Body(pieces, openmetrics)

    def flush(self, pause: Callable[[], None] = lambda: None, settle: bool = True) -> None:
        """Count every monitor's queued work (``batch_accounting``). The /metrics route calls
        this on the event loop before the scrape's thread runs, as the loop counts its queues
        every 0.1 s anyway: counting (numpy calls that release the GIL) in another thread would
        hand the GIL back and forth with the loop at every call. The route passes
        ``settle=False``: the scrape's thread settles (``TaskCounts.settle``) before it writes."""
        for i, monitor in enumerate(list(self.monitors.values())):
            monitor.flush(settle)
            if i % 16 == 15:
                pause()

    def scrape(self, openmetrics: bool = False, gzip: bool = False) -> tuple[bytes, str]:
        """One scrape's body and its content type (from any thread; one at a time). It gives
        the GIL away every ``exposition.SLICE_SECONDS`` of its work, so an event loop in
        another thread waits at most that long for it."""
        with self._scrape_lock:
            pause = Slicer() if self.slice else (lambda: None)
            body = self.exposition(openmetrics, pause)
            return (body.gzip(self._deflater, pause) if gzip else body.plain()), body.content_type

    def render(self) -> bytes:
        """The text-format exposition."""
        return self.scrape()[0]

    def _registry_piece(self, registry: CollectorRegistry, openmetrics: bool) -> Piece:
        if openmetrics:
            text = openmetrics_exposition.generate_latest(registry).removesuffix(b"# EOF\n")
        else:
            text = generate_latest(registry)
        key = (id(registry), openmetrics)
        piece = self._registry_pieces[key] = changed(self._registry_pieces.get(key), text)
        return piece

    # -- the series limit -------------------------------------------------------------

    def series_count(self) -> int:
        """The served versions' series: every array-backed one, drift scores at their most."""
        return self.arrays.series_count() + sum(self._drift_series.values())

    def _update_series_count(self) -> None:
        self._series.set(self.series_count())

    def staging(self) -> ArrayMetrics:
        """An empty set of the array families, to build a version's series in before they
        are counted against the limit (``admit``)."""
        staged = ArrayMetrics()
        for family in families.ARRAY_FAMILIES:
            staged.family(family)
        return staged

    def admit(
        self, model: str, version: str, predictions: Sequence[tuple[families.Family, Series]], features: int, drift: int
    ) -> Monitoring:
        """How much of a version to monitor, within the series limit: everything if its
        prediction series, ``features`` feature series and ``drift`` drift scores fit, else
        without the last two, else without the first either. Admitted series are added."""
        used = self.series_count()
        size = sum(s.size for _, s in predictions)
        if not self.max_series or used + size + features + drift <= self.max_series:
            level = Monitoring.FULL
        elif used + size <= self.max_series:
            level = Monitoring.NO_DRIFT
        else:
            level = Monitoring.REQUESTS_ONLY
        if level is not Monitoring.REQUESTS_ONLY:
            for family, series in predictions:
                self.arrays.add(family, series)
        if level is Monitoring.FULL:
            self._drift_series[(model, version)] = drift
        else:
            reduced = self.arrays.add(families.MONITORING_REDUCED, ListCounter([model, version], [[level.value]]))
            reduced.values[0] = 1.0
            logger.warning(
                "model %s version %s serves with reduced monitoring (without %s): its series would take the "
                "server past --max-series %d (%d in use)", model, version, level.value.replace("_", " "),
                self.max_series, used,
            )
        return level

    def admitted(self) -> None:
        """A version's series are all added: count them."""
        self._update_series_count()

    # -- binding a version's series ---------------------------------------------------

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
        ones for ``classes``), and return its bound children. These are always created,
        whatever the series limit."""
        a = self.arrays
        base = [model, version]
        a.add(families.MODEL_INFO, ListCounter(base, [[flavor]])).values[0] = 1.0
        if baseline:
            baseline_series = a.add(families.BASELINE_METRIC, ListCounter(base, [[m] for m in baseline]))
            baseline_series.values[:] = [float(v) for v in baseline.values()]
        requests = a.add(families.REQUESTS, ListCounter(base, []))
        errors = a.add(families.REQUEST_ERRORS, ListCounter(base, [[r] for r in ERROR_REASONS]))
        durations = a.add(families.REQUEST_DURATION, ListHistogram(base, [[e] for e in self.endpoints], LATENCY_BUCKETS))
        bound = ModelMetrics(
            model=model,
            version=version,
            requests=requests,
            errors={reason: errors.child(i) for i, reason in enumerate(ERROR_REASONS)},
            durations={e: durations.child(i) for i, e in enumerate(self.endpoints)},
            inflight=self._inflight_for(model),
            queue_duration=a.add(families.QUEUE_DURATION, ArrayHistogram(base, LATENCY_BUCKETS)),
            inference_duration=a.add(families.INFERENCE_DURATION, ArrayHistogram(base, LATENCY_BUCKETS)),
            batch_size=a.add(families.BATCH_SIZE, ArrayHistogram(base, BATCH_SIZE_BUCKETS)),
        )
        bound.create_request_series({e: MODEL_STATUS_CODES[e] for e in self.endpoints})
        self._bound[(model, version)] = bound
        bound.quality = self.bind_quality(model, version, classes)
        return bound

    def _inflight_for(self, model: str) -> GaugeChild:
        """Requests in progress are counted per model (all its versions), from its first load on."""
        child = self._inflight.get(model)
        if child is None:
            child = self._inflight[model] = self.arrays.add(families.INFLIGHT, ListCounter([model], [[]])).child(0)
        return child

    def bind_quality(self, model: str, version: str, classes: list[str]) -> QualityMetrics:
        """Label-side series of one version. Also made for a version that is not loaded here,
        when a label arrives for one of its predictions (from the store); made once."""
        key = (model, version)
        quality = self._quality.get(key)
        if quality is None:
            base = [model, version]
            a = self.arrays
            feedback = a.add(families.FEEDBACK, ListCounter(base, [[o] for o in FEEDBACK_OUTCOMES]))
            quality = self._quality[key] = QualityMetrics(
                confusion=a.add(families.CONFUSION, ArrayCounter(base, confusion_cells(classes))),
                feedback={o: feedback.child(i) for i, o in enumerate(FEEDBACK_OUTCOMES)},
                label_delay=a.add(families.LABEL_DELAY, ListHistogram(base, [[]], LABEL_DELAY_BUCKETS)).child(0),
                regression=None if classes else RegressionLabels(a, base),
            )
        return quality

    def unbind(self, model: str, version: str) -> None:
        """Remove every series of an unloaded version, its monitor's included, so /metrics
        shows only what is served."""
        key = (model, version)
        self._bound.pop(key)
        self._quality.pop(key, None)
        self.monitors.pop(key, None)
        self._drift_series.pop(key, None)
        self.arrays.remove_series([model, version])
        self.drift.forget(model, version)
        self._update_series_count()

    def bind_unknown_model(self) -> RequestMetrics:
        """Requests naming a model or version that is not served: only their count, their
        latency and the one error they can meet."""
        a = self.arrays
        base = [UNKNOWN_MODEL, ""]
        durations = a.add(families.REQUEST_DURATION, ListHistogram(base, [[e] for e in self.endpoints], LATENCY_BUCKETS))
        reasons = self.unknown_model_reasons
        errors = a.add(families.REQUEST_ERRORS, ListCounter(base, [[r] for r in reasons]))
        bound = RequestMetrics(
            model=UNKNOWN_MODEL,
            version="",
            requests=a.add(families.REQUESTS, ListCounter(base, [])),
            errors={reason: errors.child(i) for i, reason in enumerate(reasons)},
            durations={e: durations.child(i) for i, e in enumerate(self.endpoints)},
        )
        codes: dict[str, tuple[int, ...]] = {e: (404,) for e in self.endpoints}
        if GRPC_INFER in codes:  # a message that does not decode or names no model: a 400
            codes[GRPC_INFER] = (400, 404)
        bound.create_request_series(codes)
        return bound


@dataclass(slots=True)
class QualityMetrics:
    confusion: ArrayCounter
    feedback: dict[str, CounterChild]
    label_delay: HistogramChild
    regression: RegressionLabels | None = None  # a regressor's label sums (it has no classes)


@dataclass(slots=True)
class RequestMetrics:
    """Request-level children, bound once: counts, latency, errors (written by the event loop)."""

    model: str
    version: str
    requests: ListCounter
    errors: dict[str, CounterChild]
    durations: dict[str, HistogramChild]
    _requests: dict[tuple[str, int], CounterChild] = field(default_factory=dict)

    def create_request_series(self, codes: dict[str, tuple[int, ...]]) -> None:
        for endpoint, endpoint_codes in codes.items():
            for code in endpoint_codes:
                self.request_counter(endpoint, code)

    def request_counter(self, endpoint: str, code: int) -> CounterChild:
        key = (endpoint, code)
        child = self._requests.get(key)
        if child is None:  # status codes are a small fixed set, so this cache stays small
            child = self._requests[key] = self.requests.add_cell([endpoint, str(code)])
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

    inflight: GaugeChild
    queue_duration: ArrayHistogram
    inference_duration: ArrayHistogram
    batch_size: ArrayHistogram
    quality: QualityMetrics | None = None
