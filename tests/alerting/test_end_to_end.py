"""Alerting end to end: the real server, Prometheus, Alertmanager and notify-bridge.

Drifted traffic to ``shop`` (``amount`` tripled, ``channel`` a category never seen in
training) must make ModelmonFeatureDrift fire and arrive by email (an SMTP server that
requires the password Alertmanager reads from a file), by webhook, by Slack (its webhook
URL read from a file, pointing at the local receiver) and through the bridge to an Apprise
``json://`` URL; normal traffic must then bring the resolved notifications. Every check is
on what the sinks received, never on what Alertmanager says it sent.
"""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
import yaml

from modelmon.alerting.stack import Alertmanager
from modelmon.stack.processes import free_port, stop_process, wait_for_http
from modelmon.stack.prometheus import Prometheus
from tests.alerting.conftest import HttpSink, SmtpSink, modelmon, require
from tests.conftest import start_server

pytestmark = pytest.mark.slow

RUNBOOK = "https://github.com/modelmon/modelmon/blob/main/docs/runbooks.md#modelmonfeaturedrift"
TIMEOUT = 40.0


def drifted(frame: pd.DataFrame, n: int, seed: int) -> list[dict]:
    rows = frame.drop(columns="segment").sample(n, replace=True, random_state=seed).copy()
    rows["amount"] = rows["amount"] * 3
    rows["channel"] = "kiosk"
    return rows.to_dict("records")


def normal(frame: pd.DataFrame, n: int, seed: int) -> list[dict]:
    return frame.drop(columns="segment").sample(n, replace=True, random_state=seed).to_dict("records")


def send(url: str, rows: list[dict]) -> None:
    response = httpx.post(f"{url}/v1/models/shop:predict", json={"instances": rows}, timeout=10)
    assert response.status_code == 200, response.text


def amount_alert(alerts: list[dict], status: str) -> dict | None:
    return next((a for a in alerts if a["labels"].get("alertname") == "ModelmonFeatureDrift"
                 and a["labels"].get("feature") == "amount" and a["status"] == status), None)


def webhook_has(status: str):
    return lambda r: r.path == "/webhook" and amount_alert(r.json["alerts"], status) is not None


def slack_has(status: str):
    word = "FIRING" if status == "firing" else "RESOLVED"
    return lambda r: r.path == "/slack" and any(
        f"{word} ModelmonFeatureDrift" in block and "feature: amount" in block
        for a in r.json.get("attachments", []) for block in a.get("text", "").split("\n\n")
    )


def bridge_has(status: str):
    word = "FIRING" if status == "firing" else "RESOLVED"
    return lambda r: r.path == "/apprise" and any(
        block.startswith(f"{word} ModelmonFeatureDrift") and "feature: amount" in block
        for block in r.json["message"].split("\n\n")
    )


def mail_has(status: str):
    word = "FIRING" if status == "firing" else "RESOLVED"
    return lambda m: any(block.startswith(f"{word} ModelmonFeatureDrift") and "feature: amount" in block
                         for block in m.text.split("\n\n"))


def received(sink: HttpSink) -> list[str]:
    """What the webhook received, in short (for failure messages)."""
    return [f"{r.json['status']} " + ", ".join(f"{a['labels'].get('alertname')}/{a['labels'].get('feature', '')}={a['status']}"
                                              for a in r.json["alerts"]) for r in sink.on("/webhook")]


def block(text: str, word: str) -> str:
    """The paragraph of a message about the amount feature's drift alert."""
    return next(b for b in text.split("\n\n") if b.startswith(f"{word} ModelmonFeatureDrift") and "feature: amount" in b)


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # a loopback sink
def test_drift_alert_fires_and_resolves_by_email_webhook_slack_and_bridge(
    registry_dir, shop_frame, tmp_path, http_sink: HttpSink, smtp_sink: SmtpSink
):
    require("prometheus", "prometheus-alertmanager", "amtool", "promtool")
    started = time.monotonic()
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    # No trailing newline: Alertmanager 0.25 reads smtp_auth_password_file verbatim.
    (secrets / "smtp_password").write_text(smtp_sink.password)
    (secrets / "slack_webhook").write_text(f"{http_sink.url}/slack\n")
    (secrets / "apprise_urls").write_text(f"json://127.0.0.1:{http_sink.port}/apprise\n")
    bridge_port = free_port()
    config = {
        "smtp": {"smarthost": f"127.0.0.1:{smtp_sink.port}", "from": "modelmon@example.com", "require_tls": False,
                 "auth_username": smtp_sink.username, "auth_password_file": str(secrets / "smtp_password")},
        "channels": [
            {"name": "oncall-email", "type": "email", "to": ["oncall@example.com"]},
            {"name": "hook", "type": "webhook", "url": f"{http_sink.url}/webhook"},
            {"name": "team-slack", "type": "slack", "channel": "#ml", "webhook_url_file": str(secrets / "slack_webhook")},
            {"name": "phones", "type": "apprise", "urls_file": str(secrets / "apprise_urls")},
        ],
        "routing": {"default": ["hook"], "severity": {"warning": ["oncall-email", "hook", "team-slack", "phones"]},
                    "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h", "resolve_timeout": "1m"},
        "builtins": {"override_for": "2s"},
        "bridge": {"url": f"http://127.0.0.1:{bridge_port}", "retry_seconds": 0.5},
    }
    config_file = tmp_path / "modelmon.yaml"
    config_file.write_text(yaml.safe_dump(config))
    out = tmp_path / "out"
    exported = modelmon("alerts", "export", str(out), "--config", str(config_file))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    am_config = out / "alertmanager" / "alertmanager.yml"
    assert smtp_sink.password not in am_config.read_text()  # read from its file by Alertmanager

    server = start_server(registry_dir, tmp_path, "--model", "shop", "--drain-seconds", "0",
                          "--drift-window-rows", "200", "--drift-window-seconds", "20",
                          "--drift-min-rows", "100", "--drift-score-seconds", "0.5")
    running: list = []
    bridge = subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", "notify-bridge", "--config", str(config_file), "--port", str(bridge_port)],
        stdout=(tmp_path / "bridge.log").open("wb"), stderr=subprocess.STDOUT,
    )
    try:
        alertmanager = Alertmanager.start(am_config, tmp_path / "alertmanager", log_level="debug")
        running.append(alertmanager)
        prometheus = Prometheus.start(
            tmp_path / "prometheus", [f"127.0.0.1:{server.port}"], rule_files=sorted((out / "prometheus").glob("*.rules.yml")),
            alertmanagers=[f"127.0.0.1:{alertmanager.port}"], evaluation_interval="1s",
        )
        running.append(prometheus)
        wait_for_http(f"http://127.0.0.1:{bridge_port}/-/healthy", timeout=30, process=bridge)
        assert prometheus.wait_for('up{job="modelmon"}', 1, timeout=20) == 1

        # Drifted traffic until the webhook has the alert (bounded in time and requests).
        deadline, seed = time.monotonic() + TIMEOUT, 0
        while time.monotonic() < deadline and http_sink.wait(webhook_has("firing"), timeout=0.5) is None:
            send(server.url, drifted(shop_frame, 50, seed))
            seed += 1
        firing_hook = http_sink.wait(webhook_has("firing"), timeout=1)
        assert firing_hook is not None, f"no firing drift alert at the webhook; Prometheus log:\n{prometheus.log_path.read_text()[-1500:]}"
        firing_mail = smtp_sink.wait(mail_has("firing"), timeout=15)
        firing_slack = http_sink.wait(slack_has("firing"), timeout=15)
        firing_bridge = http_sink.wait(bridge_has("firing"), timeout=15)
        fired_after = time.monotonic() - started

        # Normal traffic until the resolved notification arrives.
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and http_sink.wait(webhook_has("resolved"), timeout=0.3) is None:
            send(server.url, normal(shop_frame, 50, seed))
            seed += 1
        resolved_hook = http_sink.wait(webhook_has("resolved"), timeout=1)
        assert resolved_hook is not None, (
            f"no resolved drift notification at the webhook; received: {received(http_sink)}; "
            f"Prometheus ALERTS: {[(a['metric'].get('alertname'), a['metric'].get('feature'), a['metric'].get('alertstate')) for a in prometheus.query('ALERTS')]}; "
            f"Alertmanager: {[(a['labels'].get('alertname'), a['labels'].get('feature'), a['status']['state'], a.get('endsAt')) for a in alertmanager.alerts()]}; "
            f"server: {[line for line in httpx.get(server.url + '/metrics').text.splitlines() if line.startswith('modelmon_feature_drift{')]}"
        )
        resolved_mail = smtp_sink.wait(mail_has("resolved"), timeout=30)
        resolved_bridge = http_sink.wait(bridge_has("resolved"), timeout=15)
        resolved_slack = http_sink.wait(slack_has("resolved"), timeout=15)
        notify_log = [line for line in (tmp_path / "alertmanager" / "alertmanager.log").read_text().splitlines()
                      if "Notify" in line or "level=error" in line or "level=warn" in line]
        bridge_metrics = httpx.get(f"http://127.0.0.1:{bridge_port}/metrics").text
    finally:
        for part in reversed(running):
            part.stop()
        stop_process(bridge)
        stop_process(server.process)

    # Webhook: Alertmanager's JSON, with the rule's labels and annotations.
    alert = amount_alert(firing_hook.json["alerts"], "firing")
    assert alert["labels"] | {"model": "shop", "version": "1", "severity": "warning"} == alert["labels"]
    assert "method" not in alert["labels"]  # one alert per feature whatever the method (issue 23, item 4)
    assert alert["annotations"]["method"] == "ks"  # 200-row window: the p-value test decides
    assert alert["annotations"]["runbook_url"] == RUNBOOK
    assert float(alert["annotations"]["value"]) < 0.01
    assert alert["annotations"]["threshold"] == "0.01"
    assert f"ks = {alert['annotations']['value']} against a threshold of 0.01" in alert["annotations"]["description"]
    assert any(a["labels"].get("feature") == "channel" for a in firing_hook.json["alerts"])

    # Email: delivered through SMTP AUTH with the password from the file.
    assert firing_mail is not None, f"no firing email; logins {smtp_sink.logins}; log: {notify_log[-20:]}"
    assert smtp_sink.logins and all(login.endswith(":ok") for login in smtp_sink.logins)
    assert firing_mail.recipients == ["oncall@example.com"]
    assert "ModelmonFeatureDrift" in firing_mail.subject and "FIRING" in firing_mail.subject
    text = block(firing_mail.text, "FIRING")
    assert "model: shop" in text and "version: 1" in text and "method: ks" in text
    assert "threshold: 0.01" in text and f"runbook: {RUNBOOK}" in text
    assert RUNBOOK in firing_mail.html

    # Slack (its webhook URL read from a file) and the bridge's Apprise message.
    assert firing_slack is not None and firing_slack.json["channel"] == "#ml"
    assert firing_bridge is not None, f"nothing from the bridge:\n{(tmp_path / 'bridge.log').read_text()}"
    message = firing_bridge.json
    assert message["title"].startswith("[FIRING") and "ModelmonFeatureDrift" in message["title"]
    text = block(message["message"], "FIRING")
    assert "model: shop  version: 1  feature: amount  method: ks" in text
    assert "value: " in text and "threshold: 0.01" in text and f"runbook: {RUNBOOK}" in text

    # Resolved, everywhere.
    assert resolved_mail is not None, f"no resolved email; mails: {[m.subject for m in smtp_sink.mails]}; log: {notify_log[-20:]}"
    assert resolved_slack is not None, "no resolved Slack message"
    assert resolved_bridge is not None, "no resolved message through the bridge"
    assert f"runbook: {RUNBOOK}" in block(resolved_bridge.json["message"], "RESOLVED")
    assert 'modelmon_bridge_notifications_total{channel="phones",outcome="delivered"}' in bridge_metrics
    print(f"fired after {fired_after:.1f} s; whole test {time.monotonic() - started:.1f} s")
