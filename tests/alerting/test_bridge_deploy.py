"""deploy/: the compose file wires notify-bridge's token (a volume only the services that use
it mount), and what its setup service writes makes Alertmanager and Grafana send the token
the bridge requires. (Docker does not run here: what the containers run is run directly.)"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import httpx
import pytest
import yaml

from tests.alerting.bridge_helpers import start_bridge
from tests.alerting.conftest import REPO, HttpSink, require

DEPLOY = REPO / "deploy"
SECRET_VOLUME = "notify-bridge-secret"
TOKEN_PATH = "/run/modelmon-secrets/notify-bridge-token"


def load_stack():
    spec = importlib.util.spec_from_file_location("deploy_stack", DEPLOY / "modelmon" / "stack.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compose_wires_the_bridge_token_to_the_services_that_use_it():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert SECRET_VOLUME in compose["volumes"]
    mounts = {name: [v for v in service.get("volumes", []) if v.startswith(f"{SECRET_VOLUME}:")]
              for name, service in services.items()}
    assert mounts["setup"] == [f"{SECRET_VOLUME}:/run/modelmon-secrets"]  # writes the token
    for name in ("notify-bridge", "alertmanager", "grafana"):
        assert mounts[name] == [f"{SECRET_VOLUME}:/run/modelmon-secrets:ro"], name
    assert not any(mounts[name] for name in ("modelmon", "traffic", "prometheus", "postgres"))

    setup = services["setup"]["command"]
    assert setup[setup.index("--bridge-token-file") + 1] == TOKEN_PATH
    assert setup[setup.index("--bridge-url") + 1] == "http://notify-bridge:9096"
    assert services["setup"]["environment"]["MODELMON_BRIDGE_TOKEN"] == "${MODELMON_BRIDGE_TOKEN:-}"

    bridge = services["notify-bridge"]
    assert bridge["profiles"] == ["notify-bridge"] and "ports" not in bridge  # the compose network only
    command = bridge["command"]
    assert command[:2] == ["modelmon", "notify-bridge"]
    assert command[command.index("--config") + 1] == "/etc/modelmon/alerting/modelmon.yaml"
    assert command[command.index("--host") + 1] == "0.0.0.0" and command[command.index("--port") + 1] == "9096"
    assert "modelmon-config:/etc/modelmon:ro" in bridge["volumes"]
    assert bridge["depends_on"]["setup"]["condition"] == "service_completed_successfully"

    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["notify-bridge"]["static_configs"][0]["targets"] == ["notify-bridge:9096"]


def test_the_token_is_generated_once_and_kept_or_taken_from_the_environment(tmp_path, monkeypatch):
    stack = load_stack()
    path = tmp_path / "secrets" / "token"
    monkeypatch.delenv("MODELMON_BRIDGE_TOKEN", raising=False)
    stack.write_bridge_token(path)
    first = path.read_text()
    assert len(first) >= 40 and path.stat().st_mode & 0o777 == 0o644
    stack.write_bridge_token(path)
    assert path.read_text() == first  # kept across runs of setup
    monkeypatch.setenv("MODELMON_BRIDGE_TOKEN", "mine-from-the-environment")
    stack.write_bridge_token(path)
    assert path.read_text() == "mine-from-the-environment"
    assert stack.with_bridge({"bridge": {"url": "http://elsewhere:1", "token": "$__env{T}"}}, "http://notify-bridge:9096",
                             path) == {"bridge": {"url": "http://elsewhere:1", "token": "$__env{T}"}}  # theirs wins
    assert stack.with_bridge({}, "http://notify-bridge:9096", path) == {
        "bridge": {"url": "http://notify-bridge:9096", "token_file": str(path)}}


@pytest.mark.slow
def test_setup_writes_what_makes_alertmanager_and_grafana_send_the_token(tmp_path, http_sink: HttpSink, monkeypatch):
    """The setup service's export, then the bridge as the compose runs it, on loopback here."""
    require("amtool")
    user_config = tmp_path / "modelmon.yaml"
    user_config.write_text(yaml.safe_dump({
        "channels": [{"name": "phones", "type": "apprise", "urls": "$__env{APPRISE_URLS}"}],
        "routing": {"default": ["phones"]},
    }))
    config, token_file = tmp_path / "config", tmp_path / "secrets" / "notify-bridge-token"
    env = {"MODELMON_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, str(DEPLOY / "modelmon" / "stack.py"), "setup", "--config", str(config), "--skip-model",
         "--alerting-config", str(user_config), "--bridge-token-file", str(token_file)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    token = token_file.read_text()
    assert token not in result.stdout + result.stderr
    am_file = config / "alerting" / "alertmanager" / "alertmanager.yml"
    checked = subprocess.run(["amtool", "check-config", str(am_file)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    hook = yaml.safe_load(am_file.read_text())["receivers"][0]["webhook_configs"][0]
    assert hook["url"] == "http://notify-bridge:9096/alertmanager/phones"
    assert hook["http_config"]["authorization"] == {"type": "Bearer", "credentials_file": str(token_file)}
    points = yaml.safe_load((config / "alerting" / "grafana" / "provisioning" / "alerting" / "contact-points.yaml").read_text())
    settings = points["contactPoints"][0]["receivers"][0]["settings"]
    assert settings["authorization_credentials"] == f"$__file{{{token_file}}}"

    # The bridge with the config setup wrote (the compose's --config), reading the same file.
    merged = yaml.safe_load((config / "alerting" / "modelmon.yaml").read_text())
    merged["bridge"]["url"] = "http://127.0.0.1:0"  # here the port is the test's
    bridge = start_bridge(tmp_path, merged, env={"APPRISE_URLS": f"json://127.0.0.1:{http_sink.port}/phones"})
    try:
        body = {"status": "firing", "alerts": [{"status": "firing", "labels": {"alertname": "ModelmonTargetDown"}}]}
        assert httpx.post(f"{bridge.url}/alertmanager/phones", json=body).status_code == 401
        sent = httpx.post(f"{bridge.url}/alertmanager/phones", json=body, headers={"Authorization": f"Bearer {token}"})
        assert sent.status_code == 202
        assert http_sink.wait(lambda r: r.path == "/phones", timeout=15) is not None
    finally:
        bridge.stop()
    assert token not in bridge.log()
