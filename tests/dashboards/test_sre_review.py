"""Issue 23's dashboard items, on the generated JSON: the dashboards show what the alerts
fire on, offer only recorded windows, and choose their Prometheus through ``$datasource``
(checked against grafana/dashboard-linter's rules that apply; the Go linter itself is not
installed here)."""

from __future__ import annotations

import re

import yaml

from modelmon.dashboards import grafana
from modelmon.dashboards.export import write_provisioning


def panels(dashboard: dict) -> dict[str, dict]:
    return {p["title"]: p for p in dashboard["panels"] if p["type"] != "row"}


def test_serving_stats_measure_what_the_alerts_fire_on():
    serving = panels(grafana.dashboards_json("postgresql")["modelmon-serving"])
    ratio = serving["Server error ratio (5xx)"]["targets"][0]["expr"]
    # The alert's numerator and denominator: 5xx of inference over inference requests
    # (before: every error reason over every request, probes included).
    assert ratio.count('endpoint=~"infer|grpc_infer|predict"') == 2 and 'code=~"5.."' in ratio
    assert "modelmon_request_errors_total" not in ratio
    rps = serving["Inference requests per second"]["targets"][0]["expr"]
    assert 'endpoint=~"infer|grpc_infer|predict"' in rps
    steps = serving["Server error ratio (5xx)"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"color": "red", "value": 0.05}  # ModelmonHighErrorRatio's default threshold
    p99 = serving["p99 request latency"]["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert p99[-1] == {"color": "red", "value": 0.5}  # ModelmonHighLatencyP99's default objective


def test_window_variable_offers_only_the_exported_windows():
    for uid, dashboard in grafana.dashboards_json("postgresql", window="6h,1h").items():
        for variable in dashboard["templating"]["list"]:
            if variable["name"] == "window":
                assert variable["query"] == "6h,1h", uid
                assert [o["value"] for o in variable["options"]] == ["6h", "1h"]
                assert variable["current"]["value"] == "6h"
    default = grafana.dashboards_json("postgresql")["modelmon-quality"]
    window = next(v for v in default["templating"]["list"] if v["name"] == "window")
    assert window["query"] == "1h"  # not 30m, 10m, 6h, 1d: no rules record them by default


def test_grafana_export_takes_the_datasource_and_does_not_claim_the_default(tmp_path):
    result = write_provisioning(tmp_path, store_url="sqlite:///x.db", datasource="Cluster Prometheus")
    sources = yaml.safe_load((tmp_path / "datasources" / "modelmon.yaml").read_text())["datasources"]
    assert not any(s.get("isDefault") for s in sources)  # Grafana refuses a second default
    dashboards = [p for p in result.files if p.suffix == ".json"]
    assert len(dashboards) == 5
    for uid, dashboard in grafana.dashboards_json("sqlite", datasource="Cluster Prometheus").items():
        variable = next((v for v in dashboard["templating"]["list"] if v["name"] == "datasource"), None)
        text = str(dashboard)
        assert variable is not None, uid
        assert variable["type"] == "datasource" and variable["query"] == "prometheus"
        assert variable["current"]["value"] == "Cluster Prometheus"
        assert "'uid': 'prometheus'" not in text, uid  # no panel pinned to a uid


def test_dashboard_linter_rules():
    """grafana/dashboard-linter's rules (lint/rule_*.go) that apply to modelmon, checked here
    because the Go linter cannot be installed on this machine: template-datasource-rule,
    panel-datasource-rule, panel-title-description-rule, panel-units-rule,
    panel-no-targets-rule, target-rate-interval-rule, template-on-time-change-reload-rule,
    template-job-rule and template-instance-rule (lint/template_utils.go: a Prometheus query
    on $datasource, labelled Job / Instance, multi, allValue .+), target-job-rule and
    target-instance-rule (every selector of a model's raw metric reads job=~"$job" and
    instance=~"$instance"; the recording rules sum the replicas, so they have no instance
    label, where the linter's exclusion file would name the rule), and, as kubernetes-mixin,
    cluster="$cluster" in every selector of a model, the variable hidden unless exported
    --multi-cluster. Not applied: uneditable-dashboard."""
    for uid, dashboard in grafana.dashboards_json("postgresql").items():
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        prom_panels = [p for p in panels(dashboard).values() if p["datasource"].get("type") == "prometheus"]
        if prom_panels:
            ds = variables["datasource"]  # template-datasource-rule
            assert (ds["type"], ds["query"], ds["label"]) == ("datasource", "prometheus", "Data source"), uid
        for panel in panels(dashboard).values():
            where = f"{uid} / {panel['title']}"
            assert panel["title"].strip() and panel["description"].strip(), where
            assert panel["fieldConfig"]["defaults"].get("unit"), where
            assert panel["targets"], where
            if panel["datasource"].get("type") == "prometheus":
                assert panel["datasource"]["uid"] == "${datasource}", where
                for target in panel["targets"]:
                    assert target["datasource"]["uid"] == "${datasource}", where
                    for window in re.findall(r"(?:rate|increase)\([^\[]*\[([^\]]+)\]", target["expr"]):
                        assert window in ("$__rate_interval", "$window") or window.startswith("$__range"), f"{where}: [{window}]"
        if "model" in variables and variables["model"]["type"] == "query" and "label_values" in variables["model"]["query"]:
            for name in ("job", "instance"):  # template-job-rule, template-instance-rule
                v = variables[name]
                assert (v["type"], v["datasource"]["uid"], v["label"], v["multi"], v["allValue"]) == (
                    "query", "${datasource}", name.title(), True, ".+"), f"{uid} ${name}"
            cluster = variables["cluster"]
            assert (cluster["type"], cluster["multi"], cluster["hide"]) == ("query", False, 2), uid
            checked = 0
            for panel in prom_panels:
                for target in panel["targets"]:
                    # Every selector of a model's series (target-job-rule, target-instance-rule).
                    for metric, sel in re.findall(r'([a-zA-Z_:0-9$]*)\{([^{}]*model="\$model"[^{}]*)\}', target["expr"]):
                        where = f"{uid} / {panel['title']}: {metric}{{{sel}}}"
                        assert 'job=~"$job"' in sel and 'cluster="$cluster"' in sel, where
                        assert ('instance=~"$instance"' in sel) == (":" not in metric), where
                        checked += 1
            assert checked > 10, uid
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                assert variable["refresh"] == 2, f"{uid} ${variable['name']}"  # on time range change


def test_alerts_dashboard_ignores_heartbeats_and_other_alerts_and_keeps_history_per_model():
    alerts = grafana.dashboards_json("postgresql")["modelmon-alerts"]
    variable = next(v for v in alerts["templating"]["list"] if v["name"] == "alerts")
    assert variable["current"]["value"] == "Modelmon.*"
    for title, panel in panels(alerts).items():
        for target in panel["targets"]:
            for selector in re.findall(r"ALERTS\{[^}]*\}", target["expr"]):
                assert 'severity!="none"' in selector and 'alertname=~"$alerts"' in selector, title
    history = panels(alerts)["Alert history"]["targets"][0]["expr"]
    assert history.startswith("max by (alertname, model, version)")


def test_smaller_panel_defects_of_item_11():
    dashboards = grafana.dashboards_json("postgresql")
    drift = panels(dashboards["modelmon-drift"])
    # Legends name the version when several are selected.
    for title in ("Fleet PSI per feature against the threshold", "Fleet Jensen-Shannon distance per feature"):
        assert drift[title]["targets"][0]["legendFormat"] == "{{feature}} v{{version}}"
    # Reference shares are weighted by each version's rows, never averaged over versions.
    reference = drift["Live against reference shares: $feature"]["targets"][1]["expr"]
    assert "avg by" not in reference and "group_left" in reference
    classes = drift["Predicted class shares against the validation data"]["targets"][1]["expr"]
    assert "avg by" not in classes and "group_left" in classes
    # The heatmap shows a rate: increase() over overlapping windows counted rows twice.
    heatmap = drift["Confidence distribution"]["targets"][0]["expr"]
    assert "rate(modelmon_prediction_confidence_bucket" in heatmap and "increase(" not in heatmap
    assert dashboards["modelmon-training"]["refresh"] == "5m"  # a 7-day SQL range
    stat = next(p for p in dashboards["modelmon-quality"]["panels"] if p["title"] == "Label coverage" and p["type"] == "stat")
    coverage = stat["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert coverage == [{"color": "red", "value": None}, {"color": "green", "value": 0.1}]


def test_model_dashboards_annotate_version_loads():
    for uid, dashboard in grafana.dashboards_json("postgresql").items():
        names = [a["name"] for a in dashboard["annotations"]["list"]]
        assert ("Version loaded" in names) == (uid in ("modelmon-serving", "modelmon-drift", "modelmon-quality")), uid


def test_version_loaded_annotation_is_valid_promql(tmp_path):
    import shutil
    import subprocess

    import pytest

    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed")
    expr = grafana.VERSION_LOADED["expr"].replace("$model", "shop")
    (tmp_path / "a.rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "a", "rules": [{"record": "a:b:c", "expr": expr}]}]}))
    checked = subprocess.run(["promtool", "check", "rules", str(tmp_path / "a.rules.yml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_serving_has_an_overview_across_models():
    serving = panels(grafana.dashboards_json("postgresql")["modelmon-serving"])
    for title in ("Inference requests per second, every model", "Server error ratio, every model"):
        expr = serving[title]["targets"][0]["expr"]
        assert "$model" not in expr and "sum by (model, version)" in expr, title


def test_sql_panels_follow_the_version_variable():
    """Issue 23, item 11: the run store panels read $version (quoted values, All listing
    every version: the variable has no custom All value, which Grafana would write as it
    is). On a SQLite table with versions 1, 2 and 12: a selection keeps exactly its versions
    (2 is not 12), All keeps every one."""
    import sqlite3
    from datetime import UTC, datetime

    from modelmon.dashboards.catalog import LABELLED_TABLE, VERSION_SQL
    from modelmon.dashboards.templating import Expansion, Selection, TimeRange, expand_sql

    quality = grafana.dashboards_json("postgresql")["modelmon-quality"]
    sql_targets = [t for p in panels(quality).values() for t in p["targets"] if "rawSql" in t]
    assert sql_targets and all(VERSION_SQL in t["rawSql"] for t in sql_targets)
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE labelled_predictions (model TEXT, version INTEGER, correct INTEGER, predicted_at TEXT, labelled_at TEXT)")
    db.executemany("INSERT INTO labelled_predictions VALUES ('shop', ?, ?, '2017-04-21 05:02:00', '2017-04-21 05:03:00')",
                   [(1, 1), (2, 0), (2, 1), (12, 1)])
    span = TimeRange(datetime(2017, 4, 21, 5, 0, tzinfo=UTC), datetime(2017, 4, 21, 6, 0, tzinfo=UTC))

    def versions(selection: Selection) -> list[tuple[int, int]]:
        ctx = Expansion(span, {"model": Selection.single("shop"), "version": selection})
        return db.execute(expand_sql(LABELLED_TABLE, ctx, "sqlite")).fetchall()

    assert "allValue" not in next(v for v in quality["templating"]["list"] if v["name"] == "version")
    every = versions(Selection(("1", "2", "12"), all=True, multi=True))
    assert [(row[0], row[1]) for row in every] == [(1, 1), (2, 2), (12, 1)]
    assert [(row[0], row[1]) for row in versions(Selection(("2",), multi=True))] == [(2, 2)]
    assert [(row[0], row[1]) for row in versions(Selection(("1", "12"), multi=True))] == [(1, 1), (12, 1)]


def test_accuracy_stats_are_coloured_at_the_alerts_level():
    """Issue 23, item 11: the realized and estimated accuracy stats show the difference from
    the validation baseline, red below minus the alerts' default margin (0.05)."""
    from modelmon.alerting.config import EstimatedAccuracy, RealizedQuality
    from modelmon.dashboards.catalog import ACCURACY_MARGIN

    assert ACCURACY_MARGIN == RealizedQuality().margin == EstimatedAccuracy().margin
    quality = panels(grafana.dashboards_json("postgresql")["modelmon-quality"])
    for title in ("Realized accuracy against baseline", "Estimated accuracy (CBPE) against baseline"):
        stat = quality[title]
        assert stat["fieldConfig"]["defaults"]["thresholds"]["steps"] == [
            {"color": "red", "value": None}, {"color": "orange", "value": -0.05}, {"color": "green", "value": -0.025}], title
        assert 'modelmon_baseline_metric{' in stat["targets"][0]["expr"] and 'metric="accuracy"' in stat["targets"][0]["expr"]


def test_cluster_variable_shows_with_several_clusters():
    for uid, dashboard in grafana.dashboards_json("postgresql", multi_cluster=True).items():
        for variable in dashboard["templating"]["list"]:
            if variable["name"] == "cluster":
                assert variable["hide"] == 0, uid
