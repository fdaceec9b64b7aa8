"""Run the dashboards' queries as Grafana would: PromQL through Prometheus's HTTP API, SQL on
the store; template variables resolved by their own queries.

The report draws its charts from these results, and the tests use them to prove that no
panel of any dashboard is empty after real traffic.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import httpx

from modelmon.dashboards import spec
from modelmon.dashboards.spec import Dialect
from modelmon.dashboards.templating import (
    Expansion,
    Selection,
    TimeRange,
    expand_promql,
    expand_sql,
)
from modelmon.errors import ModelmonError

if TYPE_CHECKING:
    from modelmon.store import Store

LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<match>.+?)\s*,\s*)?(?P<label>\w+)\s*\)\s*$")
LEGEND = re.compile(r"\{\{\s*(\w+)\s*\}\}")


class QueryError(ModelmonError):
    """A query failed to run (Prometheus or the store answered with an error)."""


@dataclass
class Series:
    name: str
    labels: dict[str, str]
    times: list[float]  # Unix seconds
    values: list[float]

    @property
    def finite(self) -> bool:
        return any(math.isfinite(v) for v in self.values)


@dataclass
class Table:
    columns: list[str]
    rows: list[tuple[Any, ...]]


@dataclass
class Result:
    """One query's answer: time series (Prometheus; SQL in time_series format) and/or a
    table (instant Prometheus queries and SQL)."""

    query: spec.Query
    text: str
    series: list[Series] = field(default_factory=list)
    table: Table | None = None

    @property
    def has_data(self) -> bool:
        """What Grafana shows as data rather than "No data": a series with a finite value,
        or a table with a row."""
        if isinstance(self.query, spec.Sql):
            return bool(self.table and self.table.rows)
        return any(s.finite for s in self.series)


@dataclass
class Source:
    """Where the queries go: a Prometheus URL and/or a store (URL or path)."""

    prometheus_url: str | None = None
    store_url: str | None = None
    #: The scrape interval of that Prometheus: Grafana's minimum interval.
    scrape_interval: float = 15.0
    timeout: float = 30.0
    _store: Store | None = field(default=None, init=False, repr=False)
    #: Why the store could not be opened, once it failed: each panel then says so, as with an
    #: unreachable Prometheus, without waiting for the connection again.
    _store_error: str | None = field(default=None, init=False, repr=False)

    @property
    def dialect(self) -> Dialect:
        # A store is SQLite or PostgreSQL: resolve_store_url refuses any other.
        return "postgresql" if self.store_url and self.store.dialect == "postgresql" else "sqlite"

    @property
    def store(self) -> Store:
        if self._store is None:
            if not self.store_url:
                raise QueryError("no store given (--store): SQL panels cannot run")
            if self._store_error is not None:
                raise QueryError(self._store_error)
            from modelmon.store import open_store

            try:
                self._store = open_store(self.store_url)
            except ModelmonError as exc:  # StoreError: unreachable, refused, not a store
                self._store_error = exc.message
                raise QueryError(exc.message) from None
        return self._store

    # -- Prometheus ------------------------------------------------------------------------

    def _prometheus(self, path: str, params: dict[str, Any]) -> Any:
        if not self.prometheus_url:
            raise QueryError("no Prometheus URL given (--prometheus): Prometheus panels cannot run")
        try:
            response = httpx.post(f"{self.prometheus_url.rstrip('/')}{path}", data=params, timeout=self.timeout)
        except httpx.HTTPError as exc:
            raise QueryError(f"cannot reach Prometheus at {self.prometheus_url}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            raise QueryError(f"Prometheus answered {response.status_code}: {response.text[:200]}") from None
        if body.get("status") != "success":
            raise QueryError(f"Prometheus rejected {params.get('query') or params}: {body.get('error', body)}")
        return body["data"]

    def prom_range(self, expr: str, tr: TimeRange, step: float) -> list[dict[str, Any]]:
        data = self._prometheus("/api/v1/query_range", {
            "query": expr, "start": tr.start.timestamp(), "end": tr.end.timestamp(), "step": step,
        })
        return data["result"]

    def prom_instant(self, expr: str, at: datetime) -> list[dict[str, Any]]:
        data = self._prometheus("/api/v1/query", {"query": expr, "time": at.timestamp()})
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def prom_label_values(self, label: str, match: str | None, tr: TimeRange) -> list[str]:
        params: dict[str, Any] = {"start": tr.start.timestamp(), "end": tr.end.timestamp()}
        if match:
            series = self._prometheus("/api/v1/series", {**params, "match[]": match})
            return sorted({s[label] for s in series if label in s})
        if not self.prometheus_url:
            raise QueryError("no Prometheus URL given")
        response = httpx.get(f"{self.prometheus_url.rstrip('/')}/api/v1/label/{label}/values", params=params, timeout=self.timeout)
        return sorted(response.json().get("data", []))

    # -- SQL --------------------------------------------------------------------------------

    def sql(self, text: str) -> Table:
        from sqlalchemy.exc import DBAPIError

        try:
            with self.store.read() as connection:
                result = connection.exec_driver_sql(text)
                columns = list(result.keys())
                rows = [tuple(row) for row in result.all()]
        except DBAPIError as exc:
            raise QueryError(f"the store rejected the query: {exc.orig}\n{text}") from None
        return Table(columns, rows)


def legend_name(legend: str, labels: dict[str, str], fallback: str) -> str:
    if not legend:
        return fallback
    return LEGEND.sub(lambda m: labels.get(m.group(1), ""), legend)


def _series_name(labels: dict[str, str]) -> str:
    name = labels.get("__name__", "")
    rest = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{rest}}}" if rest else name or "value"


def _number(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, Decimal | int | float):
        return float(value)
    if isinstance(value, datetime):
        return value.timestamp()
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _time(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp()
        except ValueError:
            return None
    return _number(value)


def sql_series(table: Table) -> list[Series]:
    """Grafana's conversion of a SQL result in time_series format: the ``time`` column, an
    optional ``metric`` column naming series, every other numeric column a value."""
    if "time" not in table.columns:
        return []
    t = table.columns.index("time")
    m = table.columns.index("metric") if "metric" in table.columns else None
    value_columns = [i for i, c in enumerate(table.columns) if i not in (t, m)]
    series: dict[str, Series] = {}
    for row in table.rows:
        when = _time(row[t])
        if when is None:
            continue
        for i in value_columns:
            name = str(row[m]) if m is not None else table.columns[i]
            if m is not None and len(value_columns) > 1:
                name = f"{row[m]} {table.columns[i]}"
            value = _number(row[i])
            s = series.setdefault(name, Series(name, {}, [], []))
            s.times.append(when)
            s.values.append(math.nan if value is None else value)
    return list(series.values())


def run_query(query: spec.Query, source: Source, context: Expansion) -> Result:
    """Run one query with the variables and time range of ``context``."""
    tr = context.time_range
    if isinstance(query, spec.Prom):
        text = expand_promql(query.expr, context)
        result = Result(query, text)
        if query.instant:
            vector = source.prom_instant(text, tr.end)
            label_names = sorted({k for item in vector for k in item["metric"] if k != "__name__"})
            rows = []
            for item in vector:
                labels = item["metric"]
                value = float(item["value"][1])
                result.series.append(Series(legend_name(query.legend, labels, _series_name(labels)), labels,
                                            [float(item["value"][0])], [value]))
                rows.append((*(labels.get(k, "") for k in label_names), value))
            result.table = Table([*label_names, "Value"], rows)
        else:
            for item in source.prom_range(text, tr, context.interval):
                labels = item["metric"]
                times = [float(t) for t, _ in item["values"]]
                values = [float(v) for _, v in item["values"]]
                result.series.append(Series(legend_name(query.legend, labels, _series_name(labels)), labels, times, values))
        return result
    text = expand_sql(query.text(source.dialect), context, source.dialect)
    table = source.sql(text)
    result = Result(query, text, table=table)
    if query.format == "time_series":
        result.series = sql_series(table)
    return result


def variable_values(variable: spec.Variable, source: Source, context: Expansion) -> list[str]:
    """The values a variable offers, from its own query (or its fixed options)."""
    if variable.kind == "custom":
        return list(variable.options)
    if variable.source == "prometheus":
        assert isinstance(variable.query, str)
        match = LABEL_VALUES.match(variable.query)
        if not match:
            raise QueryError(f"variable {variable.name}: only label_values(...) queries are supported")
        selector = expand_promql(match.group("match"), context) if match.group("match") else None
        return source.prom_label_values(match.group("label"), selector, context.time_range)
    assert isinstance(variable.query, spec.Sql)
    table = source.sql(expand_sql(variable.query.text(source.dialect), context, source.dialect))
    column = table.columns.index("__value") if "__value" in table.columns else 0
    return [str(row[column]) for row in table.rows if row[column] is not None]


def resolve_variables(
    dashboard: spec.Dashboard, source: Source, context: Expansion, chosen: dict[str, str | list[str]] | None = None
) -> dict[str, Selection]:
    """Each variable's selection, in order (later variables' queries use earlier ones):
    the value in ``chosen`` (a value, a list, or "All"), else the variable's default, else
    its first value. Also stores them in ``context.variables``."""
    chosen = chosen or {}
    for variable in dashboard.variables:
        values = variable_values(variable, source, context)
        want = chosen.get(variable.name, variable.default)
        if variable.name not in chosen and variable.kind == "query" and want not in (None, "All") and values and want not in values:
            want = None  # Grafana keeps a default only if the query offers it, else takes the first value
        if want == "All" and variable.include_all:
            selection = Selection(tuple(values), all=True, all_value=variable.all_value, multi=variable.multi)
        elif want is None:
            selection = Selection(tuple(values[:1]), multi=variable.multi)
        else:
            picked = tuple(want) if isinstance(want, list) else (want,)
            selection = Selection(picked, multi=variable.multi or variable.include_all)
        context.variables[variable.name] = selection
    return dict(context.variables)


def panel_contexts(panel: spec.Panel, context: Expansion) -> list[tuple[str | None, Expansion]]:
    """The contexts a panel is drawn in: one, or one per value of its repeat variable."""
    if not panel.repeat:
        return [(None, context)]
    selection = context.variables[panel.repeat]
    out: list[tuple[str | None, Expansion]] = []
    for value in selection.values:
        variables = {**context.variables, panel.repeat: Selection.single(value)}
        out.append((value, Expansion(context.time_range, variables, context.min_interval, context.max_points)))
    return out


def interpolate_title(title: str, context: Expansion) -> str:
    from modelmon.dashboards.templating import interpolate

    try:
        return interpolate(title, context, "sql").replace("'", "")
    except ValueError:
        return title
