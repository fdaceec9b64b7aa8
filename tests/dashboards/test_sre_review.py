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
    template-job-rule and target-job-rule (every query of a model reads job=~"$job").
    Not applied: target-instance-rule / template-instance-rule (modelmon selects by model and
    version; the Replicas row breaks down by instance), uneditable-dashboard."""
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
            assert variables["job"]["type"] == "query" and variables["job"]["includeAll"], uid  # template-job-rule
            for panel in prom_panels:
                for target in panel["targets"]:
                    if '$model' in target["expr"]:
                        assert all('job=~"$job"' in sel for sel in re.findall(r'\{[^{}]*model="\$model"[^{}]*\}', target["expr"])), (
                            f"{uid} / {panel['title']}: {target['expr']}")  # target-job-rule
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
