"""Grafana alerting provisioning: the file-provisioning format (apiVersion 1), each object
checked against Grafana's alerting JSON schema, cross-references resolved, secrets kept as
references. (Grafana itself cannot be installed here, so it does not load the files.)"""

from __future__ import annotations

import json

import pytest
import yaml

from modelmon.alerting.config import load_config
from modelmon.alerting.export import GRAFANA_DIR, export
from modelmon.alerting.grafana import ANY_VALUE, GRAFANA_DEFAULT_RECEIVER
from tests.alerting.conftest import REPO

SCHEMA = REPO.parent / "shared" / "grafana-schema" / "alerting.jsonschema.json"
ENV = {"PAGERDUTY_ROUTING_KEY": "pd-secret-value", "TELEGRAM_BOT_TOKEN": "1:tg-secret-value",
       "DISCORD_WEBHOOK_URL": "https://discord.example/discord-secret-value", "APPRISE_URLS": "json://apprise-secret-value"}


@pytest.fixture(scope="module")
def validator():
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMA.exists():
        pytest.skip(f"{SCHEMA} not found")
    schema = json.loads(SCHEMA.read_text())

    def validate(instance: dict, definition: str) -> None:
        jsonschema.validate(instance, {**schema, "$ref": f"#/definitions/{definition}"})

    return validate


@pytest.fixture
def exported(tmp_path, monkeypatch):
    for key, value in ENV.items():
        monkeypatch.setenv(key, value)
    config = load_config(REPO / "examples" / "modelmon.yaml")
    result = export(config, tmp_path)
    files = {p.name: yaml.safe_load(p.read_text()) for p in (tmp_path / GRAFANA_DIR).glob("*.yaml")}
    texts = "".join(p.read_text() for p in (tmp_path / GRAFANA_DIR).glob("*.yaml"))
    prometheus = yaml.safe_load((tmp_path / "prometheus" / "modelmon-alerts.rules.yml").read_text())
    return config, result, files, texts, prometheus


def test_files_follow_the_file_provisioning_format_and_schema(exported, validator):
    config, _, files, _, _ = exported
    assert sorted(files) == ["alert-rules.yaml", "contact-points.yaml", "notification-policies.yaml"]
    assert all(content["apiVersion"] == 1 for content in files.values())

    jsonschema = pytest.importorskip("jsonschema")
    with pytest.raises(jsonschema.ValidationError):  # the schema is in force
        validator({"uid": "x", "type": "msteams", "settings": {}}, "ContactPoint")
    points = files["contact-points.yaml"]["contactPoints"]
    uids = []
    for point in points:
        assert set(point) == {"orgId", "name", "receivers"} and point["orgId"] == 1 and point["receivers"]
        for receiver in point["receivers"]:
            validator(receiver, "ContactPoint")  # type among Grafana's, settings an object
            uids.append(receiver["uid"])
    assert len(uids) == len(set(uids)) and all(len(u) <= 40 for u in uids)
    names = {p["name"] for p in points}

    (policy,) = files["notification-policies.yaml"]["policies"]
    validator({k: v for k, v in policy.items() if k != "orgId"}, "NotificationPolicy")
    assert {"alertname", "grafana_folder"} <= set(policy["group_by"])

    def receivers(node: dict) -> list[str]:
        return [node["receiver"], *(r for child in node.get("routes", []) for r in receivers(child))]

    assert set(receivers(policy)) <= names | {GRAFANA_DEFAULT_RECEIVER}
    assert {"receiver": "churn-telegram+churn-discord", "object_matchers": [["model", "=", "churn"]], "continue": True} in policy["routes"]

    (group,) = files["alert-rules.yaml"]["groups"]
    assert {"orgId", "name", "folder", "interval", "rules"} == set(group) and group["folder"] == "modelmon"
    prometheus_rules = {r["alert"]: r for r in exported[4]["groups"][0]["rules"]}
    # The always-firing Watchdog only where routing.watchdog names a dead man's switch.
    assert [r["title"] for r in group["rules"]] == [n for n in prometheus_rules if n != "ModelmonWatchdog"]
    for rule in group["rules"]:
        validator({**rule, "folderUID": group["folder"], "orgID": group["orgId"], "ruleGroup": group["name"]}, "Rule")
        ref_ids = [d["refId"] for d in rule["data"]]
        assert rule["condition"] in ref_ids
        query, condition = rule["data"]
        assert query["datasourceUid"] == config.grafana.datasource_uid
        assert query["model"]["expr"] == prometheus_rules[rule["title"]]["expr"]  # the promtool-tested PromQL
        assert query["relativeTimeRange"]["from"] >= 600
        assert condition["model"] == {"refId": "C", "type": "math", "expression": ANY_VALUE,
                                      "datasource": {"type": "__expr__", "uid": "__expr__"}}
        assert rule["for"] == prometheus_rules[rule["title"]]["for"]
        assert rule["labels"] == prometheus_rules[rule["title"]]["labels"]
        annotations = rule["annotations"]
        # Not labels: see builtins.feature_drift and builtins.rollout_rolled_back.
        extra = {"ModelmonFeatureDrift": {"method"}, "ModelmonRolloutRolledBack": {"candidate"}}.get(rule["title"], set())
        assert set(annotations) - {"__dashboardUid__", "__panelId__"} == {"summary", "description", "value", "threshold", "runbook_url"} | extra
        if rule["title"].startswith("Modelmon"):
            assert "$values.A.Value" in annotations["description"]
        assert "| query" not in json.dumps(annotations)  # Grafana templates have no query function
    assert len({r["uid"] for r in group["rules"]}) == len(group["rules"])


def test_secrets_stay_references_for_grafana_to_expand(exported):
    _, result, files, texts, _ = exported
    for value in ENV.values():
        assert value not in texts
    settings = {r["uid"]: r["settings"] for p in files["contact-points.yaml"]["contactPoints"] for r in p["receivers"]}
    values = json.dumps(settings)
    assert "${PAGERDUTY_ROUTING_KEY}" in values and "${TELEGRAM_BOT_TOKEN}" in values
    assert "$__file{/run/secrets/slack_webhook_url}" in values and "$__file{/run/secrets/hook_token}" in values
    # Apprise channels reach the bridge's Grafana endpoint; SNS has no Grafana contact point.
    assert "http://127.0.0.1:9096/grafana/everything-else" in values
    assert any("oncall-sms (sns)" in note for note in result.notes)


def test_grafana_rules_name_their_dashboard():
    """Issue 23, item 9: every built-in Grafana rule carries __dashboardUid__ of the dashboard
    that shows its data, which exists among the exported dashboards."""
    from modelmon.alerting.config import AlertingConfig
    from modelmon.alerting.grafana import rule_groups
    from modelmon.alerting.prometheus_rules import alert_rules
    from modelmon.dashboards.catalog import all_dashboards

    uids = {d.uid for d in all_dashboards()}
    rules = rule_groups(AlertingConfig(), alert_rules(AlertingConfig()))["groups"][0]["rules"]
    linked = {r["title"]: r["annotations"]["__dashboardUid__"] for r in rules}
    assert set(linked.values()) <= uids
    assert linked["ModelmonHighErrorRatio"] == "modelmon-serving" and linked["ModelmonFleetFeatureDrift"] == "modelmon-drift"
    assert linked["ModelmonNoLabels"] == "modelmon-quality" and linked["ModelmonTrainingLossNaN"] == "modelmon-training"


def _metrics(expr: str) -> set[str]:
    """The metrics an expression reads: raw names without their counter and histogram
    suffixes, the counter of a recording rule (level:metric:operations), and up."""
    import re

    names = {m for _, m in re.findall(r"\b([a-z_]+):(modelmon_[a-z_]+):", expr)}
    raw = re.sub(r"\b[a-z_]+:modelmon_[a-z_]+:[a-z_0-9$]*", "", expr)
    names |= {re.sub(r"_(total|bucket|sum|count)$", "", m) for m in re.findall(r"\b(modelmon_[a-z_]+)", raw)}
    names |= {"up"} if re.search(r"\bup\{", raw) else set()
    return names - {"modelmon_baseline_metric"}  # every quality panel reads the baseline


def test_grafana_rules_link_to_the_panel_that_shows_their_condition():
    """Issue 23, item 9: each Grafana rule with a panel carries __panelId__, the id of a panel
    of its __dashboardUid__ dashboard (as generated) that queries the metric the rule fires
    on (a recording rule counts as its counter; one name extending the other counts, as
    modelmon_feedback and modelmon_feedback_matched). Only the Watchdog, notify-bridge and
    message-queue alerts have none: no panel shows their metrics."""
    from modelmon.alerting.builtins import NAMES
    from modelmon.alerting.config import AlertingConfig
    from modelmon.alerting.grafana import rule_groups
    from modelmon.alerting.prometheus_rules import alert_rules
    from modelmon.dashboards.grafana import dashboards_json

    rules = rule_groups(AlertingConfig(), alert_rules(AlertingConfig()))["groups"][0]["rules"]
    dashboards = dashboards_json("postgresql")
    unlinked = set()
    for rule in rules:
        annotations = rule["annotations"]
        if "__panelId__" not in annotations:
            unlinked.add(rule["title"])
            continue
        panels = [p for p in dashboards[annotations["__dashboardUid__"]]["panels"] if p["id"] == int(annotations["__panelId__"])]
        assert len(panels) == 1 and panels[0]["type"] != "row", rule["title"]
        shown = set().union(*(_metrics(t["expr"]) for t in panels[0]["targets"]))
        fired = _metrics(rule["data"][0]["model"]["expr"])
        assert any(a.startswith(b) or b.startswith(a) for a in fired for b in shown), (rule["title"], panels[0]["title"], fired, shown)
    assert unlinked == {n for key in ("watchdog", "bridge_dropped", "bridge_failed", "stream_consumer_stalled", "stream_spool_growing",
                                      "stream_events_dropped") for n in NAMES[key]}
