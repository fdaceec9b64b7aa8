"""The generated dashboards against Grafana's JSON schemas (in ../shared/grafana-schema, next
to the repository, never copied into it), and the conventions every panel follows."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import jsonschema
import pytest

from modelmon.dashboards import grafana
from modelmon.dashboards.catalog import all_dashboards
from modelmon.dashboards.spec import Panel, Prom, Sql
from modelmon.dashboards.templating import VARIABLE
from tests.dashboards.conftest import SCHEMA_DIR

PANEL_SCHEMAS = {
    "timeseries": "timeseries", "stat": "stat", "table": "table", "bargauge": "bargauge", "barchart": "barchart",
    "heatmap": "heatmap", "xychart": "xychart", "state-timeline": "statetimeline",
}
BUILTINS = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__range_ms", "__from", "__to"}


def _schema(name: str) -> dict:
    path = SCHEMA_DIR / f"{name}.jsonschema.json"
    if not path.exists():
        pytest.fail(f"Grafana's JSON schemas are expected in {SCHEMA_DIR} (the shared folder beside the repository)")
    return json.loads(path.read_text())


def _validator(name: str, definition: str | None = None) -> jsonschema.Draft7Validator:
    schema = _schema(name)
    if definition:
        schema = {"$ref": f"#/definitions/{definition}", "definitions": schema["definitions"]}
    return jsonschema.Draft7Validator(schema)


def _errors(validator: jsonschema.Draft7Validator, instance: object) -> list[str]:
    return [f"{e.json_path}: {e.message[:200]}" for e in validator.iter_errors(instance)]


def schema_errors(dashboard: dict) -> list[str]:
    """Everything Grafana's schemas say is wrong with a dashboard: the dashboard itself,
    each panel's options and custom field config against its panel type, and each
    Prometheus target against the Prometheus query schema."""
    errors = [f"dashboard {e}" for e in _errors(_validator("dashboard"), dashboard)]
    prometheus = _validator("prometheus")
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            continue
        name = PANEL_SCHEMAS[panel["type"]]
        where = f"{panel['type']} {panel['title']!r}"
        errors += [f"{where} options {e}" for e in _errors(_validator(name, "Options"), panel.get("options", {}))]
        if "FieldConfig" in _schema(name)["definitions"]:
            custom = panel["fieldConfig"]["defaults"].get("custom", {})
            errors += [f"{where} fieldConfig {e}" for e in _errors(_validator(name, "FieldConfig"), custom)]
        for target in panel["targets"]:
            if target["datasource"]["type"] == "prometheus":
                errors += [f"{where} target {e}" for e in _errors(prometheus, target)]
    return errors


@pytest.fixture(scope="module", params=["postgresql", "sqlite"])
def dashboards(request) -> dict[str, dict]:
    return grafana.dashboards_json(request.param)


def test_every_dashboard_and_panel_validates_against_grafanas_schemas(dashboards):
    assert set(dashboards) == {"modelmon-serving", "modelmon-drift", "modelmon-quality", "modelmon-training", "modelmon-alerts"}
    for uid, dashboard in dashboards.items():
        assert dashboard["schemaVersion"] == 42
        assert schema_errors(dashboard) == [], uid


def test_the_validation_catches_a_broken_panel(dashboards):
    broken = copy.deepcopy(dashboards["modelmon-serving"])
    timeseries = next(p for p in broken["panels"] if p["type"] == "timeseries")
    timeseries["options"]["legend"]["displayMode"] = "sideways"
    del timeseries["options"]["tooltip"]
    broken["panels"][0]["gridPos"]["w"] = "wide"
    errors = schema_errors(broken)
    assert any("legend.displayMode" in e for e in errors)
    assert any("'tooltip' is a required property" in e for e in errors)
    assert any(e.startswith("dashboard $.panels[0]") for e in errors)


def test_every_panel_has_a_unit_a_description_and_a_fixed_datasource(dashboards):
    uids = {grafana.DATASOURCE_VARIABLE, grafana.POSTGRESQL_UID, grafana.SQLITE_UID}
    for uid, dashboard in dashboards.items():
        panels = [p for p in dashboard["panels"] if p["type"] != "row"]
        assert panels, uid
        for panel in panels:
            assert panel["description"].strip(), panel["title"]
            assert panel["fieldConfig"]["defaults"]["unit"], panel["title"]
            assert panel["datasource"]["uid"] in uids
            assert panel["targets"] and all(t["datasource"] == panel["datasource"] for t in panel["targets"])
            assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"])
        assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])


def test_dashboards_link_to_each_other_and_share_variables(dashboards):
    for uid, dashboard in dashboards.items():
        (link,) = dashboard["links"]
        assert (link["type"], link["tags"], link["includeVars"], link["keepTime"]) == ("dashboards", ["modelmon"], True, True), uid
        assert "modelmon" in dashboard["tags"]
    names = {uid: [v["name"] for v in d["templating"]["list"]] for uid, d in dashboards.items()}
    model = ["datasource", "cluster", "job", "model", "version", "instance"]
    assert names["modelmon-serving"][:6] == model
    assert names["modelmon-drift"][:7] == [*model, "feature"]
    assert names["modelmon-quality"][:6] == model
    assert names["modelmon-training"][:3] == ["datasource", "experiment", "run"]


def test_every_variable_a_query_uses_is_defined():
    for dashboard in all_dashboards():
        defined = {v.name for v in dashboard.variables} | BUILTINS
        texts = [(p.title, p.title) for p in dashboard.panels]
        for panel in dashboard.panels:
            for q in panel.queries:
                texts += [(panel.title, q.expr)] if isinstance(q, Prom) else [(panel.title, q.postgresql), (panel.title, q.sqlite)]
        for variable in dashboard.variables:
            if isinstance(variable.query, Sql):
                texts += [(variable.name, variable.query.postgresql), (variable.name, variable.query.sqlite)]
            elif variable.query:
                texts.append((variable.name, variable.query))
        for where, text in texts:
            for match in VARIABLE.finditer(text):
                name = match.group(1) or match.group(3)
                macro = text[match.end() : match.end() + 1] == "("
                assert name in defined or macro, f"{dashboard.uid} / {where}: ${name} is not defined"


def test_sql_targets_use_each_datasources_query_model(dashboards):
    for dashboard in dashboards.values():
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                kind = target["datasource"]["type"]
                if kind == grafana.POSTGRESQL_TYPE:
                    assert target["editorMode"] == "code" and target["rawQuery"] is True
                    assert target["format"] in ("table", "time_series") and target["rawSql"]
                elif kind == grafana.SQLITE_TYPE:
                    assert target["queryText"] == target["rawQueryText"]
                    assert target["queryType"] in ("table", "time series")
                    assert target["timeColumns"] == (["time"] if target["queryType"] == "time series" else [])


def test_sql_target_is_a_cog_dataquery_that_encodes_into_a_panel():
    from grafana_foundation_sdk.cog.variants import Dataquery

    ref = grafana.datasource_ref("sql", "postgresql")
    target = grafana.SqlTarget("A", "SELECT 1", "table", "postgresql", ref)
    assert isinstance(target, Dataquery)
    assert target.to_json() == {
        "refId": "A", "datasource": {"type": "grafana-postgresql-datasource", "uid": "modelmon-postgresql"},
        "rawSql": "SELECT 1", "format": "table", "editorMode": "code", "rawQuery": True,
    }
    panel = Panel("table", "t", "d", "none", (Sql("SELECT 1", "SELECT 1"),))
    built = grafana.build_panel(panel, "postgresql").build()
    assert built.targets[0] is not None and built.targets[0].to_json()["rawSql"] == "SELECT 1"


def test_prometheus_targets_are_range_or_instant_as_declared():
    for dashboard in all_dashboards():
        data = grafana.build_dashboard(dashboard)
        built = {p["title"]: p for p in data["panels"] if p["type"] != "row"}
        for panel in dashboard.panels:
            for query, target in zip(panel.queries, built[panel.title]["targets"], strict=True):
                if isinstance(query, Prom):
                    assert target["expr"] == query.expr
                    assert target.get("instant", False) is query.instant and target.get("range", False) is not query.instant


def test_rules_window_default_follows_the_export():
    data = grafana.dashboards_json("postgresql", window="10m")["modelmon-quality"]
    window = next(v for v in data["templating"]["list"] if v["name"] == "window")
    assert window["current"]["value"] == "10m" and "10m" in window["query"].split(",")


def test_queries_read_only_documented_metrics_and_rules():
    """Every metric name a query reads is in the metric catalogue, and every recording rule
    (level:metric:operations$window) in its table of recording rules (docs/metrics.md)."""
    docs = (Path(__file__).resolve().parents[2] / "docs")
    catalogue = (docs / "metrics.md").read_text() + (docs / "tracking.md").read_text()
    rules = (docs / "metrics.md").read_text()
    rule_name = re.compile(r"\b([a-z_]+):(modelmon_[a-z_]+):([a-z_0-9]*)\$window")
    for dashboard in all_dashboards():
        for panel in dashboard.panels:
            for query in panel.queries:
                if not isinstance(query, Prom):
                    continue
                for level, metric, operation in set(rule_name.findall(query.expr)):
                    documented = f"`{level}:{metric}:{operation}W`"
                    # The regression section writes the window as <w>.
                    assert (documented in rules or f"`…:{operation}W`" in rules or metric.endswith("expected_confusion")
                            or f"`{level}:{metric}:{operation}<w>`" in rules), (
                        f"{panel.title}: {documented} is not in docs/metrics.md")
                expr = rule_name.sub("", query.expr)
                for name in set(re.findall(r"\b(modelmon_[a-z_]+?)(?:_bucket|_sum|_count)?\b", expr)):
                    assert f"`{name}`" in catalogue, f"{panel.title}: {name} is not in docs/metrics.md"
