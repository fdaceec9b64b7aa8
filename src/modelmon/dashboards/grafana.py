"""Grafana dashboard JSON from the dashboard specs, built with grafana-foundation-sdk.

The SDK has builders for Prometheus targets but none for SQL ones: ``SqlTarget`` is a small
``cog.variants.Dataquery`` whose ``to_json()`` is the query model of the SQL data source,
wrapped in a ``cog.builder.Builder`` so panels take it with ``with_target``:

- PostgreSQL (``grafana-postgresql-datasource``): ``refId``, ``rawSql``, ``format``
  (``table`` or ``time_series``), ``editorMode: code``, ``rawQuery: true``;
- SQLite (the ``frser-sqlite-datasource`` plugin): ``refId``, ``queryText`` and
  ``rawQueryText`` (the plugin reads the raw text and interpolates it), ``queryType``
  (``table`` or ``time series``) and ``timeColumns`` (columns it converts to time).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

with warnings.catch_warnings():  # the SDK's module-level notes that it prefers its v2 dashboards
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import (
        barchart,
        bargauge,
        heatmap,
        stat,
        statetimeline,
        table,
        timeseries,
        xychart,
    )
    from grafana_foundation_sdk.builders import common as common_builders
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import prometheus as prom_builders
    from grafana_foundation_sdk.cog import builder as cogbuilder
    from grafana_foundation_sdk.cog import variants as cogvariants
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common
    from grafana_foundation_sdk.models import dashboard as dm
    from grafana_foundation_sdk.models import heatmap as heatmap_models
    from grafana_foundation_sdk.models import xychart as xy_models
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

from modelmon.dashboards import spec
from modelmon.dashboards.spec import Dialect

PROMETHEUS_UID = "prometheus"  # the default datasource_uid of modelmon's Grafana alert rules
POSTGRESQL_UID = "modelmon-postgresql"
SQLITE_UID = "modelmon-sqlite"
POSTGRESQL_TYPE = "grafana-postgresql-datasource"
SQLITE_TYPE = "frser-sqlite-datasource"
REF_IDS = "ABCDEFGHIJ"


def datasource_ref(source: spec.Source, dialect: Dialect) -> common.DataSourceRef:
    if source == "prometheus":
        return common.DataSourceRef(type_val="prometheus", uid=PROMETHEUS_UID)
    if dialect == "postgresql":
        return common.DataSourceRef(type_val=POSTGRESQL_TYPE, uid=POSTGRESQL_UID)
    return common.DataSourceRef(type_val=SQLITE_TYPE, uid=SQLITE_UID)


class SqlTarget(cogvariants.Dataquery):
    """A SQL query in the query model of Grafana's PostgreSQL data source or of the SQLite
    plugin."""

    def __init__(self, ref_id: str, sql: str, fmt: str, dialect: Dialect, datasource: common.DataSourceRef) -> None:
        self.ref_id = ref_id
        self.sql = sql
        self.format = fmt
        self.dialect = dialect
        self.datasource = datasource

    def to_json(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"refId": self.ref_id, "datasource": self.datasource.to_json()}
        if self.dialect == "postgresql":
            payload.update(rawSql=self.sql, format=self.format, editorMode="code", rawQuery=True)
        else:
            payload.update(
                queryText=self.sql, rawQueryText=self.sql,
                queryType="time series" if self.format == "time_series" else "table",
                timeColumns=["time"] if self.format == "time_series" else [],
            )
        return payload


class SqlTargetBuilder(cogbuilder.Builder[SqlTarget]):
    def __init__(self, target: SqlTarget) -> None:
        self._internal = target

    def build(self) -> SqlTarget:
        return self._internal


def _prom_target(query: spec.Prom, ref_id: str) -> prom_builders.Dataquery:
    target = prom_builders.Dataquery().expr(query.expr).ref_id(ref_id).editor_mode(QueryEditorMode.CODE)
    if query.legend:
        target = target.legend_format(query.legend)
    target = target.instant() if query.instant else target.range()
    target = target.format(PromQueryFormat(query.format))
    return target.datasource(datasource_ref("prometheus", "postgresql"))


def _thresholds(panel: spec.Panel) -> db.ThresholdsConfig:
    steps = panel.thresholds or (spec.Threshold(None, "green"),)
    return db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=t.value, color=t.color) for t in steps]
    )


def _legend(placement: str = "bottom", table_mode: bool = False) -> common_builders.VizLegendOptions:
    legend = common_builders.VizLegendOptions().show_legend(True).calcs([])
    legend = legend.placement(common.LegendPlacement(placement))
    return legend.display_mode(common.LegendDisplayMode.TABLE if table_mode else common.LegendDisplayMode.LIST)


def _tooltip() -> common_builders.VizTooltipOptions:
    return common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)


def _reduce(calc: str = "lastNotNull") -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs([calc]).values(False)


def _panel_builder(panel: spec.Panel) -> Any:
    kind = panel.kind
    if kind == "timeseries":
        b = timeseries.Panel().legend(_legend()).tooltip(_tooltip()).line_width(1).fill_opacity(10)
        b = b.show_points(common.VisibilityMode.NEVER).span_nulls(False)
        if panel.show_thresholds:
            b = b.thresholds_style(common_builders.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED))
        return b
    if kind == "stat":
        return (stat.Panel().reduce_options(_reduce()).graph_mode(common.BigValueGraphMode.AREA)
                .color_mode(common.BigValueColorMode.VALUE).text_mode(common.BigValueTextMode.AUTO))
    if kind == "table":
        return table.Panel().cell_height(common.TableCellHeight.SM).show_header(True)
    if kind == "bargauge":
        return (bargauge.Panel().reduce_options(_reduce()).display_mode(common.BarGaugeDisplayMode.GRADIENT)
                .orientation(common.VizOrientation.HORIZONTAL).show_unfilled(True))
    if kind == "barchart":
        bars = barchart.Panel().legend(_legend()).tooltip(_tooltip()).orientation(common.VizOrientation.AUTO)
        bars = bars.show_value(common.VisibilityMode.NEVER).stacking(common.StackingMode.NONE).fill_opacity(80)
        bars = bars.x_tick_label_rotation(-45)
        return bars.x_field(panel.x_field) if panel.x_field else bars
    if kind == "heatmap":
        return (heatmap.Panel().calculate(False).cell_gap(1)
                .color(_heatmap_color()).y_axis(_heatmap_axis()).show_legend().tooltip(_heatmap_tooltip()))
    if kind == "xychart":
        xy = xychart.Panel().legend(_legend()).tooltip(_tooltip()).mapping(xy_models.SeriesMapping.AUTO)
        series = xychart.XYSeriesConfig().x(_field_matcher(panel.x_field or "step"))
        return xy.series([series]).show(xy_models.XYShowMode.POINTS_AND_LINES)
    if kind == "state-timeline":
        states = statetimeline.Panel().legend(_legend()).tooltip(_tooltip()).show_value(common.VisibilityMode.NEVER)
        states = states.row_height(0.8).merge_values(True)
        if panel.states:
            states = states.mappings([dm.ValueMap(options={str(value): dm.ValueMappingResult(text=text, color=color)
                                                           for value, text, color in panel.states})])
        return states
    raise ValueError(f"unknown panel kind {kind!r}")


def _field_matcher(name: str) -> Any:
    return xychart.XychartXYSeriesConfigX().matcher(xychart.MatcherConfig().id("byNames").options({"mode": "include", "names": [name]}))


def _heatmap_color() -> Any:
    return (heatmap.HeatmapColorOptions().mode(heatmap_models.HeatmapColorMode.SCHEME).scheme("Oranges")
            .scale(heatmap_models.HeatmapColorScale.EXPONENTIAL).exponent(0.5).steps(64).reverse(False).fill("dark-orange"))


def _heatmap_axis() -> Any:
    # The buckets are top-class probabilities: the y axis reads as a share.
    return heatmap.YAxisConfig().axis_placement(common.AxisPlacement.LEFT).reverse(False).unit("percentunit")


def _heatmap_tooltip() -> Any:
    return heatmap.HeatmapTooltip().mode(common.TooltipDisplayMode.SINGLE).y_histogram(True).show_color_scale(False)


def build_panel(panel: spec.Panel, dialect: Dialect) -> Any:
    ds = datasource_ref(panel.source, dialect)
    b = _panel_builder(panel).title(panel.title).description(panel.description).unit(panel.unit)
    b = b.datasource(ds).span(panel.width).height(panel.height).thresholds(_thresholds(panel))
    b = b.color_scheme(db.FieldColor().mode(dm.FieldColorModeId.PALETTE_CLASSIC if panel.kind in ("timeseries", "xychart", "barchart") else dm.FieldColorModeId.THRESHOLDS))
    if panel.min is not None:
        b = b.min(panel.min)
    if panel.max is not None:
        b = b.max(panel.max)
    if panel.decimals is not None:
        b = b.decimals(panel.decimals)
    if panel.repeat:
        b = b.repeat(panel.repeat).repeat_direction("h").max_per_row(2)
    for style in panel.styles:
        # byRegexpOrNames, not byRegexp: the same regex match, with its options an object as
        # the dashboard schema wants (byRegexp's are a bare string). Grafana reads a pattern
        # without slashes as anchored at both ends, as the report's re.fullmatch does.
        matcher = dm.MatcherConfig(id_val="byRegexpOrNames", options={"pattern": style.pattern, "names": []})
        properties = [dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": style.color})]
        if style.dashed:
            properties.append(dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}))
        b = b.with_override(matcher, properties)
    for t in panel.transformations:
        b = b.with_transformation(dm.DataTransformerConfig(id_val=t["id"], options=t["options"]))
    for i, query in enumerate(panel.queries):
        ref = REF_IDS[i]
        if isinstance(query, spec.Prom):
            b = b.with_target(_prom_target(query, ref))
        else:
            b = b.with_target(SqlTargetBuilder(SqlTarget(ref, query.text(dialect), query.format, dialect, ds)))
    return b


def build_variable(variable: spec.Variable, dialect: Dialect) -> Any:
    b: db.CustomVariable | db.QueryVariable
    if variable.kind == "custom":
        b = db.CustomVariable(variable.name).values(",".join(variable.options))
    else:
        query = variable.query.text(dialect) if isinstance(variable.query, spec.Sql) else variable.query
        q = db.QueryVariable(variable.name).query(query).datasource(datasource_ref(variable.source, dialect))
        b = q.refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC).definition(query)
    b = b.label(variable.label).description(variable.description).multi(variable.multi).include_all(variable.include_all)
    if variable.hidden:
        b = b.hide(dm.VariableHide.HIDE_VARIABLE)
    if variable.all_value is not None:
        b = b.all_value(variable.all_value)
    if variable.default is not None:
        value = "$__all" if variable.default == "All" else variable.default
        current = dm.VariableOption(selected=True, text=[variable.default] if variable.multi else variable.default,
                                    value=[value] if variable.multi else value)
        b = b.current(current)
    return b


def build_dashboard(dashboard: spec.Dashboard, dialect: Dialect = "postgresql",
                    datasource: str = PROMETHEUS_UID) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schemaVersion 42), as a dict. Prometheus
    queries read the ``$datasource`` variable, whose default is ``datasource`` (a data
    source uid or name), so the dashboards drop into a Grafana with its own Prometheus."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the SDK prefers its v2 dashboards
        b = (
            db.Dashboard(dashboard.title).uid(dashboard.uid).description(dashboard.description)
            .tags(list(dashboard.tags)).refresh(dashboard.refresh).time(dashboard.time_from, "now")
            .timezone("browser").tooltip(dm.DashboardCursorSync.CROSSHAIR).editable()
            .link(db.DashboardLink("modelmon").type(dm.DashboardLinkType.DASHBOARDS).tags(["modelmon"])
                  .as_dropdown(False).include_vars(True).keep_time(True).tooltip("The other modelmon dashboards"))
            .annotation(db.AnnotationQuery().name("Annotations & Alerts").enable(True).hide(True)
                        .icon_color("rgba(0, 211, 255, 1)").type("dashboard").built_in(1)
                        .datasource(common.DataSourceRef(type_val="grafana", uid="-- Grafana --")))
        )
        for variable in dashboard.variables:
            b = b.with_variable(build_variable(variable, dialect))
        for row in dashboard.rows:
            b = b.with_row(db.Row(row.title))
            for panel in row.panels:
                b = b.with_panel(build_panel(panel, dialect))
        model = b.build()
    data = json.loads(json.dumps(model, cls=JSONEncoder))
    data.setdefault("templating", {}).setdefault("list", [])
    _number_panels(data, dashboard)
    _datasource_variable(data, datasource)
    if any(v.name == "model" and v.source == "prometheus" for v in dashboard.variables):
        data["annotations"]["list"].append(VERSION_LOADED)
    return data


def _number_panels(data: dict[str, Any], dashboard: spec.Dashboard) -> None:
    """Panels with a fixed id (alerts link to them) keep it; rows and the other panels are
    numbered in order from 1 (under 100, so never one of the fixed ids)."""
    # The JSON lists each row, then its panels, in the spec's order.
    order: list[int | None] = []
    for row in dashboard.rows:
        order += [None] + [p.id for p in row.panels]
    built = data.get("panels", [])
    assert len(built) == len(order), f"dashboard {dashboard.uid}: {len(built)} panels built for {len(order)}"
    n = 0
    for panel, fixed in zip(built, order, strict=True):
        if fixed is not None:
            panel["id"] = fixed
        else:
            n += 1
            panel["id"] = n
    if n >= 100:
        raise ValueError(f"dashboard {dashboard.uid}: {n} panels numbered in order reach the fixed ids (100 and up)")


#: Deployments on the time axis: a version of $model that is loaded now and was not 5 minutes
#: before (modelmon_model_info appears when a replica loads it).
VERSION_LOADED = {
    "name": "Version loaded", "enable": True, "hide": False, "iconColor": "blue",
    "datasource": {"type": "prometheus", "uid": "${datasource}"},
    "expr": 'max by (version) (modelmon_model_info{cluster="$cluster", job=~"$job", model="$model", instance=~"$instance"})'
            ' unless max by (version) (modelmon_model_info{cluster="$cluster", job=~"$job", model="$model", instance=~"$instance"} offset 5m)',
    "step": "1m", "titleFormat": "version {{version}} loaded", "textFormat": "", "useValueForTime": False,
}


DATASOURCE_VARIABLE = "${datasource}"


def _datasource_variable(data: dict[str, Any], default: str) -> None:
    """Point every Prometheus reference at ``${datasource}`` and add that variable first."""
    used = False

    def walk(node: Any) -> None:
        nonlocal used
        if isinstance(node, dict):
            ref = node.get("datasource")
            if isinstance(ref, dict) and ref.get("type") == "prometheus":
                node["datasource"] = {"type": "prometheus", "uid": DATASOURCE_VARIABLE}
                used = True
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(data.get("panels", []))
    walk(data["templating"]["list"])
    if used:
        data["templating"]["list"].insert(0, {
            "type": "datasource", "name": "datasource", "label": "Data source", "query": "prometheus",
            "description": "The Prometheus that scrapes modelmon (modelmon grafana export --datasource).",
            "current": {"selected": True, "text": default, "value": default},
            "options": [], "refresh": 1, "regex": "", "hide": 0, "skipUrlSync": False, "multi": False, "includeAll": False,
        })


def dashboards_json(dialect: Dialect = "postgresql", window: str | None = None,
                    datasource: str = PROMETHEUS_UID, multi_cluster: bool = False) -> dict[str, dict[str, Any]]:
    """Every dashboard, by uid. ``window``: the exported recording-rule windows, comma
    separated (the first is the default); ``datasource``: the Prometheus data source's uid
    or name, the default of the ``$datasource`` variable; ``multi_cluster``: show the
    ``$cluster`` variable (hidden by default, as kubernetes-mixin's showMultiCluster)."""
    from modelmon.dashboards.catalog import all_dashboards

    out = {}
    for dashboard in all_dashboards():
        data = build_dashboard(dashboard, dialect, datasource)
        if window is not None:
            _set_windows(data, [w.strip() for w in window.split(",") if w.strip()])
        if multi_cluster:
            for variable in data["templating"]["list"]:
                if variable["name"] == "cluster":
                    variable["hide"] = 0
        out[dashboard.uid] = data
    return out


def _set_windows(data: dict[str, Any], windows: list[str]) -> None:
    """The rules-window variable offers exactly the exported windows, the first by default:
    a window without recording rules shows empty panels."""
    for variable in data.get("templating", {}).get("list", []):
        if variable["name"] == "window":
            variable["current"] = {"selected": True, "text": windows[0], "value": windows[0]}
            variable["query"] = ",".join(windows)
            variable["options"] = [{"selected": i == 0, "text": w, "value": w} for i, w in enumerate(windows)]
