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
from tests.alerting.bridge_helpers import alert, payload, start_bridge
from tests.alerting.conftest import HttpSink, cli

DRIFT = {
    "status": "firing",
    "labels": {"alertname": "ModelmonFeatureDrift", "severity": "warning", "model": "shop", "version": "1",
               "feature": "amount", "instance": "replica-1:8080"},
    # The method is an annotation of ModelmonFeatureDrift (a label would change its identity).
    "annotations": {"summary": "Feature amount of model shop has drifted", "description": "PSI is high.", "method": "psi",
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
    assert value(values, "modelmon_bridge_queue_depth", channel="phones") == value(values, "modelmon_bridge_queue_depth", channel="default") == 0


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


# -- the token ---------------------------------------------------------------------------

TOKEN = "b7f3c1d2-bridge-token-from-a-file"


def test_missing_wrong_and_right_tokens(tmp_path, http_sink: HttpSink):
    (tmp_path / "urls").write_text(f"json://127.0.0.1:{http_sink.port}/phones\n")
    (tmp_path / "token").write_text(TOKEN + "\n")  # as an editor writes it: the newline is not part of it
    config = {"channels": [{"name": "phones", "type": "apprise", "urls_file": str(tmp_path / "urls")}],
              "bridge": {"token_file": str(tmp_path / "token")}}
    bridge = start_bridge(tmp_path, config)
    try:
        target = f"{bridge.url}/alertmanager/phones"
        missing = httpx.post(target, json=ALERTMANAGER_PAYLOAD)
        wrong = httpx.post(target, json=ALERTMANAGER_PAYLOAD, headers={"Authorization": "Bearer not-the-token"})
        prefix = httpx.post(target, json=ALERTMANAGER_PAYLOAD, headers={"Authorization": f"Bearer {TOKEN[:-1]}"})
        basic = httpx.post(target, json=ALERTMANAGER_PAYLOAD, auth=("user", TOKEN))
        grafana = httpx.post(f"{bridge.url}/grafana/phones", json=GRAFANA_PAYLOAD)
        unknown = httpx.post(f"{bridge.url}/alertmanager/nobody", json=ALERTMANAGER_PAYLOAD)
        for refused in (missing, wrong, prefix, basic, grafana, unknown):
            assert refused.status_code == 401, refused.text
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert TOKEN not in refused.text and "phones" not in refused.text  # nor the channels
        assert http_sink.wait(lambda r: True, timeout=1) is None  # nothing went out
        right = httpx.post(target, json=ALERTMANAGER_PAYLOAD, headers={"Authorization": f"Bearer {TOKEN}"})
        assert right.status_code == 202 and right.json() == {"queued": 1}
        assert http_sink.wait(lambda r: r.path == "/phones", timeout=15) is not None
        lower = httpx.post(f"{bridge.url}/grafana/phones", json=GRAFANA_PAYLOAD, headers={"Authorization": f"bearer {TOKEN}"})
        assert lower.status_code == 202  # the scheme is case-insensitive, as in RFC 7235
        assert httpx.get(f"{bridge.url}/metrics").status_code == 200  # scraped without a token
        values = bridge.metrics()
    finally:
        bridge.stop()
    assert value(values, "modelmon_bridge_payloads_total", source="alertmanager", outcome="unauthorized") == 5
    assert value(values, "modelmon_bridge_payloads_total", source="grafana", outcome="unauthorized") == 1
    assert value(values, "modelmon_bridge_payloads_total", source="alertmanager", outcome="accepted") == 1
    log = bridge.log()
    assert TOKEN not in log and "token: bridge.token ($__file{" in log


def test_without_a_token_the_bridge_keeps_to_loopback(tmp_path, http_sink: HttpSink, monkeypatch):
    monkeypatch.delenv("MODELMON_BRIDGE_TOKEN", raising=False)
    (tmp_path / "urls").write_text(f"json://127.0.0.1:{http_sink.port}/phones\n")
    config_file = tmp_path / "modelmon.yaml"
    config_file.write_text(yaml.safe_dump({"channels": [{"name": "phones", "type": "apprise", "urls_file": str(tmp_path / "urls")}]}))
    for host in ("0.0.0.0", "::", "192.0.2.7", "bridge.example.com"):
        refused = cli("notify-bridge", "--config", str(config_file), "--host", host)
        assert refused.exit_code == 2, host
        said = " ".join(refused.stderr.split())
        assert f"refusing to listen on {host} without a token" in said and "bridge.token_file" in said, said
    empty = tmp_path / "empty-token"
    empty.write_text("\n")
    refused = cli("notify-bridge", "--config", str(config_file), "--host", "0.0.0.0", "--token-file", str(empty))
    assert refused.exit_code == 2 and f"--token-file: {empty} is empty" in " ".join(refused.stderr.split())
    refused = cli("notify-bridge", "--config", str(config_file), "--token-file", str(tmp_path / "missing"))
    assert refused.exit_code == 2 and "cannot read secret file" in " ".join(refused.stderr.split())

    # Where the token comes from: --token-file, else bridge.token, else $MODELMON_BRIDGE_TOKEN.
    from modelmon.alerting.bridge import bridge_from_config, is_loopback, resolve_token
    from modelmon.alerting.config import AlertingConfigError, parse_config

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.0.1", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "", "::", "10.0.0.1", "example.com"))
    (tmp_path / "token").write_text(TOKEN)
    settings = parse_config({"bridge": {"token": "$__env{MY_BRIDGE_TOKEN}"}})
    monkeypatch.setenv("MY_BRIDGE_TOKEN", "from-my-variable")
    monkeypatch.setenv("MODELMON_BRIDGE_TOKEN", "from-the-default-variable")
    assert resolve_token(settings, tmp_path / "token") == (TOKEN, f"--token-file {tmp_path / 'token'}")
    assert resolve_token(settings)[0] == "from-my-variable"
    assert resolve_token(parse_config({}))[0] == "from-the-default-variable"
    monkeypatch.setenv("MY_BRIDGE_TOKEN", "")
    with pytest.raises(AlertingConfigError, match=r"bridge.token: \$__env\{MY_BRIDGE_TOKEN\} is empty"):
        resolve_token(settings)
    monkeypatch.delenv("MY_BRIDGE_TOKEN")
    with pytest.raises(AlertingConfigError, match=r"bridge\.token: environment variable MY_BRIDGE_TOKEN is not set"):
        resolve_token(settings)
    bridge, source = bridge_from_config(parse_config({}), {"default": ["json://127.0.0.1:9/"]}, host="0.0.0.0")
    assert source == "$MODELMON_BRIDGE_TOKEN" and "from-the-default" not in repr(bridge)


def test_oversized_bodies_get_413_and_big_groups_one_summary(tmp_path, http_sink: HttpSink):
    (tmp_path / "urls").write_text(f"json://127.0.0.1:{http_sink.port}/phones\n")
    config = {"channels": [{"name": "phones", "type": "apprise", "urls_file": str(tmp_path / "urls")}],
              "bridge": {"max_body_bytes": 4096, "max_alerts": 3}}
    bridge = start_bridge(tmp_path, config)
    try:
        target = f"{bridge.url}/alertmanager/phones"
        big = {**ALERTMANAGER_PAYLOAD, "padding": "x" * 5000}
        declared = httpx.post(target, json=big)
        assert declared.status_code == 413 and "exceeds the limit of 4096" in declared.text

        def chunks():  # no Content-Length: the limit holds as the body streams in
            yield b'{"alerts": ['
            for _ in range(200):  # 6 KB
                yield b'{"labels": {"alertname": "x"}},'
            yield b"{}]}"

        streamed = httpx.post(target, content=chunks())
        assert streamed.status_code == 413 and "exceeds the limit of 4096 bytes" in streamed.text
        assert httpx.post(target, content=b"[" * 3000 + b"]" * 1000).status_code == 400  # nested too deep: no 500

        group = payload(*(alert("ModelmonFeatureDrift", model="shop", feature=f"f{i}") for i in range(8)))
        group["alerts"][7]["status"] = "resolved"
        group["truncatedAlerts"] = 4  # what Alertmanager left out (max_alerts in the export)
        accepted = httpx.post(target, json=group)
        assert accepted.status_code == 202
        message = http_sink.wait(lambda r: r.path == "/phones", timeout=15)
        values = bridge.metrics()
    finally:
        bridge.stop()
    assert message is not None, bridge.log()
    paragraphs = message.json["message"].split("\n\n")
    assert len(paragraphs) == 4 and all(p.startswith("FIRING ModelmonFeatureDrift") for p in paragraphs[:3])
    assert paragraphs[3] == ("... and 9 more alerts not shown (4 firing, 1 resolved): ModelmonFeatureDrift (5); "
                             "models shop (5) (4 left out by the sender)")
    assert message.json["title"] == "[FIRING:7] ModelmonFeatureDrift model shop"
    assert value(values, "modelmon_bridge_payloads_total", source="alertmanager", outcome="too_large") == 2
    assert value(values, "modelmon_bridge_alerts_summarised_total", channel="phones") == 5


def test_message_summarises_alerts_beyond_the_cap():
    many = payload(*(alert("ModelmonHighErrorRatio", model=f"m{i % 7}") for i in range(50)))
    message = format_payload(many, max_alerts=10)
    paragraphs = message.body.split("\n\n")
    assert len(paragraphs) == 11
    assert paragraphs[-1].startswith("... and 40 more alerts not shown (40 firing, 0 resolved): ModelmonHighErrorRatio (40)")
    assert "and 2 more" in paragraphs[-1]  # seven models, five named
    assert format_payload(many).body.count("\n\n") == 49  # no cap: every alert (the demo's sink)

    from modelmon.alerting.bridge import MAX_BODY_CHARS, MAX_TITLE_CHARS, cut

    huge = payload(alert("ModelmonFeatureDrift", model="m" * 1000))
    huge["alerts"][0]["annotations"]["description"] = "x" * 100_000  # one alert, 100 KB of text
    bounded = cut(format_payload(huge, max_alerts=20))
    assert len(bounded.body) == MAX_BODY_CHARS and bounded.body.endswith(f"... (cut at {MAX_BODY_CHARS} characters)")
    assert len(bounded.title) == MAX_TITLE_CHARS
    assert cut(message) is message
