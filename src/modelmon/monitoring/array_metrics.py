"""Counters, gauges and histograms kept in arrays, rendered at scrape time.

prometheus_client's ``Counter.inc()`` costs about half a microsecond per call, so counting a
64-row batch into per-class counters, a confidence histogram and per-feature bins would cost
hundreds of calls per batch. Here each series is one cell of an array, and the arrays are
written out as exposition text only when Prometheus scrapes (see ``exposition``):

- ``ArrayCounter`` / ``ArrayHistogram``: numpy arrays, counted a whole batch at a time with a
  few vectorised operations (bins, classes, batch sizes: ``batch_accounting``);
- ``ListCounter`` / ``ListHistogram``: plain lists, counted one event at a time through a
  bound child (``inc``, ``set``, ``observe``: a list item added to, ~50 ns), for the
  request-level series the event loop counts per request.

One object holds one family's series of one model version (or one model, or the server),
and renders them as one ``Piece``, reused while its values stay the same: a scrape copies
each object's values in one step (a consistent snapshot: the copy runs under the GIL) and
writes lines only for those whose values changed since the last scrape.

Each array has one writer at a time: the event loop, or a flush of the queued monitoring
work (``batch_accounting``, under its lock). A scrape runs in a worker thread; it flushes
first, then copies each array as it writes it out.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TypeVar

import numpy as np
from prometheus_client.utils import floatToGoString

from modelmon.monitoring.exposition import (
    Piece,
    changed,
    family_header,
    sample_lines,
    sample_name,
    series_prefix,
)
from modelmon.monitoring.families import Family


class Series:
    """One family's series for one label set of its base labels (a model version's, say),
    rendered as one piece. ``prefixes`` are set when the series joins its family
    (``ArrayMetrics.add``)."""

    def __init__(self, base_labels: Sequence[str]) -> None:
        self.base_labels = list(base_labels)
        self.prefixes: list[str] = []
        self.family: _Family | None = None
        #: The last values written out (a snapshot), and their piece.
        self.rendered: tuple[object, Piece] | None = None

    @property
    def size(self) -> int:
        """How many series (exposition lines) this object renders."""
        raise NotImplementedError

    def snapshot(self) -> object:
        """The values at one instant, comparable with ``==``."""
        raise NotImplementedError

    def lines(self, snapshot: object) -> str:
        raise NotImplementedError

    def piece(self, reuse: bool = True) -> Piece:
        """The lines of the current values: the last piece again if they did not change."""
        snapshot = self.snapshot()
        rendered = self.rendered
        if reuse and rendered is not None and rendered[0] == snapshot:
            return rendered[1]
        text = self.lines(snapshot).encode()
        self.rendered = (snapshot, changed(rendered[1] if reuse and rendered is not None else None, text))
        return self.rendered[1]


class ArrayCounter(Series):
    """One series per cell: ``cell_labels[i]`` are the extra label values of cell ``i``.
    Used for counters and, set once, for gauges such as reference shares."""

    def __init__(self, base_labels: Sequence[str], cell_labels: Sequence[Sequence[str]]) -> None:
        super().__init__(base_labels)
        self.cell_labels = [list(c) for c in cell_labels]
        self.counts = np.zeros(len(self.cell_labels), dtype=np.float64)

    @property
    def size(self) -> int:
        return len(self.cell_labels)

    def add(self, increments: np.ndarray) -> None:
        self.counts += increments

    def snapshot(self) -> bytes:
        return self.counts.tobytes()

    def lines(self, snapshot: object) -> str:
        assert isinstance(snapshot, bytes)
        return sample_lines(self.prefixes, np.frombuffer(snapshot).tolist())


class ArrayHistogram(Series):
    """A histogram with fixed upper bounds, observed a whole array at a time."""

    def __init__(self, base_labels: Sequence[str], bounds: Sequence[float]) -> None:
        super().__init__(base_labels)
        self.bounds = np.asarray(bounds, dtype=np.float64)
        # Bucket i counts values <= bounds[i] (and > bounds[i-1]); the last one is +Inf.
        self.bucket_counts = np.zeros(len(self.bounds) + 1, dtype=np.float64)
        self.sum = 0.0

    @property
    def size(self) -> int:
        return len(self.bounds) + 3  # the buckets, +Inf, count and sum

    def observe(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        index = np.searchsorted(self.bounds, values, side="left")
        self.bucket_counts += np.bincount(index, minlength=len(self.bucket_counts))
        self.sum += float(values.sum())

    def snapshot(self) -> tuple[bytes, float]:
        return self.bucket_counts.tobytes(), self.sum

    def lines(self, snapshot: object) -> str:
        assert isinstance(snapshot, tuple)
        cumulative = np.cumsum(np.frombuffer(snapshot[0])).tolist()
        return sample_lines(self.prefixes, [*cumulative, cumulative[-1], snapshot[1]])


class CounterChild:
    """One counter series of a ``ListCounter``: ``inc`` adds to its list item. Written by one
    thread (the event loop)."""

    __slots__ = ("index", "values")

    def __init__(self, values: list[float], index: int) -> None:
        self.values = values
        self.index = index

    def inc(self, amount: float = 1.0) -> None:
        self.values[self.index] += amount

    def get(self) -> float:
        return self.values[self.index]


class GaugeChild(CounterChild):
    __slots__ = ()

    def dec(self, amount: float = 1.0) -> None:
        self.values[self.index] -= amount

    def set(self, value: float) -> None:
        self.values[self.index] = float(value)


class ListCounter(Series):
    """Counters or gauges of one family, one list item each, counted through bound children
    (``child``). Cells can be added later (``add_cell``: a status code first seen)."""

    def __init__(self, base_labels: Sequence[str], cell_labels: Sequence[Sequence[str]]) -> None:
        super().__init__(base_labels)
        self.cell_labels = [list(c) for c in cell_labels]
        self.values = [0.0] * len(self.cell_labels)

    @property
    def size(self) -> int:
        return len(self.cell_labels)

    def child(self, index: int) -> GaugeChild:
        return GaugeChild(self.values, index)

    def add_cell(self, cell: Sequence[str]) -> GaugeChild:
        """A new series (from the event loop): its prefix first, so a scrape that copies the
        values before the new one never sees a value without its prefix."""
        assert self.family is not None, "add the series to its family first"
        self.cell_labels.append(list(cell))
        self.prefixes.append(self.family.prefix(self.base_labels, cell))
        self.values.append(0.0)
        return self.child(len(self.values) - 1)

    def snapshot(self) -> list[float]:
        return self.values[:]

    def lines(self, snapshot: object) -> str:
        assert isinstance(snapshot, list)
        return sample_lines(self.prefixes[: len(snapshot)], snapshot)


class HistogramChild:
    """One histogram series of a ``ListHistogram``: ``observe`` adds to its bucket and sum.
    Bucket i counts values <= bounds[i], as prometheus_client's do."""

    __slots__ = ("bounds", "offset", "sum_index", "values")

    def __init__(self, values: list[float], offset: int, bounds: tuple[float, ...]) -> None:
        self.values = values
        self.offset = offset
        self.bounds = bounds
        self.sum_index = offset + len(bounds) + 1

    def observe(self, value: float) -> None:
        values = self.values
        values[self.offset + bisect_left(self.bounds, value)] += 1.0
        values[self.sum_index] += value


class ListHistogram(Series):
    """Histograms of one family sharing their bounds, one per ``cell_labels`` (the endpoints
    of a version, say), in one list: each cell's buckets (the last one +Inf), then its sum."""

    def __init__(self, base_labels: Sequence[str], cell_labels: Sequence[Sequence[str]], bounds: Sequence[float]) -> None:
        super().__init__(base_labels)
        self.cell_labels = [list(c) for c in cell_labels]
        self.bounds = tuple(float(b) for b in bounds)
        self.stride = len(self.bounds) + 2
        self.values = [0.0] * (self.stride * len(self.cell_labels))

    @property
    def size(self) -> int:
        return (len(self.bounds) + 3) * len(self.cell_labels)

    def child(self, index: int) -> HistogramChild:
        return HistogramChild(self.values, index * self.stride, self.bounds)

    def snapshot(self) -> list[float]:
        return self.values[:]

    def lines(self, snapshot: object) -> str:
        assert isinstance(snapshot, list)
        values: list[float] = []
        stride = self.stride
        for start in range(0, len(snapshot), stride):
            cumulative = list(accumulate(snapshot[start : start + stride - 1]))
            values += cumulative
            values += (cumulative[-1], snapshot[start + stride - 1])
        return sample_lines(self.prefixes, values)


_Series = TypeVar("_Series", bound=Series)


@dataclass
class _Family:
    name: str  # without the _total suffix of a counter
    documentation: str
    kind: str  # counter, gauge or histogram
    labelnames: list[str]
    #: Labels written in name order (as prometheus_client writes them) instead of declared order.
    sort_labels: bool = False
    series: list[Series] = field(default_factory=list)
    headers: dict[bool, Piece] = field(default_factory=dict)

    def header(self, openmetrics: bool) -> Piece:
        piece = self.headers.get(openmetrics)
        if piece is None:
            piece = self.headers[openmetrics] = Piece(family_header(self.name, self.documentation, self.kind, openmetrics).encode())
        return piece

    def prefix(self, base: Sequence[str], cell: Sequence[str]) -> str:
        return series_prefix(sample_name(self.name, self.kind), self.labelnames, [*base, *cell], self.sort_labels)

    def histogram_prefixes(self, base: Sequence[str], cell: Sequence[str], bounds: Sequence[float]) -> list[str]:
        """Bucket, count and sum prefixes of one histogram series."""
        names = [*self.labelnames, "le"]
        prefixes = [
            series_prefix(f"{self.name}_bucket", names, [*base, *cell, floatToGoString(b)], self.sort_labels)
            for b in [*bounds, float("inf")]
        ]
        prefixes.append(series_prefix(f"{self.name}_count", self.labelnames, [*base, *cell], self.sort_labels))
        prefixes.append(series_prefix(f"{self.name}_sum", self.labelnames, [*base, *cell], self.sort_labels))
        return prefixes


class ArrayMetrics:
    """Every array-backed family of one server, and their exposition."""

    def __init__(self) -> None:
        self.families: dict[str, _Family] = {}
        #: Reuse unchanged series' pieces from one scrape to the next (off only to measure
        #: what writing everything at every scrape costs: benchmarks/many_models.py).
        self.reuse = True

    def family(self, family: Family, sort_labels: bool = False) -> Family:
        """Declare a family (families render in the order they are declared)."""
        self.families.setdefault(
            family.name, _Family(family.name, family.help, family.kind, list(family.labels), sort_labels)
        )
        return family

    def add(self, declared: Family, series: _Series) -> _Series:
        """Add one version's series to a declared family; it renders from now on."""
        family = self.families[declared.name]
        series.family = family
        if isinstance(series, ArrayHistogram):
            assert family.kind == "histogram", f"{family.name} is a {family.kind}: its series are not histograms"
            series.prefixes = family.histogram_prefixes(series.base_labels, [], series.bounds.tolist())
        elif isinstance(series, ListHistogram):
            assert family.kind == "histogram", f"{family.name} is a {family.kind}: its series are not histograms"
            series.prefixes = [
                p for cell in series.cell_labels for p in family.histogram_prefixes(series.base_labels, cell, series.bounds)
            ]
        else:
            assert isinstance(series, ArrayCounter | ListCounter)
            assert family.kind != "histogram", f"{family.name} is a histogram: its series are histograms"
            series.prefixes = [family.prefix(series.base_labels, cell) for cell in series.cell_labels]
        family.series.append(series)
        return series

    def remove_series(self, base_labels: Sequence[str]) -> int:
        """Forget every series of one model version (when it is unloaded); how many there were."""
        wanted = list(base_labels)
        removed = 0
        for family in self.families.values():
            kept = [s for s in family.series if s.base_labels != wanted]
            removed += sum(s.size for s in family.series if s.base_labels == wanted)
            family.series[:] = kept
        return removed

    def series_count(self) -> int:
        return sum(s.size for family in self.families.values() for s in list(family.series))

    def pieces(self, openmetrics: bool = False, pause: Callable[[], None] = lambda: None) -> list[Piece]:
        """Every family's header and series, in declaration order; ``pause`` is called
        between series (``exposition.Slicer``)."""
        reuse = self.reuse
        out: list[Piece] = []
        for family in list(self.families.values()):
            out.append(family.header(openmetrics))
            for i, series in enumerate(list(family.series)):
                # Series.piece, its common case inline: nothing changed.
                rendered = series.rendered
                if reuse and rendered is not None and rendered[0] == series.snapshot():
                    out.append(rendered[1])
                else:
                    out.append(series.piece(reuse))
                if i % 16 == 15:
                    pause()
        return out

    def render(self) -> str:
        """The text format (0.0.4) of every family."""
        return b"".join(p.text for p in self.pieces()).decode()
