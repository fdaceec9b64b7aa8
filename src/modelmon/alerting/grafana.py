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
from modelmon.alerting.builtins import WATCHDOG
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


def contact_points(config: cfg.AlertingConfig, channel_sets: list[list[str]]) -> tuple[dict[str, Any], list[str]]:
    """The contact points file, and notes on channels Grafana cannot carry."""
    notes = []
    integrations: dict[str, tuple[str, dict[str, Any]]] = {}
    for channel in config.channels:
        made = channel.grafana_integration(config.bridge)  # each channel writes its own (config.py)
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
        for channel_name in usable:
            kind, settings = integrations[channel_name]
            receivers.append({
                "uid": _uid(f"modelmon-{name}-{channel_name}"), "type": kind, "settings": settings,
                "disableResolveMessage": not config.channel(channel_name).send_resolved,
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
    if routing.watchdog and receiver(routing.watchdog):
        routes.append({"receiver": receiver(routing.watchdog), "object_matchers": [_matcher("alertname", "=", WATCHDOG)]})
    for model, channels in routing.models.items():
        if receiver(channels):
            routes.append({"receiver": receiver(channels), "object_matchers": [_matcher("model", "=", model)], "continue": True})
    for rule in rules:
        if rule.channels and receiver(rule.channels):
            routes.append({"receiver": receiver(rule.channels), "object_matchers": [_matcher("alertname", "=", rule.name)]})
    for severity in cfg.SEVERITIES:
        severity_channels = routing.severity.get(severity)
        if severity_channels and receiver(severity_channels):
            routes.append({"receiver": receiver(severity_channels), "object_matchers": [_matcher("severity", "=", severity)]})
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
            # __dashboardUid__ and __panelId__ link the rule to the panel that shows its
            # condition, in Grafana's alert list and on the panel itself.
            "annotations": rule.annotations("grafana") | ({"__dashboardUid__": rule.dashboard_uid} if rule.dashboard_uid else {})
            | ({"__panelId__": str(rule.panel_id)} if rule.dashboard_uid and rule.panel_id is not None else {}),
            "labels": rule.alert_labels(),
            "isPaused": False,
        })
    group = {"orgId": g.org_id, "name": "modelmon", "folder": g.folder, "interval": g.interval, "rules": grafana_rules}
    return {"apiVersion": 1, "groups": [group]}


def provisioning(config: cfg.AlertingConfig, rules: list[AlertRule]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """File name -> content for ``provisioning/alerting/``, and notes."""
    channel_sets = [config.routing.default, config.routing.watchdog, *config.routing.models.values(),
                    *config.routing.severity.values()]
    # Grafana has no receiver that drops: the always-firing Watchdog is provisioned only
    # when routing.watchdog names its dead man's switch.
    rules = [r for r in rules if r.name != WATCHDOG or config.routing.watchdog]
    channel_sets += [r.channels for r in rules if r.channels]
    points, notes = contact_points(config, channel_sets)
    available = {p["name"] for p in points["contactPoints"]}
    return {
        CONTACT_POINTS_FILE: points,
        POLICIES_FILE: policies(config, rules, available),
        RULES_FILE: rule_groups(config, rules),
    }, notes
