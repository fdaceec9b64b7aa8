"""The Alertmanager configuration (0.25 and later) compiled from ``modelmon.yaml``.

Routes: an alert goes to the channels of its model (``continue: true``, in addition to the
rest), then to the channels of its rule when the rule names any, else to those of its
severity, else to ``routing.default``. A route has one receiver, so each distinct set of
channels becomes one receiver holding all their integrations (named ``a+b``).

Secrets: where Alertmanager 0.25 reads a secret from a file (``smtp_auth_password_file``,
Slack ``api_url_file``, PagerDuty ``routing_key_file``, a webhook's bearer
``credentials_file``, also used for notify-bridge's token on ``apprise`` channels), a
``$__file{...}`` reference is written as that file's path and the secret never enters the
generated file. The other secrets (``$__env{...}`` references, and
the fields 0.25 cannot read from a file: Telegram's bot token, Discord's webhook URL, SNS
keys, a secret webhook URL) are substituted at export: the file is then written readable
by its owner only, and the export says which secrets it holds.

Each channel class of ``config.py`` writes its own receiver entry
(``alertmanager_integration``); this module routes, groups channels into receivers and
writes the global settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelmon.alerting import config as cfg
from modelmon.alerting.builtins import FLEET_LABELS, MODEL_DOWN, SERVING_SYMPTOMS, WATCHDOG
from modelmon.alerting.model import AlertRule
from modelmon.alerting.templates import TEMPLATES

CONFIG_FILE = "alertmanager.yml"
TEMPLATE_FILE = "modelmon.tmpl"
NULL_RECEIVER = "modelmon-none"


def receiver_name(channels: list[str]) -> str:
    return "+".join(channels) if channels else NULL_RECEIVER


def _global(config: cfg.AlertingConfig, secrets: cfg.Secrets) -> dict[str, Any]:
    out: dict[str, Any] = {"resolve_timeout": config.routing.resolve_timeout}
    smtp = config.smtp
    if smtp is not None:
        out |= {"smtp_smarthost": smtp.smarthost, "smtp_from": smtp.sender, "smtp_require_tls": smtp.require_tls}
        if smtp.hello:
            out["smtp_hello"] = smtp.hello
        if smtp.auth_username:
            out["smtp_auth_username"] = smtp.auth_username
        if smtp.auth_password is not None:
            if smtp.auth_password.source == "file":
                out["smtp_auth_password_file"] = smtp.auth_password.name
                _check_verbatim(smtp.auth_password.name, "smtp.auth_password", secrets)
            else:
                out["smtp_auth_password"] = secrets.value(smtp.auth_password, "smtp.auth_password")
    return out


def _check_verbatim(path: str, where: str, secrets: cfg.Secrets) -> None:
    """Alertmanager 0.25 reads smtp_auth_password_file as it is, trailing newline included
    (the other *_file secrets are trimmed): warn when the file ends in whitespace."""
    try:
        content = Path(path).read_bytes()
    except OSError:
        return  # the file may live only where Alertmanager runs
    if content != content.rstrip():
        secrets.notes.append(
            f"{where}: {path} ends with a newline or spaces, which Alertmanager 0.25 sends as part of the "
            f"password; rewrite it without (printf '%s' \"$PASSWORD\" > {path})"
        )


def _matcher(label: str, value: str, op: str = "=") -> str:
    return f'{label}{op}"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def alertmanager_config(config: cfg.AlertingConfig, rules: list[AlertRule]) -> tuple[dict[str, Any], cfg.Secrets]:
    """The configuration as a dict, and the secrets it had to substitute."""
    secrets = cfg.Secrets()
    routing = config.routing
    channel_sets: list[list[str]] = [routing.default]
    # The always-firing Watchdog goes to its dead man's switch, or nowhere: never to people.
    routes: list[dict[str, Any]] = [{"receiver": receiver_name(routing.watchdog), "matchers": [_matcher("alertname", WATCHDOG)]}]
    channel_sets.append(routing.watchdog)
    for model, channels in routing.models.items():
        if channels:
            routes.append({"receiver": receiver_name(channels), "matchers": [_matcher("model", model)], "continue": True})
            channel_sets.append(channels)
    for rule in rules:
        if rule.channels:
            routes.append({"receiver": receiver_name(rule.channels), "matchers": [_matcher("alertname", rule.name)]})
            channel_sets.append(rule.channels)
    for severity in cfg.SEVERITIES:
        severity_channels = routing.severity.get(severity)
        if severity_channels is not None:
            routes.append({"receiver": receiver_name(severity_channels), "matchers": [_matcher("severity", severity)]})
            channel_sets.append(severity_channels)

    # Each channel writes its own entry (config.py); a receiver holds those of its channels.
    integrations = {
        channel.name: channel.alertmanager_integration(f"channels[{index}]", config.bridge, secrets)
        for index, channel in enumerate(config.channels)
    }
    receivers: dict[str, dict[str, Any]] = {}
    for channels in channel_sets:
        name = receiver_name(channels)
        if name in receivers:
            continue
        receiver: dict[str, Any] = {"name": name}
        for channel_name in channels:
            kind, entry = integrations[channel_name]
            receiver.setdefault(kind, []).append(entry)
        receivers[name] = receiver

    content: dict[str, Any] = {
        "global": _global(config, secrets),
        "templates": [TEMPLATE_FILE],
        "route": {
            "receiver": receiver_name(routing.default),
            "group_by": list(routing.group_by),
            "group_wait": routing.group_wait,
            "group_interval": routing.group_interval,
            "repeat_interval": routing.repeat_interval,
            "routes": routes,
        },
        "inhibit_rules": [
            {
                # While every replica of a model version is down, that version's serving
                # alerts are symptoms of it. Keyed by the version and its deployment: one
                # crashed replica, or version 1 down during a rollout, hides nothing of
                # version 2; drift, quality and label alerts are never held back.
                "source_matchers": [_matcher("alertname", MODEL_DOWN)],
                "target_matchers": [_matcher("alertname", "|".join(SERVING_SYMPTOMS), "=~")],
                "equal": list(FLEET_LABELS),
            },
        ],
        "receivers": list(receivers.values()),
    }
    return content, secrets


def template_text() -> str:
    """The notification templates (``modelmon.title``, ``modelmon.text``...)."""
    return TEMPLATES
