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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelmon.alerting import config as cfg
from modelmon.alerting.builtins import SYMPTOMS
from modelmon.alerting.model import AlertRule
from modelmon.alerting.templates import TEMPLATES

CONFIG_FILE = "alertmanager.yml"
TEMPLATE_FILE = "modelmon.tmpl"
NULL_RECEIVER = "modelmon-none"


@dataclass
class Secrets:
    """Which secrets an export wrote into a file (by config key), so it can say so."""

    substituted: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def value(self, ref: cfg.SecretRef, where: str) -> str:
        self.substituted.append(where)
        return ref.resolve(where)


def receiver_name(channels: list[str]) -> str:
    return "+".join(channels) if channels else NULL_RECEIVER


def _integrations(channel: Any, index: int, config: cfg.AlertingConfig, secrets: Secrets) -> dict[str, list[dict]]:
    """The receiver entries of one channel."""
    where = f"channels[{index}]"
    resolved = {"send_resolved": channel.send_resolved}
    if isinstance(channel, cfg.EmailChannel):
        return {"email_configs": [{
            **resolved, "to": ", ".join(channel.to),
            "headers": {"Subject": '{{ template "modelmon.title" . }}'},
            "html": '{{ template "modelmon.email.html" . }}',
            "text": '{{ template "modelmon.text" . }}',
        }]}
    if isinstance(channel, cfg.SlackChannel):
        entry: dict[str, Any] = {**resolved}
        if channel.webhook_url.source == "file":
            entry["api_url_file"] = channel.webhook_url.name
        else:
            entry["api_url"] = secrets.value(channel.webhook_url, f"{where}.webhook_url")
        if channel.channel:
            entry["channel"] = channel.channel
        entry |= {"title": '{{ template "modelmon.title" . }}', "text": '{{ template "modelmon.text" . }}'}
        return {"slack_configs": [entry]}
    if isinstance(channel, cfg.WebhookChannel):
        url = channel.url if isinstance(channel.url, str) else secrets.value(channel.url, f"{where}.url")
        entry = {**resolved, "url": url, "max_alerts": channel.max_alerts}
        if channel.bearer_token is not None:
            entry["http_config"] = _bearer(channel.bearer_token, f"{where}.bearer_token", secrets)
        return {"webhook_configs": [entry]}
    if isinstance(channel, cfg.PagerDutyChannel):
        entry = {**resolved}
        if channel.routing_key.source == "file":
            entry["routing_key_file"] = channel.routing_key.name
        else:
            entry["routing_key"] = secrets.value(channel.routing_key, f"{where}.routing_key")
        if channel.url:
            entry["url"] = channel.url
        entry |= {
            "description": '{{ template "modelmon.title" . }}',
            "severity": '{{ if eq .CommonLabels.severity "info" }}info{{ else if eq .CommonLabels.severity "warning" }}warning{{ else }}critical{{ end }}',
            "links": [{"href": '{{ template "modelmon.runbook" . }}', "text": "runbook"}],
        }
        return {"pagerduty_configs": [entry]}
    if isinstance(channel, cfg.TelegramChannel):
        entry = {**resolved, "bot_token": secrets.value(channel.bot_token, f"{where}.bot_token"),
                 "chat_id": channel.chat_id, "parse_mode": "HTML",
                 "message": '{{ template "modelmon.telegram" . }}'}
        if channel.api_url:
            entry["api_url"] = channel.api_url
        return {"telegram_configs": [entry]}
    if isinstance(channel, cfg.DiscordChannel):
        return {"discord_configs": [{
            **resolved, "webhook_url": secrets.value(channel.webhook_url, f"{where}.webhook_url"),
            "title": '{{ template "modelmon.title" . }}', "message": '{{ template "modelmon.text" . }}',
        }]}
    if isinstance(channel, cfg.SnsChannel):
        sigv4: dict[str, str] = {"region": channel.region}
        if channel.access_key is not None and channel.secret_key is not None:
            sigv4["access_key"] = secrets.value(channel.access_key, f"{where}.access_key")
            sigv4["secret_key"] = secrets.value(channel.secret_key, f"{where}.secret_key")
        entry = {**resolved, "sigv4": sigv4, "subject": '{{ template "modelmon.title" . }}',
                 "message": '{{ template "modelmon.sms" . }}'}
        entry |= {"phone_number": channel.phone_number} if channel.phone_number else {"topic_arn": channel.topic_arn}
        if channel.api_url:
            entry["api_url"] = channel.api_url
        return {"sns_configs": [entry]}
    if isinstance(channel, cfg.AppriseChannel):
        entry = {**resolved, "url": f"{config.bridge.url.rstrip('/')}/alertmanager/{channel.name}",
                 "max_alerts": config.bridge.sender_max_alerts()}
        if config.bridge.token is not None:  # the bridge's token, from the same file or variable
            entry["http_config"] = _bearer(config.bridge.token, "bridge.token", secrets)
        return {"webhook_configs": [entry]}
    raise TypeError(f"unknown channel type {type(channel).__name__}")


def _bearer(token: cfg.SecretRef, where: str, secrets: Secrets) -> dict[str, Any]:
    """``http_config`` sending ``token`` as a bearer token: read by Alertmanager from its
    file (``credentials_file``), or substituted when it comes from the environment."""
    auth: dict[str, str] = {"type": "Bearer"}
    if token.source == "file":
        auth["credentials_file"] = token.name
    else:
        auth["credentials"] = secrets.value(token, where)
    return {"authorization": auth}


def _global(config: cfg.AlertingConfig, secrets: Secrets) -> dict[str, Any]:
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


def _check_verbatim(path: str, where: str, secrets: Secrets) -> None:
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


def alertmanager_config(config: cfg.AlertingConfig, rules: list[AlertRule]) -> tuple[dict[str, Any], Secrets]:
    """The configuration as a dict, and the secrets it had to substitute."""
    secrets = Secrets()
    routing = config.routing
    channel_sets: list[list[str]] = [routing.default]
    routes: list[dict[str, Any]] = []
    for model, channels in routing.models.items():
        if channels:
            routes.append({"receiver": receiver_name(channels), "matchers": [_matcher("model", model)], "continue": True})
            channel_sets.append(channels)
    for rule in rules:
        if rule.channels:
            routes.append({"receiver": receiver_name(rule.channels), "matchers": [_matcher("alertname", rule.name)]})
            channel_sets.append(rule.channels)
    for severity in cfg.SEVERITIES:
        channels = routing.severity.get(severity)
        if channels is not None:
            routes.append({"receiver": receiver_name(channels), "matchers": [_matcher("severity", severity)]})
            channel_sets.append(channels)

    integrations: dict[str, dict[str, list[dict]]] = {}
    for index, channel in enumerate(config.channels):
        integrations[channel.name] = _integrations(channel, index, config, secrets)
    receivers: dict[str, dict[str, Any]] = {}
    for channels in channel_sets:
        name = receiver_name(channels)
        if name in receivers:
            continue
        receiver: dict[str, Any] = {"name": name}
        for channel in channels:
            for kind, entries in integrations[channel].items():
                receiver.setdefault(kind, []).extend(entries)
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
                # While a model's server is down its other alerts are symptoms of that.
                "source_matchers": [_matcher("alertname", "ModelmonTargetDown")],
                "target_matchers": [_matcher("alertname", "|".join(SYMPTOMS), "=~")],
                "equal": ["model"],
            },
        ],
        "receivers": list(receivers.values()),
    }
    return content, secrets


def template_text() -> str:
    """The notification templates (``modelmon.title``, ``modelmon.text``...)."""
    return TEMPLATES
