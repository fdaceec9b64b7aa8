"""The exported Alertmanager configuration: amtool accepts it, routes as documented, keeps
secrets out, and a real Alertmanager delivers readable messages on every HTTP channel."""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
import subprocess
import time

import pytest
import yaml

from modelmon.alerting.config import load_config, parse_config
from modelmon.alerting.export import export
from modelmon.alerting.stack import Alertmanager
from tests.alerting.conftest import REPO, HttpSink, cli, modelmon, require

EXAMPLE_ENV = {
    "PAGERDUTY_ROUTING_KEY": "pd-key-from-env",
    "TELEGRAM_BOT_TOKEN": "123:telegram-token-from-env",
    "DISCORD_WEBHOOK_URL": "https://discord.com/api/webhooks/1/discord-from-env",
    "APPRISE_URLS": "json://127.0.0.1:9/",
}


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["amtool", *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def example_export(tmp_path, monkeypatch):
    for key, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(key, value)
    return export(load_config(REPO / "examples" / "modelmon.yaml"), tmp_path / "out")


def test_example_passes_amtool_and_keeps_file_secrets_out(example_export):
    require("amtool")
    config_file = example_export.alertmanager_config
    checked = amtool("check-config", str(config_file))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    content = yaml.safe_load(config_file.read_text())
    text = config_file.read_text()
    assert content["global"]["smtp_auth_password_file"] == "/run/secrets/smtp_password"
    receivers = {r["name"]: r for r in content["receivers"]}
    assert receivers["team-slack"]["slack_configs"][0]["api_url_file"] == "/run/secrets/slack_webhook_url"
    hook = receivers["incident-hook"]["webhook_configs"][0]
    assert hook["http_config"]["authorization"]["credentials_file"] == "/run/secrets/hook_token"
    # Secrets from the environment are substituted (0.25 has no env expansion), and said so.
    assert sorted(example_export.substituted_secrets) == [
        "channels[2].routing_key", "channels[4].bot_token", "channels[5].webhook_url"]
    assert stat.S_IMODE(os.stat(config_file).st_mode) == 0o600
    assert EXAMPLE_ENV["APPRISE_URLS"] not in text  # Apprise URLs stay with the bridge
    bridge = receivers["churn-telegram+everything-else"]["webhook_configs"][0]
    assert bridge["url"] == "http://127.0.0.1:9096/alertmanager/everything-else"
    assert "msteams_configs" not in text  # not in Alertmanager 0.25
    assert content["inhibit_rules"] == [{
        "source_matchers": ['alertname="ModelmonModelDown"'],
        "target_matchers": ['alertname=~"ModelmonHighErrorRatio|ModelmonHighClientErrorRatio|ModelmonHighLatencyP99|'
                            'ModelmonPredictionsStopped"'],
        "equal": ["cluster", "namespace", "job", "model", "version"],
    }]


def test_a_config_with_only_file_secrets_is_world_readable_and_secret_free(tmp_path):
    (tmp_path / "slack").write_text("https://hooks.slack.com/services/T0/B0/secret-path\n")
    (tmp_path / "pd").write_text("pd-secret\n")
    config = parse_config({
        "channels": [
            {"name": "s", "type": "slack", "webhook_url_file": str(tmp_path / "slack")},
            {"name": "p", "type": "pagerduty", "routing_key_file": str(tmp_path / "pd")},
        ],
        "routing": {"default": ["s", "p"]},
    })
    result = export(config, tmp_path / "out")
    text = result.alertmanager_config.read_text()
    assert result.substituted_secrets == []
    assert "secret-path" not in text and "pd-secret" not in text
    assert stat.S_IMODE(os.stat(result.alertmanager_config).st_mode) & 0o044  # nothing to hide


def test_smtp_password_file_with_a_trailing_newline_is_flagged(tmp_path):
    (tmp_path / "pw").write_text("hunter2\n")
    config = parse_config({"smtp": {"smarthost": "mail:25", "from": "a@b.c", "auth_username": "u",
                                    "auth_password_file": str(tmp_path / "pw")}})
    notes = export(config, tmp_path / "out").notes
    assert any("smtp.auth_password" in n and "newline" in n for n in notes)
    (tmp_path / "pw").write_text("hunter2")
    assert not any("newline" in n for n in export(config, tmp_path / "out2").notes)


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        (["severity=critical", "model=shop", "alertname=ModelmonHighErrorRatio"], "pager+oncall-email+oncall-sms"),
        (["severity=warning", "model=shop", "alertname=ModelmonFeatureDrift"], "team-slack+oncall-email"),
        (["severity=info", "model=shop", "alertname=ModelmonLowLabelCoverage"], "incident-hook"),
        # A model's own channels come in addition to the severity route.
        (["severity=critical", "model=churn", "alertname=ModelmonHighErrorRatio"],
         "churn-telegram+churn-discord,pager+oncall-email+oncall-sms"),
        # A rule that names channels goes to them instead of its severity's.
        (["severity=warning", "model=shop", "alertname=ChurnAmountOutOfRange"], "churn-telegram+everything-else"),
        (["severity=info", "alertname=ModelmonTrainingValidationLossPlateau"], "team-slack"),
        (["alertname=SomethingElse"], "team-slack"),  # routing.default
    ],
)
def test_routes_as_documented(example_export, labels, receivers):
    require("amtool")
    tested = amtool("config", "routes", "test", f"--config.file={example_export.alertmanager_config}",
                    f"--verify.receivers={receivers}", *labels)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_export_command_checks_with_promtool_and_amtool(tmp_path):
    require("amtool", "promtool")
    env = {**EXAMPLE_ENV}
    result = modelmon("alerts", "export", str(tmp_path / "out"), "--config", str(REPO / "examples" / "modelmon.yaml"),
                      "--check", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "passed: check rules" in result.stderr and "passed: test rules" in result.stderr
    assert "passed: amtool check-config" in result.stderr
    assert "holds secrets (mode 0600): channels[2].routing_key" in " ".join(result.stderr.split())
    unset = cli("alerts", "export", str(tmp_path / "out2"), "--config", str(REPO / "examples" / "modelmon.yaml"),
                env={**env, "TELEGRAM_BOT_TOKEN": None})
    assert unset.exit_code == 2
    assert "channels[4].bot_token: environment variable TELEGRAM_BOT_TOKEN is not set" in " ".join(unset.stderr.split())


def alert(name: str, severity: str, start: dt.datetime, method: str = "", **labels: str) -> dict:
    """``method``: an annotation, as ModelmonFeatureDrift reports it (not a label)."""
    return {
        "labels": {"alertname": name, "severity": severity, **labels},
        "annotations": {"summary": f"{name} summary", "description": f"{name} description",
                        "value": "0.001", "threshold": "0.01", "runbook_url": f"https://runbooks.example/#{name.lower()}"}
        | ({"method": method} if method else {}),
        "startsAt": start.isoformat(),
    }


def test_real_alertmanager_delivers_readable_messages_and_inhibits_symptoms(tmp_path, http_sink: HttpSink):
    """Webhook, Slack, Discord, PagerDuty and Telegram, each pointed at the local receiver,
    get the alert in readable form. Inhibition (issue 23, item 1): ModelmonModelDown of
    shop version 1 holds back that version's serving alerts only; one replica down
    (ModelmonTargetDown) holds back nothing; version 2, another namespace, drift and
    quality alerts always arrive; the Watchdog reaches no one."""
    require("prometheus-alertmanager")
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "slack").write_text(f"{http_sink.url}/slack\n")
    (secrets / "pd").write_text("pd-routing-key\n")
    (secrets / "token").write_text("bearer-from-file\n")
    os.environ["MODELMON_TEST_TELEGRAM_TOKEN"] = "42:tg-token"
    http_sink.responses["/telegram"] = json.dumps(
        {"ok": True, "result": {"message_id": 1, "date": 0, "chat": {"id": -100, "type": "group"}, "text": "x"}}).encode()
    config = parse_config({
        "channels": [
            {"name": "hook", "type": "webhook", "url": f"{http_sink.url}/webhook", "bearer_token_file": str(secrets / "token")},
            {"name": "slack", "type": "slack", "channel": "#ml", "webhook_url_file": str(secrets / "slack")},
            {"name": "discord", "type": "discord", "webhook_url": f"$__file{{{secrets / 'slack'}}}"},
            {"name": "pager", "type": "pagerduty", "routing_key_file": str(secrets / "pd"), "url": f"{http_sink.url}/pagerduty"},
            {"name": "tg", "type": "telegram", "bot_token": "$__env{MODELMON_TEST_TELEGRAM_TOKEN}", "chat_id": -100,
             "api_url": f"{http_sink.url}/telegram"},
        ],
        "routing": {"default": ["hook", "slack", "discord", "pager", "tg"], "group_wait": "1s", "group_interval": "1s"},
    })
    try:
        result = export(config, tmp_path / "out")
    finally:
        del os.environ["MODELMON_TEST_TELEGRAM_TOKEN"]
    alertmanager = Alertmanager.start(result.alertmanager_config, tmp_path / "am")
    try:
        now = dt.datetime.now(dt.UTC)
        job = {"job": "modelmon"}
        alertmanager.post_alerts([
            # One crashed replica of version 1: a warning that holds nothing back.
            alert("ModelmonTargetDown", "warning", now, **job),
            # Every replica of version 1 down (a rollout's old version): its serving alerts
            # are held back, version 2's are not, nor drift and quality of either.
            alert("ModelmonModelDown", "critical", now, model="shop", version="1", **job),
            alert("ModelmonHighErrorRatio", "critical", now, model="shop", version="1", **job),
            alert("ModelmonHighLatencyP99", "warning", now, model="shop", version="1", **job),
            alert("ModelmonHighErrorRatio", "critical", now, model="shop", version="2", **job),
            alert("ModelmonAccuracyBelowBaseline", "warning", now, model="shop", version="1", **job),
            alert("ModelmonFeatureDrift", "warning", now, model="shop", version="1", feature="amount", method="psi", **job),
            alert("ModelmonFeatureDrift", "warning", now, model="churn", version="3", feature="tenure", method="psi", **job),
            # The same model name in another namespace: its own alert, not inhibited.
            alert("ModelmonHighLatencyP99", "warning", now, model="shop", version="1", namespace="staging", **job),
            alert("ModelmonWatchdog", "none", now),  # routed to no receiver
        ])

        def delivered() -> set[tuple[str, str, str, str]]:
            return {(a["labels"]["alertname"], a["labels"].get("model", ""), a["labels"].get("version", ""),
                     a["labels"].get("namespace", ""))
                    for r in http_sink.on("/webhook") for a in r.json["alerts"]}

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(delivered()) < 7:
            time.sleep(0.1)
        time.sleep(2)  # let a wrongly uninhibited notification arrive, if any
    finally:
        alertmanager.stop()

    assert delivered() == {
        ("ModelmonTargetDown", "", "", ""), ("ModelmonModelDown", "shop", "1", ""),
        ("ModelmonHighErrorRatio", "shop", "2", ""), ("ModelmonAccuracyBelowBaseline", "shop", "1", ""),
        ("ModelmonFeatureDrift", "shop", "1", ""), ("ModelmonFeatureDrift", "churn", "3", ""),
        ("ModelmonHighLatencyP99", "shop", "1", "staging"),
    }
    assert all(r.headers["Authorization"] == "Bearer bearer-from-file" for r in http_sink.on("/webhook"))

    def one(prefix: str, *needles: str) -> str:
        bodies = [r.body.decode() for r in http_sink.requests if r.path.startswith(prefix)]
        matching = [b for b in bodies if all(n in b for n in needles)]
        assert matching, f"{prefix}: nothing with {needles!r} in {bodies}"
        return matching[0]

    slack = json.loads(one("/slack", "attachments", "churn"))
    assert slack["channel"] == "#ml"
    text = slack["attachments"][0]["text"]
    assert slack["attachments"][0]["title"] == "[FIRING:1] ModelmonFeatureDrift model churn version 3"
    assert "model: churn  version: 3  feature: tenure  method: psi" in text
    assert "value: 0.001  threshold: 0.01" in text and "runbook: https://runbooks.example/#modelmonfeaturedrift" in text
    discord = json.loads(one("/slack", "embeds", "churn"))["embeds"][0]
    assert discord["title"] == "[FIRING:1] ModelmonFeatureDrift model churn version 3"
    assert "model: churn  version: 3  feature: tenure" in discord["description"]
    pager = json.loads(one("/pagerduty", "churn"))
    assert pager["routing_key"] == "pd-routing-key" and pager["payload"]["severity"] == "warning"
    assert pager["links"][0]["href"] == "https://runbooks.example/#modelmonfeaturedrift"
    telegram = [r for r in http_sink.requests if r.path == "/telegram/bot42:tg-token/sendMessage"]
    assert telegram, [r.path for r in http_sink.requests]
    assert any("feature: tenure" in r.json["text"] and r.json["parse_mode"] == "HTML" for r in telegram)
