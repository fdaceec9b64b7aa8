"""The dashboards as plain data: panels, their queries and the template variables.

One description serves three readers: ``modelmon.dashboards.grafana`` turns it into Grafana
dashboard JSON (through grafana-foundation-sdk), ``modelmon.dashboards.report`` runs the same
queries and draws the same panels into an HTML file, and the tests run every query against
a real Prometheus and real SQL stores. A query is written once for Prometheus; a SQL query is
written per dialect, PostgreSQL (Grafana's ``grafana-postgresql-datasource``) and SQLite (the
``frser-sqlite-datasource`` plugin), because the two data sources have different macros.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: The data source kinds a panel or variable reads: Prometheus, or the SQL store (whichever
#: database the export was made for).
Source = Literal["prometheus", "sql"]
Dialect = Literal["postgresql", "sqlite"]
DIALECTS: tuple[Dialect, ...] = ("postgresql", "sqlite")

PanelKind = Literal["timeseries", "stat", "table", "bargauge", "barchart", "heatmap", "xychart", "state-timeline"]


@dataclass(frozen=True)
class Prom:
    """A PromQL target. ``instant`` queries are evaluated once, at the end of the range."""

    expr: str
    legend: str = ""
    instant: bool = False
    format: Literal["time_series", "table", "heatmap"] = "time_series"

    source: Source = field(default="prometheus", init=False)


@dataclass(frozen=True)
class Sql:
    """A SQL target, per dialect. ``time_series`` results have a ``time`` column, an
    optional ``metric`` column naming the series and one or more value columns."""

    postgresql: str
    sqlite: str
    format: Literal["table", "time_series"] = "table"

    source: Source = field(default="sql", init=False)

    def text(self, dialect: Dialect) -> str:
        return self.postgresql if dialect == "postgresql" else self.sqlite


Query = Prom | Sql


@dataclass(frozen=True)
class Threshold:
    value: float | None  # None: the base step
    color: str


@dataclass(frozen=True)
class SeriesStyle:
    """A fixed look for the series whose name (its legend) matches ``pattern`` whole, as
    Grafana's "fields with name matching regex" override matches it: reference lines such
    as a gate's margin, in ``color`` and dashed."""

    pattern: str
    color: str
    dashed: bool = True


@dataclass(frozen=True)
class Panel:
    kind: PanelKind
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    width: int = 12
    height: int = 8
    min: float | None = None
    max: float | None = None
    decimals: int | None = None
    thresholds: tuple[Threshold, ...] = ()
    #: Draw the thresholds on a time series panel as dashed lines.
    show_thresholds: bool = False
    #: Grafana transformations, as Grafana stores them ({"id": ..., "options": {...}}).
    transformations: tuple[dict, ...] = ()
    #: The field on the x axis (bar chart: a category such as ``bin``; XY chart: ``step``).
    x_field: str | None = None
    #: Repeat the panel for every selected value of this variable.
    repeat: str | None = None
    #: Value mappings for state timelines: value -> (text, color).
    states: tuple[tuple[int, str, str], ...] = ()
    #: Series drawn in a fixed colour (time series): Grafana overrides, the report's lines.
    styles: tuple[SeriesStyle, ...] = ()
    #: Left out of the report when it has no data: a metric some runs of its task log and
    #: others do not (a regressor's own loss). Grafana draws it, empty for those runs.
    optional: bool = False
    #: A fixed Grafana panel id, for panels an alert links to (``__panelId__`` of the Grafana
    #: rules, alerting/builtins.py: PANELS); the others are numbered in order around them.
    id: int | None = None

    @property
    def source(self) -> Source:
        return self.queries[0].source

    def __post_init__(self) -> None:
        if not self.queries:
            raise ValueError(f"panel {self.title!r} has no query")
        if len({q.source for q in self.queries}) != 1:
            raise ValueError(f"panel {self.title!r} mixes Prometheus and SQL queries")
        if not self.description or not self.unit:
            raise ValueError(f"panel {self.title!r} needs a description and a unit")
        if self.styles and self.kind != "timeseries":
            raise ValueError(f"panel {self.title!r}: series styles are for time series")
        if self.id is not None and self.id < 100:
            raise ValueError(f"panel {self.title!r}: fixed ids start at 100 (below are numbered in order)")


@dataclass(frozen=True)
class Variable:
    """A template variable. ``kind`` ``query`` reads its values from ``source``: a PromQL
    ``label_values(...)`` expression, or SQL per dialect (one column of values, or
    ``__value`` and ``__text`` columns on PostgreSQL). ``custom`` lists fixed ``options``."""

    name: str
    label: str
    description: str
    kind: Literal["query", "custom"]
    source: Source = "prometheus"
    query: str | Sql = ""
    options: tuple[str, ...] = ()
    default: str | None = None
    multi: bool = False
    include_all: bool = False
    #: What "All" stands for in queries (Prometheus: ``.*``); None lists every value.
    all_value: str | None = None
    #: Hidden from the dashboard's variable bar (Grafana's ``hide: 2``).
    hidden: bool = False
    #: No value is a valid choice: a label the setup does not have (cluster), whose empty
    #: value matches every series.
    may_be_empty: bool = False


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]
    #: The model task the row is about ("classification", "regression"); None: any model.
    #: Grafana shows every row (the other task's are empty); the report draws a row only
    #: for a model of its task.
    task: str | None = None
    #: Drawn in the report only when this query has data (the rollout row: only for a model
    #: that has had a rollout, which would otherwise be a row of empty panels). Grafana
    #: shows every row.
    only_if: Prom | None = None


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    variables: tuple[Variable, ...]
    rows: tuple[Row, ...]
    tags: tuple[str, ...] = ("modelmon",)
    time_from: str = "now-6h"
    refresh: str = "30s"

    @property
    def panels(self) -> list[Panel]:
        return [p for row in self.rows for p in row.panels]

    def variable(self, name: str) -> Variable:
        for v in self.variables:
            if v.name == name:
                return v
        raise KeyError(f"dashboard {self.uid} has no variable {name!r}")
