"""The token end to end: ``modelmon alerts export`` gives Alertmanager (``credentials_file``)
and Grafana (an authorization header from a secret) the bridge's token, and a real
Alertmanager delivers through the bridge with it; with another token in the file, the
bridge refuses Alertmanager and nothing reaches the receiver."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time

import pytest
import yaml

from modelmon.alerting.alertmanager import alertmanager_config
from modelmon.alerting.config import parse_config
from modelmon.alerting.export import GRAFANA_DIR
from modelmon.alerting.prometheus_rules import alert_rules
from modelmon.alerting.stack import Alertmanager
from modelmon.stack.processes import free_port
from tests.alerting.bridge_helpers import start_bridge, value
from tests.alerting.conftest import HttpSink, modelmon, require

TOKEN = "am-to-bridge-token-3f9a"


def post_alert(alertmanager: Alertmanager, name: str) -> None:
    now = dt.datetime.now(dt.UTC)
    alertmanager.post_alerts([{
        "labels": {"alertname": name, "severity": "critical", "model": "churn", "version": "1"},
        "annotations": {"summary": f"{name} for model churn", "runbook_url": "https://runbooks.example/#x"},
        "startsAt": now.isoformat(), "endsAt": (now + dt.timedelta(minutes=5)).isoformat(),
    }])


@pytest.mark.slow
def test_alertmanager_delivers_through_the_token_alerts_export_gave_it(tmp_path, http_sink: HttpSink):
    require("prometheus-alertmanager", "amtool")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    token_file = secrets / "bridge_token"
    token_file.write_text(TOKEN + "\n")
    (secrets / "apprise_urls").write_text(f"json://127.0.0.1:{http_sink.port}/phones\n")
    bridge_port = free_port()
    config = {
        "channels": [{"name": "phones", "type": "apprise", "urls_file": str(secrets / "apprise_urls")}],
        "routing": {"default": ["phones"], "group_by": ["alertname"], "group_wait": "1s", "group_interval": "1s",
                    "repeat_interval": "1h"},
        "bridge": {"url": f"http://127.0.0.1:{bridge_port}", "token_file": str(token_file), "retry_seconds": 0.5},
    }
    config_file = tmp_path / "modelmon.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    exported = modelmon("alerts", "export", str(out), "--config", str(config_file))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    am_file = out / "alertmanager" / "alertmanager.yml"
    # amtool itself, not `export --check`: that also runs promtool on every generated rule test
    # (32.6 s of CPU here), which test_export_command_checks_with_promtool_and_amtool and
    # test_prometheus_rules.py run already; this test's own point is that amtool accepts the
    # token as a credentials_file.
    checked = subprocess.run(["amtool", "check-config", str(am_file)], capture_output=True, text=True)
    assert checked.returncode == 0 and "SUCCESS" in checked.stdout, checked.stdout + checked.stderr
    assert TOKEN not in am_file.read_text() and TOKEN not in exported.stdout + exported.stderr
    hook = yaml.safe_load(am_file.read_text())["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == f"http://127.0.0.1:{bridge_port}/alertmanager/phones"
    assert hook["http_config"] == {"authorization": {"type": "Bearer", "credentials_file": str(token_file)}}
    assert hook["max_alerts"] == 256  # payloads stay under the bridge's body limit
    points = yaml.safe_load((out / GRAFANA_DIR / "contact-points.yaml").read_text())["contactPoints"]
    settings = points[0]["receivers"][0]["settings"]
    assert settings["url"] == f"http://127.0.0.1:{bridge_port}/grafana/phones"
    assert settings["authorization_scheme"] == "Bearer"
    assert settings["authorization_credentials"] == f"$__file{{{token_file}}}"  # Grafana reads the file itself

    bridge = start_bridge(tmp_path, config, port=bridge_port)
    alertmanager = None
    try:
        alertmanager = Alertmanager.start(am_file, tmp_path / "alertmanager", log_level="debug")
        post_alert(alertmanager, "ModelmonTargetDown")
        delivered = http_sink.wait(lambda r: r.path == "/phones" and "ModelmonTargetDown" in r.json["title"], timeout=30)
        assert delivered is not None, f"{bridge.log()}\n{alertmanager.log_path.read_text()[-3000:]}"
        assert delivered.json["title"] == "[FIRING:1] ModelmonTargetDown model churn version 1"

        # Another token in the file: Alertmanager now sends that one (it reads the file for
        # every request), and the bridge refuses it.
        token_file.write_text("a-token-the-bridge-does-not-know")
        post_alert(alertmanager, "ChurnAmountOutOfRange")  # not a symptom ModelmonTargetDown inhibits
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            values = bridge.metrics()
            if value(values, "modelmon_bridge_payloads_total", source="alertmanager", outcome="unauthorized") >= 1:
                break
            time.sleep(0.2)
        time.sleep(1)
        am_log = alertmanager.log_path.read_text()
    finally:
        if alertmanager is not None:
            alertmanager.stop()
        bridge.stop()
    assert value(values, "modelmon_bridge_payloads_total", source="alertmanager", outcome="unauthorized") >= 1, am_log[-3000:]
    assert value(values, "modelmon_bridge_payloads_total", source="alertmanager", outcome="accepted") == 1
    assert not any("ChurnAmountOutOfRange" in r.json["title"] for r in http_sink.on("/phones"))
    assert "401" in am_log  # Alertmanager says why it failed
    assert TOKEN not in bridge.log()


def test_a_token_from_the_environment_is_written_private_and_listed(monkeypatch):
    monkeypatch.setenv("BRIDGE_TOKEN", TOKEN)
    config = parse_config({
        "channels": [{"name": "phones", "type": "apprise", "urls": "$__env{APPRISE_URLS}"}],
        "routing": {"default": ["phones"]},
        "bridge": {"token": "$__env{BRIDGE_TOKEN}", "max_body_bytes": 65536},
    })
    content, secrets = alertmanager_config(config, alert_rules(config))
    hook = content["receivers"][0]["webhook_configs"][0]
    assert hook["http_config"] == {"authorization": {"type": "Bearer", "credentials": TOKEN}}
    assert hook["max_alerts"] == 16
    assert secrets.substituted == ["bridge.token"]  # so the export writes the file 0600 and says so


def test_export_without_a_token_says_the_bridge_stays_on_loopback(tmp_path, monkeypatch):
    from modelmon.alerting.export import export

    monkeypatch.setenv("APPRISE_URLS", "json://127.0.0.1:9/")
    config = parse_config({"channels": [{"name": "phones", "type": "apprise", "urls": "$__env{APPRISE_URLS}"}],
                           "routing": {"default": ["phones"]}})
    result = export(config, tmp_path)
    assert any("bridge.token is not set" in note and "loopback" in note for note in result.notes)
    hook = yaml.safe_load(result.alertmanager_config.read_text())["receivers"][0]["webhook_configs"][0]
    assert "http_config" not in hook
    points = json.dumps(yaml.safe_load((tmp_path / GRAFANA_DIR / "contact-points.yaml").read_text()))
    assert "authorization" not in points
