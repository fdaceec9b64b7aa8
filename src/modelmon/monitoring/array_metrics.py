"""Counters and histograms kept in numpy arrays, exported at scrape time.

prometheus_client's ``Counter.inc()`` costs about half a microsecond per call, so counting a
64-row batch into per-class counters, a confidence histogram and (later) per-feature bins
would cost hundreds of calls per batch. Here each series is one cell of an array: a batch is
counted with a few vectorised numpy operations, and a custom collector turns the arrays
into metric families only when Prometheus scrapes.

Arrays are written on the event loop thread only. A scrape (which may run in a worker
thread) copies each array first, so every family it yields is internally consistent.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class ArrayCounter:
    """One series per cell: ``cell_labels[i]`` are the extra label values of cell ``i``.
    Used for counters and, set once, for gauges such as reference shares."""

    def __init__(self, base_labels: Sequence[str], cell_labels: Sequence[Sequence[str]]) -> None:
        self.base_labels = list(base_labels)
        self.cell_labels = [list(c) for c in cell_labels]
        self.counts = np.zeros(len(self.cell_labels), dtype=np.float64)

    def add(self, increments: np.ndarray) -> None:
        self.counts += increments


class ArrayHistogram:
    """A histogram with fixed upper bounds, observed a whole array at a time."""

    def __init__(self, base_labels: Sequence[str], bounds: Sequence[float]) -> None:
        self.base_labels = list(base_labels)
        self.bounds = np.asarray(bounds, dtype=np.float64)
        # Bucket i counts values <= bounds[i] (and > bounds[i-1]); the last one is +Inf.
        self.bucket_counts = np.zeros(len(self.bounds) + 1, dtype=np.float64)
        self.sum = 0.0

    def observe(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        index = np.searchsorted(self.bounds, values, side="left")
        self.bucket_counts += np.bincount(index, minlength=len(self.bucket_counts))
        self.sum += float(values.sum())


class ArrayMetricsCollector(Collector):
    """Yields every registered array series as ordinary metric families."""

    def __init__(self) -> None:
        self.counters: dict[str, tuple[str, list[str], list[ArrayCounter]]] = {}
        self.gauges: dict[str, tuple[str, list[str], list[ArrayCounter]]] = {}
        self.histograms: dict[str, tuple[str, list[str], list[ArrayHistogram]]] = {}

    def counter_family(self, name: str, documentation: str, labelnames: Sequence[str]) -> str:
        self.counters.setdefault(name, (documentation, list(labelnames), []))
        return name

    def gauge_family(self, name: str, documentation: str, labelnames: Sequence[str]) -> str:
        self.gauges.setdefault(name, (documentation, list(labelnames), []))
        return name

    def histogram_family(self, name: str, documentation: str, labelnames: Sequence[str]) -> str:
        self.histograms.setdefault(name, (documentation, list(labelnames), []))
        return name

    def add_counter(self, family: str, series: ArrayCounter) -> ArrayCounter:
        self.counters[family][2].append(series)
        return series

    def add_gauge(self, family: str, series: ArrayCounter) -> ArrayCounter:
        self.gauges[family][2].append(series)
        return series

    def add_histogram(self, family: str, series: ArrayHistogram) -> ArrayHistogram:
        self.histograms[family][2].append(series)
        return series

    def remove_series(self, base_labels: Sequence[str]) -> None:
        """Forget every series of one model version (when it is unloaded)."""
        wanted = list(base_labels)
        for _, _, series in (*self.counters.values(), *self.gauges.values(), *self.histograms.values()):
            series[:] = [s for s in series if s.base_labels != wanted]

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        for kind, families in ((CounterMetricFamily, self.counters), (GaugeMetricFamily, self.gauges)):
            for name, (documentation, labelnames, series_list) in families.items():
                family = kind(name, documentation, labels=labelnames)
                for series in list(series_list):
                    counts = series.counts.copy()
                    for cell, value in zip(series.cell_labels, counts.tolist(), strict=True):
                        family.add_metric([*series.base_labels, *cell], value)
                yield family
        for name, (documentation, labelnames, series_list) in self.histograms.items():
            family = HistogramMetricFamily(name, documentation, labels=labelnames)
            for series in list(series_list):
                cumulative = np.cumsum(series.bucket_counts)
                buckets = [
                    (floatToGoString(bound), float(count))
                    for bound, count in zip(series.bounds, cumulative[:-1], strict=True)
                ]
                buckets.append(("+Inf", float(cumulative[-1])))
                family.add_metric(series.base_labels, buckets, series.sum)
            yield family
