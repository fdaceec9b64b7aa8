"""The message-queue alerts (ModelmonStreamConsumerStalled, ModelmonStreamSpoolGrowing,
ModelmonStreamEventsDropped) pass promtool's own tests: each fires on the input it is for,
with the value its description shows, and stays quiet on healthy inputs."""

from __future__ import annotations

import subprocess

import yaml

from modelmon.alerting import builtins
from modelmon.alerting.config import AlertingConfig
from modelmon.alerting.export import export
from tests.alerting.conftest import require

STREAM_KEYS = ("stream_consumer_stalled", "stream_spool_growing", "stream_events_dropped")


def test_stream_alerts_fire_and_stay_quiet_under_promtool(tmp_path):
    require("promtool")
    config = AlertingConfig.model_validate({"builtins": {key: {"enabled": key in STREAM_KEYS} for key in builtins.NAMES}})
    export(config, tmp_path, alertmanager_files=False)
    rules_dir = tmp_path / "prometheus"
    alerts = yaml.safe_load((rules_dir / "modelmon-alerts.rules.yml").read_text())["groups"][0]["rules"]
    assert sorted(a["alert"] for a in alerts) == sorted(n for k in STREAM_KEYS for n in builtins.NAMES[k])
    checked = subprocess.run(["promtool", "check", "rules", str(rules_dir / "modelmon-alerts.rules.yml")], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = sorted(p.name for p in rules_dir.glob("*.test.yml"))
    tested = subprocess.run(["promtool", "test", "rules", *tests], capture_output=True, text=True, cwd=rules_dir)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    fired: dict[str, list[int]] = {}
    for path in rules_dir.glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test["alert_rule_test"]:
                fired.setdefault(check["alertname"], []).append(len(check["exp_alerts"]))
    for key in STREAM_KEYS:
        for name in builtins.NAMES[key]:
            assert any(n > 0 for n in fired[name]) and any(n == 0 for n in fired[name]), name
