"""Grafana alerting provisioning (contact points, notification policies, rule groups), for
teams that alert from Grafana rather than from Prometheus and Alertmanager.

The files follow Grafana's file-provisioning format (``apiVersion: 1``, put under
``provisioning/alerting/``). Each rule is the same PromQL as the Prometheus rule: query
``A`` returns the violating series with their values, and the condition ``C`` is a math
expression true for every series ``A`` returns (NaN included, which ``$A > 0`` would miss).
Secrets stay references that Grafana expands when it provisions: ``${VAR}`` for the
environment, ``$__file{/path}`` for files.
"""

from __future__ import annotations

import hashlib
from typing import Any

from modelmon.alerting import config as cfg
from modelmon.alerting.alertmanager import receiver_name
from modelmon.alerting.model import AlertRule

CONTACT_POINTS_FILE = "contact-points.yaml"
POLICIES_FILE = "notification-policies.yaml"
RULES_FILE = "alert-rules.yaml"
#: Grafana's own contact point, the root policy's receiver when no default channel is set.
GRAFANA_DEFAULT_RECEIVER = "grafana-default-email"
#: True for every value, NaN and infinities included.
ANY_VALUE = "$A == $A || $A != $A"


def _uid(text: str) -> str:
    """A stable UID of at most 40 characters."""
    clean = "".join(c if c.isalnum() or c in "-_" else "-" for c in text.lower())
    if len(clean) <= 40:
        return clean
    return clean[:31] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]


def _secret(value: cfg.SecretRef | str) -> str:
    return value if isinstance(value, str) else value.grafana()


def _integration(channel: Any, config: cfg.AlertingConfig) -> tuple[str, dict[str, Any]] | None:
    """Grafana's (type, settings) for a channel; None when Grafana has no such integration."""
    message = {"title": '{{ template "default.title" . }}', "message": '{{ template "default.message" . }}'}
    if isinstance(channel, cfg.EmailChannel):
        return "email", {"addresses": ";".join(channel.to), "singleEmail": True}
    if isinstance(channel, cfg.SlackChannel):
        settings = {"url": _secret(channel.webhook_url)}
        if channel.channel:
            settings["recipient"] = channel.channel
        return "slack", settings
    if isinstance(channel, cfg.WebhookChannel):
        settings = {"url": _secret(channel.url), "httpMethod": "POST"}
        if channel.bearer_token is not None:
            settings |= {"authorization_scheme": "Bearer", "authorization_credentials": _secret(channel.bearer_token)}
        if channel.max_alerts:
            settings["maxAlerts"] = str(channel.max_alerts)
        return "webhook", settings
    if isinstance(channel, cfg.PagerDutyChannel):
        return "pagerduty", {"integrationKey": _secret(channel.routing_key), "summary": message["title"]}
    if isinstance(channel, cfg.TelegramChannel):
        return "telegram", {"bottoken": _secret(channel.bot_token), "chatid": str(channel.chat_id),
                            "message": message["message"]}
    if isinstance(channel, cfg.DiscordChannel):
        return "discord", {"url": _secret(channel.webhook_url), **message}
    if isinstance(channel, cfg.AppriseChannel):
        settings = {"url": f"{config.bridge.url.rstrip('/')}/grafana/{channel.name}", "httpMethod": "POST",
                    "maxAlerts": str(config.bridge.sender_max_alerts())}
        if config.bridge.token is not None:  # the bridge's token, expanded by Grafana from its file or variable
            settings |= {"authorization_scheme": "Bearer", "authorization_credentials": _secret(config.bridge.token)}
        return "webhook", settings
    return None  # SNS: not among Grafana's provisioned integration types; use an apprise channel (sns://)


def contact_points(config: cfg.AlertingConfig, channel_sets: list[list[str]]) -> tuple[dict[str, Any], list[str]]:
    """The contact points file, and notes on channels Grafana cannot carry."""
    notes = []
    integrations: dict[str, tuple[str, dict[str, Any]]] = {}
    for channel in config.channels:
        made = _integration(channel, config)
        if made is None:
            notes.append(f"channel {channel.name} ({channel.type}): Grafana has no such contact point type; "
                         "give Grafana an apprise channel (sns://...) through modelmon notify-bridge instead")
        else:
            integrations[channel.name] = made
    points = []
    seen = set()
    for channels in channel_sets:
        name = receiver_name(channels)
        usable = [c for c in channels if c in integrations]
        if name in seen or not usable:
            continue
        seen.add(name)
        receivers = []
        for channel in usable:
            kind, settings = integrations[channel]
            receivers.append({
                "uid": _uid(f"modelmon-{name}-{channel}"), "type": kind, "settings": settings,
                "disableResolveMessage": not config.channel(channel).send_resolved,
            })
        points.append({"orgId": config.grafana.org_id, "name": name, "receivers": receivers})
    return {"apiVersion": 1, "contactPoints": points}, notes


def _matcher(label: str, op: str, value: str) -> list[str]:
    return [label, op, value]


def policies(config: cfg.AlertingConfig, rules: list[AlertRule], available: set[str]) -> dict[str, Any]:
    routing = config.routing

    def receiver(channels: list[str]) -> str | None:
        name = receiver_name(channels)
        return name if name in available else None

    routes: list[dict[str, Any]] = []
    for model, channels in routing.models.items():
        if receiver(channels):
            routes.append({"receiver": receiver(channels), "object_matchers": [_matcher("model", "=", model)], "continue": True})
    for rule in rules:
        if rule.channels and receiver(rule.channels):
            routes.append({"receiver": receiver(rule.channels), "object_matchers": [_matcher("alertname", "=", rule.name)]})
    for severity in cfg.SEVERITIES:
        channels = routing.severity.get(severity)
        if channels and receiver(channels):
            routes.append({"receiver": receiver(channels), "object_matchers": [_matcher("severity", "=", severity)]})
    group_by = list(dict.fromkeys(["grafana_folder", "alertname", *routing.group_by]))
    root = {
        "orgId": config.grafana.org_id,
        "receiver": receiver(routing.default) or GRAFANA_DEFAULT_RECEIVER,
        "group_by": group_by,
        "group_wait": routing.group_wait,
        "group_interval": routing.group_interval,
        "repeat_interval": routing.repeat_interval,
        "routes": routes,
    }
    return {"apiVersion": 1, "policies": [root]}


def rule_groups(config: cfg.AlertingConfig, rules: list[AlertRule]) -> dict[str, Any]:
    g = config.grafana
    grafana_rules = []
    for rule in rules:
        span = int(max(600, rule.range_seconds + 60))
        grafana_rules.append({
            "uid": _uid(f"modelmon-{rule.name}"),
            "title": rule.name,
            "condition": "C",
            "data": [
                {
                    "refId": "A",
                    "relativeTimeRange": {"from": span, "to": 0},
                    "datasourceUid": g.datasource_uid,
                    "model": {
                        "refId": "A", "expr": rule.expr, "instant": True, "range": False, "editorMode": "code",
                        "datasource": {"type": "prometheus", "uid": g.datasource_uid},
                        "intervalMs": 1000, "maxDataPoints": 43200,
                    },
                },
                {
                    "refId": "C",
                    "relativeTimeRange": {"from": 0, "to": 0},
                    "datasourceUid": "__expr__",
                    "model": {
                        "refId": "C", "type": "math", "expression": ANY_VALUE,
                        "datasource": {"type": "__expr__", "uid": "__expr__"},
                    },
                },
            ],
            "noDataState": "OK",
            "execErrState": "Error",
            "for": rule.for_,
            "annotations": rule.annotations("grafana"),
            "labels": rule.alert_labels(),
            "isPaused": False,
        })
    group = {"orgId": g.org_id, "name": "modelmon", "folder": g.folder, "interval": g.interval, "rules": grafana_rules}
    return {"apiVersion": 1, "groups": [group]}


def provisioning(config: cfg.AlertingConfig, rules: list[AlertRule]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """File name -> content for ``provisioning/alerting/``, and notes."""
    channel_sets = [config.routing.default, *config.routing.models.values(), *config.routing.severity.values()]
    channel_sets += [r.channels for r in rules if r.channels]
    points, notes = contact_points(config, channel_sets)
    available = {p["name"] for p in points["contactPoints"]}
    return {
        CONTACT_POINTS_FILE: points,
        POLICIES_FILE: policies(config, rules, available),
        RULES_FILE: rule_groups(config, rules),
    }, notes
