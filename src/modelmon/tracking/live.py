"""Live training gauges: a run's latest values, for Prometheus while the run is active.

The three families of the metric contract (docs/metrics.md) are built at scrape time from each
active run's latest values, the custom-collector pattern of prometheus_client, so one
process serving several runs (an Optuna study) still exposes each family once. A run is
exposed on an opt-in port of the training process (pulled by Prometheus) or pushed to a
Pushgateway (for jobs Prometheus cannot reach); either way its series go when it ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    delete_from_gateway,
    push_to_gateway,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from modelmon.tracking.errors import TrackingError

log = logging.getLogger("modelmon.tracking")

TRAINING_METRIC = "modelmon_training_metric"
TRAINING_EPOCH = "modelmon_training_epoch"
TRAINING_LAST_UPDATE = "modelmon_training_last_update_timestamp_seconds"
#: The Pushgateway job of every run; each run is its own group ({experiment, run}).
PUSH_JOB = "modelmon_training"


class LiveRun:
    """The latest values of one run, updated by the training loop, read by scrapes."""

    def __init__(self, experiment: str, run: str) -> None:
        self.experiment = experiment
        self.run = run
        self._values: dict[tuple[str, str], float] = {}
        self._epoch: int | None = None
        self._updated = time.time()
        self._lock = threading.Lock()
        self.version = 0  # bumped on every update: tells a pusher whether to push again

    def update(self, split: str, values: Mapping[str, float], step: int) -> None:
        with self._lock:
            for name, value in values.items():
                self._values[(split, name)] = value
            self._epoch = step if self._epoch is None else max(self._epoch, step)
            self._updated = time.time()
            self.version += 1

    def samples(self) -> tuple[dict[tuple[str, str], float], int | None, float]:
        with self._lock:
            return dict(self._values), self._epoch, self._updated


class LiveCollector(Collector):
    """The three training families over a set of active runs."""

    def __init__(self) -> None:
        self._runs: dict[int, LiveRun] = {}
        self._lock = threading.Lock()

    def add(self, run: LiveRun) -> None:
        with self._lock:
            self._runs[id(run)] = run

    def remove(self, run: LiveRun) -> None:
        with self._lock:
            self._runs.pop(id(run), None)

    def collect(self) -> Iterator[Metric]:
        metric = GaugeMetricFamily(
            TRAINING_METRIC, "Latest value of a metric in a live training run.",
            labels=["experiment", "run", "split", "metric"],
        )
        epoch = GaugeMetricFamily(
            TRAINING_EPOCH, "Epoch (step) a live training run has reached.",
            labels=["experiment", "run"],
        )
        updated = GaugeMetricFamily(
            TRAINING_LAST_UPDATE, "When a live training run last reported (Unix time).",
            labels=["experiment", "run"],
        )
        with self._lock:
            active = list(self._runs.values())
        for run in active:
            values, step, when = run.samples()
            for (split, name), value in sorted(values.items()):
                metric.add_metric([run.experiment, run.run, split, name], value)
            if step is not None:
                epoch.add_metric([run.experiment, run.run], step)
            updated.add_metric([run.experiment, run.run], when)
        yield from (metric, epoch, updated)


#: The process's exposition: every run started with a live port is in it.
process_collector = LiveCollector()
process_registry = CollectorRegistry(auto_describe=False)
process_registry.register(process_collector)
_servers: dict[tuple[str, int], Any] = {}
_servers_lock = threading.Lock()


def serve_training_metrics(port: int, address: str = "127.0.0.1") -> None:
    """Expose the live gauges of this process's runs at ``http://address:port/metrics``.

    Idempotent: runs that ask for the same port share one server, which lives as long as
    the process (a scrape between two runs then sees no training series, which is right).
    """
    with _servers_lock:
        if (address, port) in _servers:
            return
        try:
            _servers[(address, port)] = start_http_server(port, address, registry=process_registry)
        except OSError as exc:
            raise TrackingError(
                f"cannot serve live training metrics on {address}:{port}: {exc.strerror}; "
                "pick another port (live_port / MODELMON_TRAINING_PORT)"
            ) from None


class Pusher:
    """Pushes one run's gauges to a Pushgateway group of its own, and deletes it at the end."""

    def __init__(self, url: str, run: LiveRun) -> None:
        self.url = url
        self.run = run
        self.grouping_key = {"experiment": run.experiment, "run": run.run}
        self._registry = CollectorRegistry(auto_describe=False)
        collector = LiveCollector()
        collector.add(run)
        self._registry.register(collector)
        self._pushed_version = -1
        self._lock = threading.Lock()

    def push(self) -> None:
        """Push when anything changed since the last push; a failure is logged, not raised:
        a Pushgateway outage must not stop training."""
        with self._lock:
            version = self.run.version
            if version == self._pushed_version:
                return
            try:
                push_to_gateway(self.url, job=PUSH_JOB, registry=self._registry,
                                grouping_key=self.grouping_key, timeout=10)
                self._pushed_version = version
            except OSError as exc:
                log.warning("could not push training metrics to %s: %s", self.url, exc)

    def delete(self) -> None:
        with self._lock:
            try:
                delete_from_gateway(self.url, job=PUSH_JOB, grouping_key=self.grouping_key,
                                    timeout=10)
            except OSError as exc:
                log.warning("could not delete training metrics from %s: %s", self.url, exc)
