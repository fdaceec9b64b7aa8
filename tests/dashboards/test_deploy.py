"""deploy/: the compose file's services, and the configuration its setup service writes,
checked with promtool and amtool; its traffic client against a real server. (Docker itself
does not run here: what the containers run is run directly.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from modelmon.stack.processes import stop_process
from tests.conftest import start_server

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
STACK = DEPLOY / "modelmon" / "stack.py"


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def test_compose_runs_grafana_prometheus_alertmanager_and_modelmon_with_provisioning_mounted():
    services = _compose()["services"]
    assert {"grafana", "prometheus", "alertmanager", "modelmon", "setup", "traffic", "postgres"} <= set(services)
    for name, service in services.items():
        image = service.get("image", "")
        assert image and not image.endswith(":latest") and ":" in image, f"{name}: pin the image ({image!r})"
    grafana = services["grafana"]
    assert grafana["environment"]["GF_PATHS_PROVISIONING"] == "/etc/modelmon/grafana"
    assert "modelmon-config:/etc/modelmon:ro" in grafana["volumes"]
    assert grafana["ports"] == ["3000:3000"]
    # The password reaches Grafana as an environment variable, never through a file.
    assert "MODELMON_GRAFANA_POSTGRES_PASSWORD" in grafana["environment"]
    assert services["prometheus"]["command"][0] == "--config.file=/etc/modelmon/prometheus/prometheus.yml"
    assert services["alertmanager"]["command"][0] == "--config.file=/etc/modelmon/alerting/alertmanager/alertmanager.yml"
    setup = services["setup"]["command"]
    assert setup[:3] == ["python", "/deploy/modelmon/stack.py", "setup"] and "/etc/modelmon/grafana" in setup
    for name in ("modelmon", "prometheus", "alertmanager", "grafana"):
        assert services[name]["depends_on"]["setup"]["condition"] == "service_completed_successfully"


@pytest.mark.slow
def test_setup_writes_configs_that_promtool_and_amtool_accept_and_the_demo_serves(tmp_path):
    """The setup service's job, on this machine: configs for every service (checked by
    promtool and amtool), the demo model trained in a tracked run and registered; then the
    traffic client against a real server on that registry."""
    config, home = tmp_path / "config", tmp_path / "home"
    store = str(home / "modelmon.db")
    env = {"MODELMON_HOME": str(home), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(STACK), "setup", "--config", str(config), "--store", store,
         "--grafana-config", "/etc/modelmon/grafana", "--sqlite-path", "/var/lib/modelmon/modelmon.db"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "registered churn version 1" in result.stdout

    checked = subprocess.run(["promtool", "check", "config", str(config / "prometheus" / "prometheus.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rule files found" in checked.stdout  # drift, quality, regression and alert rules
    checked = subprocess.run(["amtool", "check-config", str(config / "alerting" / "alertmanager" / "alertmanager.yml")],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    grafana = config / "grafana"
    provider = yaml.safe_load((grafana / "dashboards" / "modelmon.yaml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/etc/modelmon/grafana/dashboards/modelmon"
    assert len(list((grafana / "dashboards" / "modelmon").glob("*.json"))) == 5
    training = json.loads((grafana / "dashboards" / "modelmon" / "modelmon-training.json").read_text())
    assert any("queryText" in t for p in training["panels"] for t in p.get("targets", []))

    server = start_server(home / "registry", tmp_path, "--store", store, "--drain-seconds", "0", home=home)
    try:
        result = subprocess.run(
            [sys.executable, str(STACK), "traffic", "--url", server.url, "--requests", "60", "--rate", "0",
             "--phase-requests", "30", "--seed", "3"],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        counts = dict(item.split("=") for item in result.stdout.split())
        assert int(counts["requests"]) == 60 and int(counts["ok"]) >= 50 and int(counts["labels"]) > 0
    finally:
        stop_process(server.process)
    from sqlalchemy import text

    from modelmon.store import close_store, open_store

    with open_store(store).read() as connection:
        runs = connection.execute(text("SELECT experiment, status, last_step FROM training_runs")).all()
        labelled = connection.execute(text("SELECT count(*) FROM labelled_predictions WHERE model = 'churn'")).scalar()
    close_store(store)
    assert [tuple(r) for r in runs] == [("churn-demo", "finished", 8)]
    assert labelled == int(counts["labels"])
