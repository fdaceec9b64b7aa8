"""``modelmon stack up`` and ``LocalAlerting`` (what the demo uses) with the real binaries."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from modelmon.alerting.local import LocalAlerting
from modelmon.stack.processes import free_port, stop_process, wait_for_http
from tests.alerting.conftest import cli, require
from tests.alerting.test_end_to_end import drifted, send
from tests.conftest import start_server

pytestmark = pytest.mark.slow


def test_stack_up_without_the_binaries_says_how_to_get_them(tmp_path):
    result = cli("stack", "up", "--dir", str(tmp_path), env={"PATH": str(tmp_path)})
    assert result.exit_code == 1
    said = " ".join(result.stderr.split())
    assert "sudo apt-get install --no-install-recommends prometheus" in said
    assert "sudo apt-get install --no-install-recommends prometheus-alertmanager" in said


def test_stack_up_runs_prometheus_and_alertmanager_for_the_server(server, tmp_path):
    require("prometheus", "prometheus-alertmanager")
    prometheus_port, alertmanager_port = free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", "stack", "up", "--target", f"127.0.0.1:{server.port}",
         "--dir", str(tmp_path), "--prometheus-port", str(prometheus_port),
         "--alertmanager-port", str(alertmanager_port), "--scrape-interval", "1s"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
    )
    prometheus, alertmanager = f"http://127.0.0.1:{prometheus_port}", f"http://127.0.0.1:{alertmanager_port}"
    try:
        wait_for_http(f"{prometheus}/-/ready", timeout=60, process=process)
        wait_for_http(f"{alertmanager}/-/ready", timeout=10, process=process)
        groups = httpx.get(f"{prometheus}/api/v1/rules").json()["data"]["groups"]
        rules = {r["name"] for g in groups for r in g["rules"]}
        assert {"ModelmonTargetDown", "ModelmonFeatureDrift", "model_version_feature:modelmon_feature_bin:psi1h", "modelmon:feature_drift_psi:1h"} <= rules
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            active = httpx.get(f"{prometheus}/api/v1/alertmanagers").json()["data"]["activeAlertmanagers"]
            up = httpx.get(f"{prometheus}/api/v1/query", params={"query": 'up{job="modelmon"}'}).json()["data"]["result"]
            if active and up:
                break
            time.sleep(0.3)
        assert [a["url"] for a in active] == [f"{alertmanager}/api/v2/alerts"]
        assert up and up[0]["value"][1] == "1" and up[0]["metric"]["instance"] == f"127.0.0.1:{server.port}"
        status = httpx.get(f"{alertmanager}/api/v2/status").json()
        assert status["cluster"]["status"] == "disabled"  # --cluster.listen-address= (empty)
        assert "ModelmonModelDown" in status["config"]["original"]  # the inhibition rule is loaded
    finally:
        process.send_signal(signal.SIGINT)
        try:
            output, _ = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            stop_process(process)
            raise
    assert process.returncode == 0, output
    assert "stopped" in output
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{prometheus}/-/ready", timeout=1)


def test_local_alerting_shows_a_drift_alert_arriving(registry_dir, shop_frame, tmp_path):
    """What the demo does: LocalAlerting's Prometheus and Alertmanager see drifted traffic
    and the alert reaches the local sink, readable."""
    require("prometheus", "prometheus-alertmanager")
    assert LocalAlerting.available()
    server = start_server(registry_dir, tmp_path, "--model", "shop", "--drain-seconds", "0", "--drift-score-seconds", "0.5")
    try:
        with LocalAlerting(tmp_path / "alerting", for_="2s", recording_windows=["10m"]) as alerting:
            prometheus = alerting.start_prometheus([f"127.0.0.1:{server.port}"])
            assert prometheus.wait_for('up{job="modelmon"}', 1, timeout=20) == 1
            for seed in range(4):
                send(server.url, drifted(shop_frame, 50, seed))
            note = alerting.wait_for("ModelmonFeatureDrift", timeout=40)
            assert note is not None, [n.title for n in alerting.notifications]
            assert note.status == "firing"
            assert "feature: amount" in note.text and "runbook: https://" in note.text
            groups = httpx.get(f"{prometheus.url}/api/v1/rules").json()["data"]["groups"]
            assert {"modelmon-drift-10m", "modelmon-quality-10m", "modelmon-alerts"} <= {g["name"] for g in groups}
    finally:
        stop_process(server.process)
    assert alerting.alertmanager is None and alerting.sink is None  # everything stopped


def test_prometheus_loads_rule_files_given_by_relative_paths(tmp_path, monkeypatch):
    """The demo passes paths under `.modelmon/` relative to the working directory, while
    Prometheus reads relative paths from its config file's directory: the rules must load."""
    require("prometheus")
    from modelmon.stack.prometheus import Prometheus

    monkeypatch.chdir(tmp_path)
    rules = tmp_path / "config" / "check.rules.yml"
    rules.parent.mkdir()
    rules.write_text("groups:\n- name: check\n  rules:\n  - record: check:one\n    expr: vector(1)\n")
    prometheus = Prometheus.start(tmp_path / "prometheus", targets=["127.0.0.1:9"], rule_files=[rules.relative_to(tmp_path)])
    try:
        groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
        assert [g["name"] for g in groups] == ["check"]
        assert prometheus.wait_for("check:one", 1.0, timeout=20) == 1.0
    finally:
        prometheus.stop()
