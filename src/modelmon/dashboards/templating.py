"""What Grafana does to a query before it runs, done in Python: template variables, the
built-in interval and range variables, and the SQL data sources' macros.

The report runs the dashboards' queries through this, and so do the tests that prove every
panel returns data. The rules follow Grafana's:

- ``$__interval`` is the time range divided by the panel's data points (1,000 here, about a
  wide panel's width in pixels), rounded up to a round duration and never below the
  minimum interval (the Prometheus data source's scrape interval); it is also the step of a
  Prometheus range query. ``$__rate_interval`` is ``max($__interval + scrape interval,
  4 x scrape interval)``. ``$__range`` is the whole range.
- A variable that is multi-valued or has "All" is formatted for Prometheus as an escaped
  regular expression (``(a|b)``), for SQL as quoted values (``'a','b'``); a single-valued
  variable as its raw value. "All" with a custom ``allValue`` (``.*``) is that value as it
  is, in every data source and format. ``${var:singlequote}``,
  ``${var:csv}``, ``${var:pipe}``, ``${var:regex}`` and ``${var:raw}`` format explicitly.
- Macros after variables, per data source: PostgreSQL as Grafana's
  ``grafana-postgresql-datasource`` expands them (``$__timeFilter(col)`` becomes
  ``col BETWEEN '<from>' AND '<to>'`` in RFC 3339, ``$__timeGroupAlias(col, 1m)``
  ``floor(extract(epoch from col)/60)*60 AS "time"``, ...), SQLite as the
  ``frser-sqlite-datasource`` plugin does (``$__timeFilter`` compares Unix seconds,
  ``$__unixEpochGroupSeconds(col, n)`` buckets a number).

An unknown variable or macro raises ``TemplateError``: a query that Grafana would leave
half-expanded fails here first.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from modelmon.dashboards.spec import Dialect

DEFAULT_MAX_POINTS = 1000
#: Grafana's round intervals, in seconds (a subset of its rounding table, same steps).
ROUND_INTERVALS = (
    0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200,
    1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800, 2592000, 31536000,
)
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\$(\w+)")
MACRO = re.compile(r"\$(__\w+)\(([^)]*)\)")


class TemplateError(ValueError):
    """A query names a variable or macro that is not defined."""


@dataclass(frozen=True)
class TimeRange:
    start: datetime
    end: datetime

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()

    @classmethod
    def last(cls, seconds: float, end: datetime | None = None) -> TimeRange:
        end = end or datetime.now(UTC)
        return cls(datetime.fromtimestamp(end.timestamp() - seconds, UTC), end)


@dataclass(frozen=True)
class Selection:
    """The values chosen for a variable; ``all`` when "All" is chosen."""

    values: tuple[str, ...]
    all: bool = False
    all_value: str | None = None
    multi: bool = False

    @classmethod
    def single(cls, value: str) -> Selection:
        return cls((value,))


@dataclass
class Expansion:
    """The context a query is expanded in."""

    time_range: TimeRange
    variables: dict[str, Selection] = field(default_factory=dict)
    #: The minimum interval: the Prometheus data source's scrape interval (``timeInterval``).
    min_interval: float = 15.0
    max_points: int = DEFAULT_MAX_POINTS

    @property
    def interval(self) -> float:
        raw = self.time_range.seconds / self.max_points
        rounded = next((r for r in ROUND_INTERVALS if r >= raw), ROUND_INTERVALS[-1])
        return max(rounded, self.min_interval)

    @property
    def rate_interval(self) -> float:
        return max(self.interval + self.min_interval, 4 * self.min_interval)

    def builtins(self) -> dict[str, str]:
        tr = self.time_range
        return {
            "__interval": duration(self.interval),
            "__interval_ms": str(round(self.interval * 1000)),
            "__rate_interval": duration(self.rate_interval),
            "__range": duration(tr.seconds),
            "__range_s": str(round(tr.seconds)),
            "__range_ms": str(round(tr.seconds * 1000)),
            "__from": str(int(tr.start.timestamp() * 1000)),
            "__to": str(int(tr.end.timestamp() * 1000)),
        }


def duration(seconds: float) -> str:
    """A Prometheus/Grafana duration: whole seconds (``90s``), or milliseconds below 1 s."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    whole = math.ceil(seconds - 1e-9)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def parse_duration(text: str) -> float:
    """Grafana's interval syntax (``1m``, ``500ms``, ``3600s``) in seconds."""
    match = re.fullmatch(r"\s*'?(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)'?\s*", text)
    if not match:
        raise TemplateError(f"cannot parse the interval {text!r}")
    return float(match.group(1)) * UNITS[match.group(2)]


def _regex_escape(value: str) -> str:
    """Grafana's Prometheus data source (prometheusSpecialRegexEscape) for multi-value
    variables: two backslashes before each regex metacharacter, four for a backslash, since
    the value lands in a PromQL string, which takes one level of escapes away."""
    return re.sub(r"[$^*{}\[\]+?.()|]", lambda m: "\\\\" + m.group(0), value.replace("\\", "\\" * 4))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def format_value(selection: Selection, fmt: str | None, target: str) -> str:
    # Grafana (templateSrv) writes a custom "All" value as it is, whatever the data source
    # and the format (but text and percentencode): ``${version:csv}`` is ``.*`` in SQL too.
    if selection.all and selection.all_value is not None and fmt not in ("text", "percentencode"):
        return selection.all_value
    values = list(selection.values)
    if fmt == "singlequote":
        return ",".join("'" + v.replace("'", "\\'") + "'" for v in values)
    if fmt == "csv":
        return ",".join(values)
    if fmt == "pipe":
        return "|".join(values)
    if fmt == "raw":
        return ",".join(values)
    if fmt == "regex" or (fmt is None and target == "prometheus" and (selection.multi or selection.all)):
        escaped = [_regex_escape(v) for v in values]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"
    if fmt is None and target == "sql" and (selection.multi or selection.all):
        return ",".join(_quote(v) for v in values)
    if fmt is not None and fmt not in ("regex",):
        raise TemplateError(f"unsupported variable format {fmt!r}")
    return values[0] if values else ""


def interpolate(text: str, context: Expansion, target: str) -> str:
    """Replace template variables (``$name``, ``${name}``, ``${name:format}``) and built-ins;
    leave macros (``$__name(...)``) for ``expand_macros``."""
    builtins = context.builtins()

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3)
        fmt = match.group(2)
        if name.isdigit():  # $1 in a regex replacement
            return match.group(0)
        if name in context.variables:
            return format_value(context.variables[name], fmt, target)
        if name in builtins:
            return builtins[name]
        if name.startswith("__") and text[match.end() : match.end() + 1] == "(":
            return match.group(0)  # a macro
        raise TemplateError(f"undefined variable ${name} in {text!r}")

    return VARIABLE.sub(replace, text)


def _go_float(value: float) -> str:
    """A float as Go's ``%v`` prints it: shortest digits, exponent form from 1e+06 or below
    1e-04 (3600, 0.5, 1e+06)."""
    import numpy as np

    value = float(value)
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)))
    if exponent < -4 or exponent >= 6:
        return np.format_float_scientific(value, unique=True, exp_digits=2, trim="-")
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


def _rfc3339(moment: datetime) -> str:
    text = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def expand_macros(sql: str, context: Expansion, dialect: Dialect) -> str:
    tr = context.time_range

    def postgresql(name: str, args: list[str]) -> str:
        if name == "__time":
            return f'{args[0]} AS "time"'
        if name == "__timeEpoch":
            return f'extract(epoch from {args[0]}) as "time"'
        if name == "__timeFilter":
            return f"{args[0]} BETWEEN '{_rfc3339(tr.start)}' AND '{_rfc3339(tr.end)}'"
        if name == "__timeFrom":
            return f"'{_rfc3339(tr.start)}'"
        if name == "__timeTo":
            return f"'{_rfc3339(tr.end)}'"
        if name in ("__timeGroup", "__timeGroupAlias"):
            if len(args) < 2:
                raise TemplateError(f"macro ${name} needs a time column and an interval")
            seconds = _go_float(parse_duration(args[1]))
            group = f"floor(extract(epoch from {args[0]})/{seconds})*{seconds}"
            return group + (' AS "time"' if name == "__timeGroupAlias" else "")
        if name == "__unixEpochFilter":
            return f"{args[0]} >= {int(tr.start.timestamp())} AND {args[0]} <= {int(tr.end.timestamp())}"
        if name in ("__unixEpochGroup", "__unixEpochGroupAlias"):
            seconds = _go_float(parse_duration(args[1]))
            group = f"floor(({args[0]})/{seconds})*{seconds}"
            return group + (' AS "time"' if name == "__unixEpochGroupAlias" else "")
        raise TemplateError(f"unknown PostgreSQL macro ${name}")

    def sqlite(name: str, args: list[str]) -> str:
        if name == "__timeFilter":
            if len(args) != 1:
                raise TemplateError("$__timeFilter takes one column")
            column = args[0]
            return (f"CAST(CASE WHEN typeof({column}) = 'integer' THEN {column} ELSE strftime(\"%s\", {column}) END AS INTEGER)"
                    f" BETWEEN {int(tr.start.timestamp())} AND {int(tr.end.timestamp())}")
        if name == "__unixEpochGroupSeconds":
            if len(args) not in (2, 3):
                raise TemplateError("$__unixEpochGroupSeconds takes a column and an interval in seconds")
            try:
                seconds = int(args[1].strip())
            except ValueError:
                raise TemplateError(f"could not convert {args[1]!r} to an integer grouping interval") from None
            return f"cast(({args[0]} / {seconds}) as int) * {seconds}"
        raise TemplateError(f"unknown SQLite (frser-sqlite-datasource) macro ${name}")

    expand = postgresql if dialect == "postgresql" else sqlite

    def replace(match: re.Match[str]) -> str:
        return expand(match.group(1), [a.strip() for a in match.group(2).split(",")])

    return MACRO.sub(replace, sql)


def expand_promql(expr: str, context: Expansion) -> str:
    return interpolate(expr, context, "prometheus")


def expand_sql(sql: str, context: Expansion, dialect: Dialect) -> str:
    return expand_macros(interpolate(sql, context, "sql"), context, dialect)
