"""modelmon.yaml: validation names the bad key, secrets are references, the example loads."""

from __future__ import annotations

import re

import pytest

from modelmon.alerting import builtins
from modelmon.alerting.config import (
    AlertingConfig,
    AlertingConfigError,
    Builtins,
    SecretRef,
    duration_seconds,
    load_config,
    parse_config,
)
from tests.alerting.conftest import REPO

EXAMPLE = REPO / "examples" / "modelmon.yaml"


def error_of(data) -> str:
    with pytest.raises(AlertingConfigError) as caught:
        parse_config(data)
    return caught.value.message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"channels": [{"name": "s", "type": "slack", "webhook_url": "https://hooks.slack.com/services/T/B/X"}]},
         "channels[0].webhook_url: secrets are never written in modelmon.yaml"),
        ({"smtp": {"smarthost": "mail:25", "from": "a@b.c", "auth_password": "hunter2"}},
         "smtp.auth_password: secrets are never written"),
        ({"channels": [{"name": "x", "type": "teams"}]}, "channels[0]: unknown channel type; use one of apprise, discord"),
        ({"channels": [{"name": "x", "type": "webhook", "url": "http://h", "colour": "red"}]}, "channels[0].colour: unknown key"),
        ({"builtins": {"featuredrift": {}}}, "builtins.featuredrift: unknown key"),
        ({"builtins": {"feature_drift": {"for": "5 min"}}}, "builtins.feature_drift.for: '5 min' is not a duration"),
        ({"builtins": {"error_ratio": {"threshold": 2}}}, "builtins.error_ratio.threshold: Input should be less than or equal to 1"),
        ({"routing": {"default": ["nobody"]}}, "routing.default[0]: unknown channel 'nobody'"),
        ({"routing": {"severity": {"urgent": []}}}, "routing.severity: 'urgent': severities are critical, warning, info"),
        ({"channels": [{"name": "e", "type": "email", "to": ["a@b.c"]}]}, "smtp: required by the email channel channels[0] (e)"),
        ({"rules": [{"name": "X", "metric": "m"}]}, "rules[0]: missing comparator, threshold"),
        ({"rules": [{"name": "X", "expr": "up == 0", "threshold": 1}]}, "rules[0]: give either expr or metric"),
        ({"rules": [{"name": "9lives", "expr": "up == 0"}]}, "rules[0].name: '9lives': alert names are"),
        ({"rules": [{"name": "X", "expr": "up", "labels": {"severity": "page"}}]}, "rules[0].labels: 'severity' is set by modelmon"),
        ({"channels": [{"name": "a", "type": "webhook", "url": "http://h"}, {"name": "a", "type": "webhook", "url": "http://i"}]},
         "channels[1].name: channel 'a' is declared twice"),
        ({"channels": [{"name": "s", "type": "sns", "region": "eu-west-1"}]}, "channels[0]: give exactly one of phone_number"),
        ({"prometheus": {"recording_windows": ["1h30m"]}}, "prometheus.recording_windows: '1h30m': a recording window is one"),
    ],
)
def test_errors_name_the_bad_key(data, expected):
    message = error_of(data)
    assert message.startswith("modelmon.yaml: ")
    assert expected in message, message


def test_secret_references_and_file_spelling(tmp_path, monkeypatch):
    config = parse_config({
        "channels": [
            {"name": "s", "type": "slack", "webhook_url_file": "/run/secrets/slack"},
            {"name": "p", "type": "pagerduty", "routing_key": "$__env{PD_KEY}"},
            {"name": "w", "type": "webhook", "url": "https://plain.example.com/hook"},
        ]
    })
    slack, pager, hook = config.channels
    assert slack.webhook_url == SecretRef(source="file", name="/run/secrets/slack")
    assert pager.routing_key == SecretRef(source="env", name="PD_KEY")
    assert hook.url == "https://plain.example.com/hook"  # a URL without credentials may be plain
    monkeypatch.setenv("PD_KEY", "abc")
    assert pager.routing_key.resolve("channels[1].routing_key") == "abc"
    monkeypatch.delenv("PD_KEY")
    with pytest.raises(AlertingConfigError, match=r"channels\[1\].routing_key: environment variable PD_KEY is not set"):
        pager.routing_key.resolve("channels[1].routing_key")
    (tmp_path / "key").write_text("from-file\n")
    assert SecretRef.parse(f"$__file{{{tmp_path / 'key'}}}").resolve("x") == "from-file"
    with pytest.raises(AlertingConfigError, match="cannot read secret file"):
        SecretRef.parse("$__file{/nonexistent/secret}").resolve("x")
    assert error_of({"channels": [{"name": "s", "type": "slack", "webhook_url": "$__env{A}", "webhook_url_file": "/x"}]}).endswith(
        "give either webhook_url or webhook_url_file, not both"
    )


def test_defaults_enable_every_builtin_rule():
    config = AlertingConfig()
    for key in builtins.NAMES:
        assert getattr(config.builtins, key).enabled, key
    assert set(builtins.NAMES) == {k for k in Builtins.model_fields if k != "override_for"}


def test_the_example_loads_and_uses_every_channel_type():
    config = load_config(EXAMPLE)
    assert {c.type for c in config.channels} == {"email", "slack", "pagerduty", "webhook", "telegram", "discord", "sns", "apprise"}
    assert config.rules[0].name == "ChurnAmountOutOfRange"
    assert config.builtins.training_plateau.channels == ["team-slack"]


def test_load_errors(tmp_path):
    with pytest.raises(AlertingConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("channels: [\n")
    with pytest.raises(AlertingConfigError, match="not valid YAML"):
        load_config(bad)
    bad.write_text("- a list\n")
    with pytest.raises(AlertingConfigError, match="expected a mapping"):
        load_config(bad)
    assert load_config(None) == AlertingConfig()


def test_durations():
    assert duration_seconds("1h30m") == 5400
    assert duration_seconds("1d") == 86400
    assert duration_seconds("250ms") == 0.25


def test_docs_describe_every_key():
    """docs/alerting.md documents every built-in rule key and every channel type."""
    text = (REPO / "docs" / "alerting.md").read_text()
    for key in builtins.NAMES:
        assert f"`{key}`" in text, key
    for kind in ("email", "slack", "webhook", "pagerduty", "telegram", "discord", "sns", "apprise"):
        assert re.search(rf"`{kind}`", text), kind
    runbooks = (REPO / "docs" / "runbooks.md").read_text()
    for names in builtins.NAMES.values():
        for name in names:
            assert f"## {name}\n" in runbooks, name
    assert "## Custom rules\n" in runbooks


def test_every_duration_of_every_builtin_is_checked():
    """A window or lookback that is not a Prometheus duration is refused at load, naming the
    field (it was accepted, and only Prometheus failed on the exported rule)."""
    checked = 0
    for key, field in Builtins.model_fields.items():
        if key == "override_for":
            continue
        for name, sub in field.annotation.model_fields.items():
            if (sub.json_schema_extra or {}).get("format") != "prometheus-duration" and name != "for_":
                continue
            alias = sub.alias or name
            assert error_of({"builtins": {key: {alias: "soon"}}}).endswith(
                f"builtins.{key}.{alias}: 'soon' is not a duration; write it as Prometheus does, e.g. 30s, 5m, 1h or 1d"), (key, alias)
            checked += 1
    # Every rule's `for`, and the rules' 23 windows and lookbacks (22 were accepted unchecked before).
    assert checked >= len(builtins.NAMES) + 23
