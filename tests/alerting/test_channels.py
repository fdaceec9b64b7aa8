"""Each channel class renders its own Alertmanager entry and Grafana integration
(config.py); alertmanager.py and grafana.py only route and group them."""

from __future__ import annotations

import inspect
from typing import Any, Literal

import pytest

from modelmon.alerting import config as cfg
from modelmon.alerting.alertmanager import alertmanager_config
from modelmon.alerting.grafana import provisioning


def test_every_channel_type_renders_both_forms():
    for channel_type in cfg._CHANNEL_TYPES:
        assert not inspect.isabstract(channel_type), channel_type.__name__


def test_a_channel_class_without_its_forms_cannot_be_made():
    class Incomplete(cfg._Channel):
        type: Literal["incomplete"]

    with pytest.raises(TypeError, match="abstract"):
        Incomplete(name="x", type="incomplete")


def test_exports_use_the_channels_own_forms(monkeypatch):
    monkeypatch.setenv("SLACK_URL", "https://slack.example.com/hook")
    config = cfg.parse_config({
        "channels": [{"name": "s", "type": "slack", "webhook_url": "$__env{SLACK_URL}", "channel": "#ml"}],
        "routing": {"default": ["s"]},
    })
    content, secrets = alertmanager_config(config, [])
    receiver: dict[str, Any] = next(r for r in content["receivers"] if r["name"] == "s")
    slack = receiver["slack_configs"][0]
    assert slack["api_url"] == "https://slack.example.com/hook" and secrets.substituted == ["channels[0].webhook_url"]
    kind, entry = config.channels[0].alertmanager_integration("channels[0]", config.bridge, cfg.Secrets())
    assert (kind, entry) == ("slack_configs", slack)
    files, _ = provisioning(config, [])
    point = files["contact-points.yaml"]["contactPoints"][0]["receivers"][0]
    assert (point["type"], point["settings"]) == config.channels[0].grafana_integration(config.bridge)
    assert point["settings"] == {"url": "${SLACK_URL}", "recipient": "#ml"}
