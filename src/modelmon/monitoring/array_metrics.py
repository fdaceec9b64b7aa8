"""Counters, gauges and histograms kept in numpy arrays, rendered at scrape time.

prometheus_client's ``Counter.inc()`` costs about half a microsecond per call, so counting a
64-row batch into per-class counters, a confidence histogram and per-feature bins would cost
hundreds of calls per batch. Here each series is one cell of an array: a batch is counted
with a few vectorised numpy operations, and the arrays are written out as exposition text
only when Prometheus scrapes (see ``exposition``).

Each array has one writer at a time: the event loop, or a flush of the queued monitoring
work (``batch_accounting``, under its lock). A scrape (which runs in a worker thread) flushes
first and copies each array as it writes it out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
from prometheus_client.utils import floatToGoString

from modelmon.monitoring.exposition import family_header, sample_lines, series_prefix
from modelmon.monitoring.families import Family


class ArrayCounter:
    """One series per cell: ``cell_labels[i]`` are the extra label values of cell ``i``.
    Used for counters and, set once, for gauges such as reference shares."""

    def __init__(self, base_labels: Sequence[str], cell_labels: Sequence[Sequence[str]]) -> None:
        self.base_labels = list(base_labels)
        self.cell_labels = [list(c) for c in cell_labels]
        self.counts = np.zeros(len(self.cell_labels), dtype=np.float64)
        self.prefixes: list[str] = []
        self.rendered: tuple[np.ndarray, str] | None = None  # the last values written out, and their text

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
        self.prefixes: list[str] = []

    def observe(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        index = np.searchsorted(self.bounds, values, side="left")
        self.bucket_counts += np.bincount(index, minlength=len(self.bucket_counts))
        self.sum += float(values.sum())


_Series = TypeVar("_Series", bound=ArrayCounter | ArrayHistogram)


@dataclass
class _Family:
    name: str
    documentation: str
    kind: str  # counter, gauge or histogram
    labelnames: list[str]
    series: list[ArrayCounter | ArrayHistogram] = field(default_factory=list)


class ArrayMetrics:
    """Every array-backed family of one server, and their exposition."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}

    def family(self, family: Family) -> Family:
        """Declare a family (families render in the order they are declared)."""
        self.families.setdefault(family.name, _Family(family.name, family.help, family.kind, list(family.labels)))
        return family

    def add(self, declared: Family, series: _Series) -> _Series:
        """Add one version's series to a declared family; it renders from now on."""
        family = self.families[declared.name]
        if family.kind == "histogram":
            assert isinstance(series, ArrayHistogram), f"{family.name} is a histogram: its series are ArrayHistograms"
            base = series_prefix(f"{family.name}_bucket", family.labelnames, series.base_labels)[:-2]
            series.prefixes = [f'{base},le="{floatToGoString(b)}"}} ' for b in [*series.bounds, float("inf")]]
            series.prefixes += [
                series_prefix(f"{family.name}_count", family.labelnames, series.base_labels),
                series_prefix(f"{family.name}_sum", family.labelnames, series.base_labels),
            ]
        else:
            assert isinstance(series, ArrayCounter), f"{family.name} is a {family.kind}: its series are ArrayCounters"
            name = f"{family.name}_total" if family.kind == "counter" else family.name
            series.prefixes = [
                series_prefix(name, family.labelnames, [*series.base_labels, *cell]) for cell in series.cell_labels
            ]
        family.series.append(series)
        return series

    def remove_series(self, base_labels: Sequence[str]) -> None:
        """Forget every series of one model version (when it is unloaded)."""
        wanted = list(base_labels)
        for family in self.families.values():
            family.series[:] = [s for s in family.series if s.base_labels != wanted]

    def render(self) -> str:
        parts = []
        for family in self.families.values():
            name = f"{family.name}_total" if family.kind == "counter" else family.name
            parts.append(family_header(name, family.documentation, family.kind))
            for series in list(family.series):
                if isinstance(series, ArrayHistogram):  # exactly the series of histogram families (``add``)
                    cumulative = np.cumsum(series.bucket_counts).tolist()
                    parts.append(sample_lines(series.prefixes, [*cumulative, cumulative[-1], series.sum]))
                else:
                    parts.append(self._counter_lines(series))
        return "".join(parts)

    @staticmethod
    def _counter_lines(series: ArrayCounter) -> str:
        """The series' lines, written again only when a value changed: reference shares
        never do, and an idle version's counts rarely."""
        values = series.counts.copy()
        if series.rendered is None or not np.array_equal(values, series.rendered[0]):
            series.rendered = (values, sample_lines(series.prefixes, values.tolist()))
        return series.rendered[1]
