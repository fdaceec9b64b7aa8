"""notify-bridge: Alertmanager and Grafana payloads become readable Apprise messages;
failed deliveries are retried and counted. The bridge runs as the real command and
delivers through Apprise's ``json://`` to a local receiver."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelmon.alerting.bridge import format_payload
from modelmon.stack.processes import free_port, stop_process, wait_for_http
from tests.alerting.conftest import HttpSink, cli

DRIFT = {
    "status": "firing",
    "labels": {"alertname": "ModelmonFeatureDrift", "severity": "warning", "model": "shop", "version": "1",
               "feature": "amount", "method": "psi", "instance": "replica-1:8080"},
    "annotations": {"summary": "Feature amount of model shop has drifted", "description": "PSI is high.",
                    "value": "0.4312", "threshold": "0.2", "runbook_url": "https://runbooks.example/#modelmonfeaturedrift"},
}
ALERTMANAGER_PAYLOAD = {
    "version": "4", "status": "firing", "receiver": "phones", "groupKey": "{}:{alertname=\"ModelmonFeatureDrift\"}",
    "commonLabels": {"alertname": "ModelmonFeatureDrift", "model": "shop", "version": "1", "severity": "warning"},
    "alerts": [DRIFT, {**DRIFT, "status": "resolved", "labels": {**DRIFT["labels"], "feature": "channel"}}],
}
GRAFANA_PAYLOAD = {
    "receiver": "everything-else", "status": "firing", "orgId": 1, "state": "alerting", "title": "[FIRING:1] ...",
    "commonLabels": {"alertname": "ModelmonHighErrorRatio", "model": "churn", "grafana_folder": "modelmon"},
    "alerts": [{
        "status": "firing",
        "labels": {"alertname": "ModelmonHighErrorRatio", "model": "churn", "version": "2", "severity": "critical"},
        "annotations": {"summary": "Model churn version 2 rejects or fails 12.5% of its requests", "threshold": "5%",
                        "runbook_url": "https://runbooks.example/#modelmonhigherrorratio"},
        "values": {"A": 0.125, "C": 1}, "valueString": "[ var='A' value=0.125 ]",
    }],
}


def test_message_format():
    message = format_payload(ALERTMANAGER_PAYLOAD)
    assert message.title == "[FIRING:1] ModelmonFeatureDrift model shop version 1"
    firing, resolved = message.body.split("\n\n")
    assert firing.splitlines() == [
        "FIRING ModelmonFeatureDrift (warning): Feature amount of model shop has drifted",
        "model: shop  version: 1  feature: amount  method: psi  instance: replica-1:8080",
        "value: 0.4312  threshold: 0.2",
        "PSI is high.",
        "runbook: https://runbooks.example/#modelmonfeaturedrift",
    ]
    assert resolved.startswith("RESOLVED ModelmonFeatureDrift") and "feature: channel" in resolved
    grafana = format_payload(GRAFANA_PAYLOAD)
    assert grafana.title == "[FIRING:1] ModelmonHighErrorRatio model churn"
    assert "value: 0.125  threshold: 5%" in grafana.body  # the value of query A
    assert format_payload({**ALERTMANAGER_PAYLOAD, "status": "resolved"}).title.startswith("[RESOLVED] ")
    for bad in ({}, {"alerts": []}, {"alerts": "x"}):
        with pytest.raises(ValueError):
            format_payload(bad)


def metric_values(url: str) -> dict[tuple[str, tuple], float]:
    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict, name: str, **labels: str) -> float:
    return values[(name, tuple(sorted(labels.items())))]


def test_bridge_delivers_retries_and_counts(tmp_path, http_sink: HttpSink):
    closed_port = free_port()  # nothing listens there: every delivery to it fails
    (tmp_path / "urls").write_text(f"json://127.0.0.1:{http_sink.port}/phones\njson://127.0.0.1:{closed_port}/void\n")
    config = tmp_path / "modelmon.yaml"
    config.write_text(yaml.safe_dump({"channels": [{"name": "phones", "type": "apprise", "urls_file": str(tmp_path / "urls")}]}))
    port = free_port()
    bridge = subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", "notify-bridge", "--config", str(config), "--port", str(port),
         "--url", f"json://127.0.0.1:{http_sink.port}/default", "--attempts", "3", "--retry-seconds", "0.2"],
        stdout=(tmp_path / "bridge.log").open("wb"), stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/-/healthy", timeout=30, process=bridge)
        http_sink.fail_next = 2  # the receiver fails twice before it takes the message
        response = httpx.post(f"{url}/alertmanager/phones", json=ALERTMANAGER_PAYLOAD)
        assert response.status_code == 202 and response.json() == {"queued": 2}
        delivered = http_sink.wait(lambda r: r.path == "/phones", timeout=15)
        assert delivered is not None, (tmp_path / "bridge.log").read_text()
        assert delivered.json["title"] == "[FIRING:1] ModelmonFeatureDrift model shop version 1"
        assert "value: 0.4312  threshold: 0.2" in delivered.json["message"]
        assert delivered.json["type"] == "warning"

        grafana = httpx.post(f"{url}/grafana", json=GRAFANA_PAYLOAD)  # the --url channel
        assert grafana.status_code == 202
        from_grafana = http_sink.wait(lambda r: r.path == "/default", timeout=15)
        assert from_grafana is not None and "ModelmonHighErrorRatio" in from_grafana.json["title"]
        assert from_grafana.json["type"] == "failure"  # critical

        assert httpx.post(f"{url}/alertmanager/nobody", json=ALERTMANAGER_PAYLOAD).status_code == 404
        assert httpx.post(f"{url}/alertmanager/phones", content=b"not json").status_code == 400
        assert httpx.post(f"{url}/grafana", json={"status": "firing"}).status_code == 400

        deadline = time.monotonic() + 15  # the closed port: 3 attempts (0.2 s, then 0.4 s apart)
        while time.monotonic() < deadline:
            values = metric_values(url)
            if value(values, "modelmon_bridge_notifications_total", channel="phones", outcome="failed") == 1:
                break
            time.sleep(0.2)
    finally:
        stop_process(bridge)
    assert http_sink.failed == 2
    assert value(values, "modelmon_bridge_notifications_total", channel="phones", outcome="delivered") == 1
    assert value(values, "modelmon_bridge_notifications_total", channel="phones", outcome="failed") == 1
    assert value(values, "modelmon_bridge_delivery_attempts_total", channel="phones", outcome="ok") == 1
    assert value(values, "modelmon_bridge_delivery_attempts_total", channel="phones", outcome="error") == 2 + 3
    assert value(values, "modelmon_bridge_retries_total", channel="phones") == 2 + 2
    assert value(values, "modelmon_bridge_notifications_total", channel="default", outcome="delivered") == 1
    assert value(values, "modelmon_bridge_payloads_total", source="alertmanager", outcome="accepted") == 1
    assert value(values, "modelmon_bridge_payloads_total", source="alertmanager", outcome="unknown_channel") == 1
    assert value(values, "modelmon_bridge_payloads_total", source="alertmanager", outcome="invalid") == 1
    assert value(values, "modelmon_bridge_payloads_total", source="grafana", outcome="invalid") == 1
    assert value(values, "modelmon_bridge_queue_depth") == 0


def test_bridge_refuses_to_start_without_usable_urls(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./modelmon.yaml
    none = cli("notify-bridge")
    assert none.exit_code == 2 and "no Apprise URL" in none.stderr
    (tmp_path / "urls").write_text("notaservice://user:hunter2@example.com\n")
    (tmp_path / "modelmon.yaml").write_text(yaml.safe_dump(
        {"channels": [{"name": "sms", "type": "apprise", "urls_file": str(tmp_path / "urls")}]}))
    bad = cli("notify-bridge", "--config", str(tmp_path / "modelmon.yaml"))
    assert bad.exit_code == 2
    assert "channel sms: URL 1 (notaservice://...) is not an Apprise URL" in " ".join(bad.stderr.split())
    assert "hunter2" not in bad.stderr  # the URL's credentials are never printed
