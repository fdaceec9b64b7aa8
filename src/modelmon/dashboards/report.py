"""``modelmon report --out report.html``: the dashboards' panels for users without Grafana.

The same panel definitions as the Grafana dashboards (``modelmon.dashboards.catalog``), the
same queries expanded the same way (``modelmon.dashboards.templating``), run against
Prometheus (``--prometheus URL``) and the store (``--store URL``), drawn with matplotlib
into PNG charts embedded in one self-contained HTML file (no script, no external link).
Needs matplotlib (``pip install 'modelmon[plot]'``).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from modelmon.dashboards import catalog, spec
from modelmon.dashboards import decisions as rollout_table
from modelmon.dashboards.queries import (
    QueryError,
    Result,
    Source,
    Table,
    panel_contexts,
    resolve_variables,
    run_query,
)
from modelmon.dashboards.templating import Expansion, TemplateError, TimeRange, parse_duration
from modelmon.errors import ModelmonError

#: Grafana's colour names the panels use, as matplotlib colours.
NAMED_COLORS = {"green": "#2ca02c", "red": "#d62728", "orange": "#ff7f0e"}
COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
MAX_TABLE_ROWS = 50
MAX_SERIES = 12


@dataclass
class PanelOutcome:
    dashboard: str
    title: str
    has_data: bool
    error: str | None = None


@dataclass
class ReportSummary:
    out: Path
    panels: list[PanelOutcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def drawn(self) -> int:
        return sum(p.has_data for p in self.panels)

    @property
    def empty(self) -> list[PanelOutcome]:
        return [p for p in self.panels if not p.has_data]


# -- formatting --------------------------------------------------------------------------------


def format_number(value: float | None, unit: str, decimals: int | None = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    value = value + 0.0  # no "-0"
    if value == 0:
        return "0" if unit not in ("percentunit",) else "0%"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else max(decimals - 2, 0)}f}%"
    if unit == "s":
        if abs(value) < 1e-3:
            return f"{value * 1e6:.3g} µs"
        if abs(value) < 1:
            return f"{value * 1e3:.3g} ms"
        return f"{value:.3g} s"
    suffix = {"reqps": " req/s", "ops": "/s"}.get(unit, "")
    if decimals is not None:
        return f"{value:.{decimals}f}{suffix}"
    return f"{value:.4g}{suffix}"


def _axis_formatter(unit: str) -> Any:
    from matplotlib.ticker import FuncFormatter

    if unit == "percentunit":
        return FuncFormatter(lambda v, _: f"{v * 100:.0f}%" if abs(v) >= 0.1 or v == 0 else f"{v * 100:.1f}%")
    if unit == "s":
        return FuncFormatter(lambda v, _: format_number(v, "s"))
    return FuncFormatter(lambda v, _: f"{v:.3g}")


def _interpolate_text(text: str, context: Expansion) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        selection = context.variables.get(name)
        if selection is None:
            return match.group(0)
        return "All" if selection.all and len(selection.values) > 1 else ", ".join(selection.values)

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", replace, text)


# -- charts ---------------------------------------------------------------------------------


def _figure(height: float = 3.0) -> tuple[Any, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.0, height), dpi=100)
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def _left_for(labels: list[str]) -> float:
    """A left margin that fits the longest y tick label (about 7 px a character at 8 pt)."""
    return min(0.4, 0.03 + 7.0 * max((len(label) for label in labels), default=4) / 900)


def _png(fig: Any, right: float = 0.78, left: float = 0.1) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    # Fixed margins (tight_layout costs a second draw): room on the right for the legend.
    fig.subplots_adjust(left=left, right=right, top=0.93, bottom=0.2)
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _legend(ax: Any, count: int) -> None:
    if count:
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)


def _timeseries(panel: spec.Panel, results: list[Result]) -> str | None:
    import matplotlib.dates as mdates

    series = [s for r in results for s in r.series if s.finite]
    if not series:
        return None
    fig, ax = _figure()
    # Styled series are reference lines (a gate's margin): always drawn, never cut by MAX_SERIES.
    styled = [s for s in series if _style(panel, s.name) is not None]
    plain = [s for s in series if _style(panel, s.name) is None]
    for i, s in enumerate(plain[:MAX_SERIES] + styled):
        times = [datetime.fromtimestamp(t, UTC) for t in s.times]
        fixed = _style(panel, s.name)
        dashed = fixed.dashed if fixed else s.name.startswith(("threshold", "validation baseline", "baseline"))
        color = NAMED_COLORS.get(fixed.color, fixed.color) if fixed else COLORS[i % len(COLORS)]
        ax.plot(times, s.values, "--" if dashed else "-", label=s.name, color=color, linewidth=1.4,
                marker="o" if len(s.values) < 3 else None, markersize=3)
    if panel.show_thresholds:
        for t in panel.thresholds:
            if t.value is not None:
                ax.axhline(t.value, color=NAMED_COLORS.get(t.color, t.color), linestyle=":", linewidth=1.2,
                           label=f"threshold {t.value:g}")
    if panel.min is not None:
        ax.set_ylim(bottom=panel.min)
    if panel.max is not None:
        ax.set_ylim(top=panel.max)
    ax.yaxis.set_major_formatter(_axis_formatter(panel.unit))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S" if _span(series) < 3 * 3600 else "%m-%d %H:%M"))
    _legend(ax, len(series))
    if len(plain) > MAX_SERIES:
        ax.set_title(f"first {MAX_SERIES} of {len(plain)} series", fontsize=8, loc="right")
    return _png(fig)


def _style(panel: spec.Panel, name: str) -> spec.SeriesStyle | None:
    """The panel's fixed style of a series, matched as Grafana matches its override."""
    return next((style for style in panel.styles if re.fullmatch(style.pattern, name)), None)


def _span(series: list[Any]) -> float:
    times = [t for s in series for t in s.times]
    return max(times) - min(times) if times else 0.0


def _xy(panel: spec.Panel, results: list[Result]) -> str | None:
    curves: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for r in results:
        table = r.table
        if not table or not table.rows:
            continue
        x = table.columns.index(panel.x_field or "step")
        y = table.columns.index("value")
        series = table.columns.index("series")
        for row in table.rows:
            if row[y] is not None:
                curves[str(row[series])].append((float(row[x]), float(row[y])))
    if not curves:
        return None
    fig, ax = _figure()
    runs = sorted({name.rsplit(" ", 1)[0] for name in curves})
    for name, points in sorted(curves.items()):
        points.sort()
        run, split = name.rsplit(" ", 1) if " " in name else (name, "")
        color = COLORS[runs.index(run) % len(COLORS)]
        ax.plot([p[0] for p in points], [p[1] for p in points], "--" if split == "train" else "-", color=color,
                marker="o", markersize=3, linewidth=1.4, label=name)
    ax.set_xlabel(panel.x_field or "step")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.yaxis.set_major_formatter(_axis_formatter(panel.unit))
    _legend(ax, len(curves))
    return _png(fig)


def _query_name(query: spec.Query, index: int) -> str:
    """The name of the ``index``-th query's bars: its legend, else its position."""
    legend = query.legend if isinstance(query, spec.Prom) else ""
    return legend or f"query {index + 1}"


def _categories(results: list[Result], key: str) -> dict[str, dict[str, float]]:
    """Instant tables joined on ``key``: category -> {query name: value}."""
    joined: dict[str, dict[str, float]] = defaultdict(dict)
    for i, r in enumerate(results):
        if not r.table or key not in r.table.columns:
            continue
        k, v = r.table.columns.index(key), r.table.columns.index("Value")
        name = _query_name(r.query, i)
        for row in r.table.rows:
            joined[str(row[k])][name] = float(row[v])
    return joined


def _bin_order(label: str) -> tuple[float, str]:
    match = re.match(r"^[\[(]\s*(-inf|[-+0-9.eE]+)", label)
    if match:
        return (-math.inf if match.group(1) == "-inf" else float(match.group(1)), label)
    return (math.inf, label)


def _barchart(panel: spec.Panel, results: list[Result]) -> str | None:
    import numpy as np

    joined = _categories(results, panel.x_field or "")
    if not joined:
        return None
    categories = sorted(joined, key=_bin_order)
    names = [_query_name(q, i) for i, q in enumerate(panel.queries)]
    fig, ax = _figure()
    width = 0.8 / len(names)
    x = np.arange(len(categories))
    for i, name in enumerate(names):
        ax.bar(x + (i - (len(names) - 1) / 2) * width, [joined[c].get(name, 0.0) for c in categories], width,
               label=name, color=COLORS[i % len(COLORS)])
    ax.set_xticks(x, categories, rotation=30 if len(categories) > 4 else 0, ha="right" if len(categories) > 4 else "center", fontsize=8)
    ax.yaxis.set_major_formatter(_axis_formatter(panel.unit))
    _legend(ax, len(names))
    return _png(fig)


def _bargauge(panel: spec.Panel, results: list[Result]) -> str | None:
    values = [(s.name, s.values[-1]) for r in results for s in r.series if s.finite]
    if not values:
        return None
    values = values[:MAX_SERIES]
    fig, ax = _figure(0.45 * len(values) + 0.9)
    limits = sorted((t.value, t.color) for t in panel.thresholds if t.value is not None)

    def color(value: float) -> str:
        chosen = NAMED_COLORS["green"]
        for limit, name in limits:
            if value >= limit:
                chosen = NAMED_COLORS.get(name, name)
        return chosen

    names = [v[0] for v in values][::-1]
    numbers = [v[1] for v in values][::-1]
    ax.barh(names, numbers, color=[color(v) for v in numbers])
    for y, v in enumerate(numbers):
        ax.text(v, y, " " + format_number(v, panel.unit, panel.decimals), va="center", fontsize=8)
    ax.xaxis.set_major_formatter(_axis_formatter(panel.unit))
    ax.set_xlim(right=max(numbers) * 1.15 if max(numbers) > 0 else None)
    return _png(fig, right=0.95, left=_left_for(names))


def _heatmap(panel: spec.Panel, results: list[Result]) -> str | None:
    import numpy as np

    series = [s for r in results for s in r.series if s.finite]
    if not series:
        return None
    series.sort(key=lambda s: math.inf if s.labels.get("le") == "+Inf" else float(s.labels.get("le", "inf")))
    times = sorted({t for s in series for t in s.times})
    index = {t: i for i, t in enumerate(times)}
    cumulative = np.zeros((len(series), len(times)))
    for row, s in enumerate(series):
        for t, v in zip(s.times, s.values, strict=True):
            cumulative[row, index[t]] = v if math.isfinite(v) else 0.0
    counts = np.diff(np.vstack([np.zeros(len(times)), cumulative]), axis=0).clip(min=0)
    fig, ax = _figure(3.4)
    ax.grid(False)
    image = ax.imshow(counts, aspect="auto", origin="lower", cmap="Oranges", interpolation="nearest")
    labels = [s.labels.get("le", s.name) for s in series]
    ax.set_yticks(range(len(labels)), [f"≤ {lab}" for lab in labels], fontsize=7)
    ticks = np.linspace(0, len(times) - 1, min(6, len(times))).astype(int)
    ax.set_xticks(ticks, [datetime.fromtimestamp(times[i], UTC).strftime("%H:%M:%S") for i in ticks], fontsize=8)
    fig.colorbar(image, ax=ax, label="rows")
    return _png(fig, right=0.97)


def _state_timeline(panel: spec.Panel, results: list[Result]) -> str | None:
    series = [s for r in results for s in r.series if s.finite]
    if not series:
        return None
    colors = {value: NAMED_COLORS.get(color, color) for value, _, color in panel.states}
    fig, ax = _figure(0.4 * len(series) + 1.0)
    step = min((b - a for s in series for a, b in pairwise(s.times)), default=1.0)
    for y, s in enumerate(series):
        for t, v in zip(s.times, s.values, strict=True):
            if math.isfinite(v) and int(v) in colors:
                ax.broken_barh([(t, step)], (y - 0.35, 0.7), color=colors[int(v)])
    ax.set_yticks(range(len(series)), [s.name for s in series], fontsize=8)
    left = _left_for([s.name for s in series])
    ticks = ax.get_xticks()
    ax.set_xticks(ticks, [datetime.fromtimestamp(t, UTC).strftime("%H:%M:%S") for t in ticks], fontsize=8)
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color=colors[v], label=text) for v, text, _ in panel.states], loc="upper left",
              bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    return _png(fig, right=0.85, left=left)


# -- tables and stats ------------------------------------------------------------------------


def _apply_table_transforms(panel: spec.Panel, table: Table) -> Table:
    for transform in panel.transformations:
        options = transform["options"]
        if transform["id"] == "organize":
            keep = [i for i, c in enumerate(table.columns) if not options.get("excludeByName", {}).get(c)]
            table = Table([table.columns[i] for i in keep], [tuple(r[i] for i in keep) for r in table.rows])
        elif transform["id"] == "groupingToMatrix":
            rf, cf, vf = (table.columns.index(options[k]) for k in ("rowField", "columnField", "valueField"))
            row_keys = list(dict.fromkeys(str(r[rf]) for r in table.rows))
            col_keys = list(dict.fromkeys(str(r[cf]) for r in table.rows))
            cells = {(str(r[rf]), str(r[cf])): r[vf] for r in table.rows}
            header = f"{options['rowField']}\\{options['columnField']}"
            table = Table([header, *col_keys], [(rk, *(cells.get((rk, ck)) for ck in col_keys)) for rk in row_keys])
    return table


def _cell(value: Any, unit: str, decimals: int | None) -> str:
    if isinstance(value, float):
        return html.escape(format_number(value, unit if unit not in ("none",) else "short", decimals))
    if isinstance(value, datetime):
        return html.escape(value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"))
    if value is None:
        return ""
    return html.escape(str(value))


def _tables(panel: spec.Panel, results: list[Result]) -> str | None:
    parts = []
    for r in results:
        if not r.table or not r.table.rows:
            continue
        table = _apply_table_transforms(panel, r.table)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{_cell(v, panel.unit, panel.decimals)}</td>" for v in row) + "</tr>"
            for row in table.rows[:MAX_TABLE_ROWS]
        )
        more = f"<p class='note'>first {MAX_TABLE_ROWS} of {len(table.rows)} rows</p>" if len(table.rows) > MAX_TABLE_ROWS else ""
        parts.append(f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>{more}")
    return "".join(parts) or None


def _stats(panel: spec.Panel, results: list[Result]) -> str | None:
    items = []
    for r in results:
        for s in r.series:
            finite = [v for v in s.values if math.isfinite(v)]
            if finite:
                label = "" if s.name in ("value", "") else f"<span class='label'>{html.escape(s.name)}</span>"
                items.append(f"<div class='stat'>{format_number(finite[-1], panel.unit, panel.decimals)}{label}</div>")
    return "".join(items) or None


CHARTS = {
    "timeseries": _timeseries, "xychart": _xy, "barchart": _barchart, "bargauge": _bargauge,
    "heatmap": _heatmap, "state-timeline": _state_timeline,
}


def render_panel(panel: spec.Panel, results: list[Result]) -> str | None:
    """The panel's body as HTML (an embedded PNG, a table or numbers), or None without data."""
    if panel.kind == "table":
        return _tables(panel, results)
    if panel.kind == "stat":
        return _stats(panel, results)
    png = CHARTS[panel.kind](panel, results)
    return None if png is None else f"<img alt='{html.escape(panel.title)}' src='data:image/png;base64,{png}'>"


# -- the report ------------------------------------------------------------------------------

STYLE = """
body { font-family: -apple-system, 'Segoe UI', Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #eee; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin: 1.4em 0 0.3em; color: #555; font-size: 1.05em; text-transform: uppercase; letter-spacing: 0.03em; }
.panel { border: 1px solid #e3e3e3; border-radius: 6px; padding: 0.8em 1em; margin: 0.8em 0; }
.panel h4 { margin: 0 0 0.2em; } .desc { color: #666; font-size: 0.9em; margin: 0 0 0.6em; }
.panel img { max-width: 100%; } .nodata { color: #b35c00; font-style: italic; }
.stat { display: inline-block; font-size: 1.8em; font-weight: 600; margin-right: 1.5em; }
.stat .label { display: block; font-size: 0.45em; font-weight: normal; color: #666; }
table { border-collapse: collapse; font-size: 0.85em; } td, th { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f6f6f6; } td:first-child, th:first-child { text-align: left; }
.scroll { overflow-x: auto; } details { font-size: 0.8em; color: #555; margin-top: 0.5em; }
pre { white-space: pre-wrap; background: #f8f8f8; padding: 0.5em; } .note { color: #777; font-size: 0.85em; }
.meta td { text-align: left; border: none; padding: 0.1em 1em 0.1em 0; }
table.decisions td { text-align: left; }
"""


def _range_of(dashboard: spec.Dashboard, range_seconds: float | None) -> float:
    if range_seconds is not None:
        return range_seconds
    return parse_duration(dashboard.time_from.removeprefix("now-"))


def _needs(dashboard: spec.Dashboard) -> set[str]:
    return {p.source for p in dashboard.panels} | {v.source for v in dashboard.variables if v.kind == "query"}


def write_report(
    out: Path | str,
    prometheus_url: str | None = None,
    store_url: str | None = None,
    *,
    range_seconds: float | None = None,
    model: str | None = None,
    experiment: str | None = None,
    window: str = "1h",
    scrape_interval: float = 15.0,
    end: datetime | None = None,
    title: str = "modelmon report",
) -> ReportSummary:
    """Run every panel's queries and write one self-contained HTML file.

    ``range_seconds`` is the time range of every dashboard [default: each dashboard's own,
    6 h, and 7 days for training]; ``model`` and ``experiment`` pick the dashboards' model and
    experiment [default: the first in alphabetical order, as Grafana does]; ``window`` is the
    recording rules' window (``modelmon rules export --window``); ``scrape_interval`` is
    Prometheus's, the minimum interval of the queries. A dashboard whose source is missing
    (no ``prometheus_url``, no ``store_url``) is listed as skipped."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ModelmonError("the report draws its charts with matplotlib: pip install 'modelmon[plot]'") from None
    if prometheus_url is None and store_url is None:
        raise ModelmonError("give --prometheus URL, --store URL, or both: the report has nothing to read")
    out = Path(out)
    source = Source(prometheus_url=prometheus_url, store_url=store_url, scrape_interval=scrape_interval)
    summary = ReportSummary(out)
    end = end or datetime.now(UTC)
    chosen: dict[str, Any] = {"window": window}
    if model:
        chosen["model"] = model
    if experiment:
        chosen["experiment"] = experiment
    sections = []
    for dashboard in catalog.all_dashboards():
        have = {"prometheus"} if prometheus_url else set()
        if store_url:
            have.add("sql")
        heading = f"<h2 id='{dashboard.uid}'>{html.escape(dashboard.title.removeprefix('modelmon / '))}</h2>"
        missing = _needs(dashboard) - have
        if missing and (missing == _needs(dashboard) or any(v.source in missing for v in dashboard.variables if v.kind == "query")):
            reason = "no Prometheus URL (--prometheus)" if "prometheus" in missing else "no store (--store)"
            summary.notes.append(f"{dashboard.title}: skipped, {reason}")
            sections.append(f"{heading}<p class='nodata'>Skipped: {reason}.</p>")
            continue
        context = Expansion(TimeRange.last(_range_of(dashboard, range_seconds), end), min_interval=scrape_interval)
        try:
            resolve_variables(dashboard, source, context, {k: v for k, v in chosen.items() if any(x.name == k for x in dashboard.variables)})
        except (QueryError, TemplateError) as exc:
            summary.notes.append(f"{dashboard.title}: {exc}")
            sections.append(f"{heading}<p class='nodata'>{html.escape(str(exc))}</p>")
            continue
        empty = [name for name, s in context.variables.items() if not s.values and not dashboard.variable(name).may_be_empty]
        if empty:
            note = f"no value for {', '.join('$' + n for n in empty)}: nothing to show yet"
            summary.notes.append(f"{dashboard.title}: {note}")
            sections.append(f"{heading}<p class='nodata'>{html.escape(note)}.</p>")
            continue
        variables = ", ".join(
            f"{name} = {'All' if s.all and len(s.values) > 1 else ', '.join(s.values)}" for name, s in context.variables.items()
            if s.values  # an empty cluster: no such label
        )
        parts = [heading, f"<p class='desc'>{html.escape(dashboard.description)}<br>{html.escape(variables)}; "
                          f"{html.escape(_range_text(context.time_range))}</p>"]
        task = _task(dashboard, source, context)
        rollout_rows = any(row.only_if == catalog.HAD_ROLLOUT for row in dashboard.rows)
        decisions = _decisions(source, context) if rollout_rows else None
        if decisions is not None and decisions[1] is not None:
            summary.notes.append(f"{dashboard.title}: {decisions[1]}")
        for row in dashboard.rows:
            if row.task and task and row.task != task:
                continue  # a classifier's report has no regression panels, and the reverse
            has_table = any(p.title == rollout_table.TITLE for p in row.panels)
            if row.only_if is not None and (decisions is None or decisions[0] is None) and not _row_has_data(row.only_if, source, context):
                if has_table and decisions is not None and decisions[1] is not None:
                    # Prometheus saw no rollout, but the store, which would know, could not be
                    # read: say so rather than leave the row out as if there were none.
                    summary.panels.append(PanelOutcome(dashboard.title, rollout_table.TITLE, False, decisions[1]))
                    parts.append(f"<h3>{html.escape(_interpolate_text(row.title, context))}</h3>{_decisions_html(*decisions)}")
                continue  # e.g. no rollout of this model: a row of empty panels says nothing
            parts.append(f"<h3>{html.escape(_interpolate_text(row.title, context))}</h3>")
            for panel in row.panels:
                if panel.title == rollout_table.TITLE and decisions is not None:
                    # Grafana's table shows the stored evidence as JSON; the report, in words.
                    summary.panels.append(PanelOutcome(dashboard.title, rollout_table.TITLE, decisions[0] is not None, decisions[1]))
                    parts.append(_decisions_html(*decisions))
                    continue
                if panel.source not in have:
                    parts.append(_panel_html(_interpolate_text(panel.title, context), panel, None, [], "no source"))
                    continue
                for _, ctx in panel_contexts(panel, context):
                    panel_title = _interpolate_text(panel.title, ctx)
                    try:
                        results = [run_query(q, source, ctx) for q in panel.queries]
                        body = render_panel(panel, results)
                        error = None
                    except (QueryError, TemplateError) as exc:
                        results, body, error = [], None, str(exc)
                    if panel.optional and body is None and error is None:
                        continue  # a metric these runs did not log (a scikit-learn regressor's loss)
                    summary.panels.append(PanelOutcome(dashboard.title, panel_title, body is not None, error))
                    parts.append(_panel_html(panel_title, panel, body, results, error, _interpolate_text(panel.description, ctx)))
        sections.append("".join(parts))
    toc = " · ".join(f"<a href='#{d.uid}'>{html.escape(d.title.removeprefix('modelmon / '))}</a>" for d in catalog.all_dashboards())
    meta = "".join(f"<tr><td>{k}</td><td>{html.escape(v)}</td></tr>" for k, v in (
        ("generated", end.strftime("%Y-%m-%d %H:%M:%S UTC")),
        ("Prometheus", prometheus_url or "not given"),
        ("store", _safe_url(store_url) if store_url else "not given"),
        ("panels", f"{summary.drawn} with data, {len(summary.empty)} without"),
    ))
    document = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><table class='meta'>{meta}</table>"
        f"<p>{toc}</p>{''.join(sections)}</body></html>"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    return summary


def _decisions(source: Source, context: Expansion) -> tuple[str | None, str | None] | None:
    """The chosen model's rollout decisions in the time range as an HTML table, from the
    store: (table or None, error or None); None without a store or a model. Without a
    decision in the store the row is drawn only if Prometheus saw a rollout."""
    selection = context.variables.get("model")
    if source.store_url is None or selection is None or not selection.values:
        return None
    tr = context.time_range
    try:
        found = [d for model in selection.values for d in rollout_table.model_decisions(source.store, model, tr.start, tr.end)]
    except QueryError as exc:  # the store could not be opened: its message names it
        return None, f"the rollout store could not be read: {exc}"
    except (ModelmonError, SQLAlchemyError) as exc:
        return None, f"the rollout store {_safe_url(source.store_url)} could not be read: {exc}"
    return rollout_table.decisions_html(found), None


def _decisions_html(body: str | None, error: str | None) -> str:
    shown = body or f"<p class='nodata'>{html.escape(f'Error: {error}' if error else 'No data')}</p>"
    return (f"<div class='panel'><h4>{html.escape(rollout_table.TITLE)}</h4>"
            f"<p class='desc'>{html.escape(rollout_table.DESCRIPTION)}</p>{shown}</div>")


def _row_has_data(query: spec.Prom, source: Source, context: Expansion) -> bool:
    """Whether a row's ``only_if`` query returns data (no Prometheus, or an error: drawn, so
    the panels say what is wrong)."""
    if source.prometheus_url is None:
        return True
    try:
        return run_query(query, source, context).has_data
    except (QueryError, TemplateError):
        return True


def _task(dashboard: spec.Dashboard, source: Source, context: Expansion) -> str | None:
    """The task whose rows the report draws: the chosen model's, or the chosen training runs';
    None (every row) when the dashboard has no task rows or the task is not known."""
    if not any(row.task for row in dashboard.rows):
        return None
    if "experiment" in context.variables:
        return _runs_task(source, context)
    return _model_task(source, context)


def _runs_task(source: Source, context: Expansion) -> str | None:
    """The chosen runs' task, from the metrics they logged; None for runs of both tasks (both
    rows drawn), of neither, or when the store cannot be read (the panels say why)."""
    try:
        table = run_query(spec.Sql(catalog.TRAINING_TASKS, catalog.TRAINING_TASKS), source, context).table
    except (QueryError, TemplateError):
        return None
    tasks = {row[0] for row in table.rows} if table else set()
    return tasks.pop() if len(tasks) == 1 else None


def _model_task(source: Source, context: Expansion) -> str | None:
    """The chosen model's task: a regressor exports ``modelmon_regression_labelled_total``
    from zero on load, a classifier never does. None without a model or a Prometheus."""
    if "model" not in context.variables or source.prometheus_url is None:
        return None
    query = spec.Prom('count(modelmon_regression_labelled_total{job=~"$job", model="$model"})', instant=True)
    try:
        return "regression" if run_query(query, source, context).has_data else "classification"
    except (QueryError, TemplateError):
        return None


def _range_text(tr: TimeRange) -> str:
    return f"{tr.start.strftime('%Y-%m-%d %H:%M:%S')} to {tr.end.strftime('%Y-%m-%d %H:%M:%S')} UTC"


def _safe_url(url: str) -> str:
    from modelmon.store import resolve_store_url

    try:
        return resolve_store_url(url).render_as_string(hide_password=True)
    except ModelmonError:
        return "(invalid URL)"


def _panel_html(title: str, panel: spec.Panel, body: str | None, results: list[Result], error: str | None,
                description: str | None = None) -> str:
    if body is None:
        text = {None: "No data", "no source": "Not drawn: its data source was not given."}.get(error, f"Error: {error}")
        body = f"<p class='nodata'>{html.escape(text)}</p>"
    queries = "".join(f"<pre>{html.escape(r.text)}</pre>" for r in results) or "".join(
        f"<pre>{html.escape(q.expr if isinstance(q, spec.Prom) else q.postgresql)}</pre>" for q in panel.queries
    )
    return (f"<div class='panel'><h4>{html.escape(title)}</h4><p class='desc'>{html.escape(description or panel.description)}</p>"
            f"{body}<details><summary>queries</summary>{queries}</details></div>")
