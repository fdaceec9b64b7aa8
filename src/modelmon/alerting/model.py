"""One alert rule, independent of where it is compiled to (Prometheus, Grafana).

A rule's summary and description are written once, as ``string.Template`` text with
``$value``, ``$threshold`` and label names (``$model``, ``$feature``...), and rendered three
ways: as a Prometheus alert template, as a Grafana alert template, and as the literal text
the generated promtool tests expect for a known input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from string import Template

#: Labels a rule's text may name.
TEXT_LABELS = ("model", "version", "feature", "method", "instance", "job", "experiment", "run", "split", "metric")


def go_float(value: float, spec: str = ".4g") -> str:
    """Go's ``fmt.Sprintf("%.4g", v)``, including its NaN and infinities."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return format(value, spec)


def humanize_percentage(value: float) -> str:
    """Prometheus's ``humanizePercentage``."""
    return go_float(value * 100) + "%"


def humanize_duration(value: float) -> str:
    """Prometheus's ``humanizeDuration``."""
    if math.isnan(value) or math.isinf(value):
        return go_float(value)
    if abs(value) >= 1:
        sign = "-" if value < 0 else ""
        v = abs(value)
        seconds, minutes = int(v) % 60, (int(v) // 60) % 60
        hours, days = (int(v) // 3600) % 24, int(v) // 86400
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{go_float(v)}s"
    prefix = ""
    for p in ("m", "u", "n", "p", "f", "a", "z", "y"):
        if abs(value) >= 1 or value == 0:
            break
        prefix = p
        value *= 1000
    return f"{go_float(value)}{prefix}s"


@dataclass(frozen=True)
class ValueFormat:
    prometheus: str
    grafana: str

    def expect(self, value: float) -> str:
        raise NotImplementedError


class _Percent(ValueFormat):
    def expect(self, value: float) -> str:
        return humanize_percentage(value)


class _Seconds(ValueFormat):
    def expect(self, value: float) -> str:
        return humanize_duration(value)


class _Number(ValueFormat):
    def expect(self, value: float) -> str:
        return go_float(value)


class _Integer(ValueFormat):
    def expect(self, value: float) -> str:
        return go_float(value, ".0f")


PERCENT = _Percent("{{ $value | humanizePercentage }}", "{{ humanizePercentage $values.A.Value }}")
SECONDS = _Seconds("{{ $value | humanizeDuration }}", "{{ humanizeDuration $values.A.Value }}")
NUMBER = _Number('{{ printf "%.4g" $value }}', '{{ printf "%.4g" $values.A.Value }}')
INTEGER = _Integer('{{ printf "%.0f" $value }}', '{{ printf "%.0f" $values.A.Value }}')


@dataclass(frozen=True)
class Threshold:
    """An annotation's text (the threshold, or one of ``AlertRule.extra``) as each target
    shows it: a literal, or (Prometheus only) a query."""

    prometheus: str
    grafana: str

    @classmethod
    def literal(cls, text: str) -> Threshold:
        return cls(text, text)


@dataclass
class Case:
    """A promtool test input and what the rule must do on it at ``eval_minutes``."""

    name: str
    series: list[tuple[str, str]]
    eval_minutes: int
    #: Expected alerts: their labels (besides alertname, severity and the rule's labels)
    #: and the values of ``$value``/``$threshold`` in their text. Empty: must stay quiet.
    alerts: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)
    #: Minutes between input samples and between rule evaluations: 10 for cases whose
    #: windows span hours, which keeps promtool fast; the rules do not depend on it.
    interval: int = 1


@dataclass
class AlertRule:
    name: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    value_format: ValueFormat
    threshold: Threshold
    runbook_url: str
    labels: dict[str, str] = field(default_factory=dict)
    channels: list[str] = field(default_factory=list)
    builtin: bool = True
    #: The longest range the expression reads, in seconds (Grafana's query time range).
    range_seconds: float = 600
    cases: list[Case] = field(default_factory=list)
    #: The Grafana dashboard of the alert (grafana.url set), a template like the summary's.
    dashboard_url: str = ""
    #: The uid of that dashboard (Grafana rules link to it with ``__dashboardUid__``).
    dashboard_uid: str = ""
    #: The id of the panel of that dashboard that shows the rule's condition
    #: (``__panelId__``); None: no panel does.
    panel_id: int | None = None
    #: Annotations of their own, by name, each also usable as ``$name`` in the text: for what
    #: an alert reports but must not be a label (a label is part of the alert's identity).
    #: The promtool cases give their expected text among the values.
    extra: dict[str, Threshold] = field(default_factory=dict)

    def _mapping(self, target: str, values: dict[str, str] | None = None) -> dict[str, str]:
        if target == "expect":
            assert values is not None
            defaults = {label: "" for label in TEXT_LABELS} | {"threshold": self.threshold.prometheus}
            return defaults | values
        labels = {label: f"{{{{ $labels.{label} }}}}" for label in TEXT_LABELS}
        if target == "prometheus":
            return (labels | {"value": self.value_format.prometheus, "threshold": self.threshold.prometheus}
                    | {name: text.prometheus for name, text in self.extra.items()})
        return (labels | {"value": self.value_format.grafana, "threshold": self.threshold.grafana}
                | {name: text.grafana for name, text in self.extra.items()})

    def annotations(self, target: str, values: dict[str, str] | None = None) -> dict[str, str]:
        """``target``: prometheus, grafana, or expect (with the labels and values of one alert)."""
        mapping = self._mapping(target, values)
        return {
            "summary": Template(self.summary).substitute(mapping),
            "description": Template(self.description).substitute(mapping),
            "value": mapping["value"],
            "threshold": mapping["threshold"],
            "runbook_url": self.runbook_url,
        } | {name: mapping[name] for name in self.extra} | ({"dashboard_url": Template(self.dashboard_url).substitute(mapping)} if self.dashboard_url else {})

    def alert_labels(self) -> dict[str, str]:
        return {"severity": self.severity, **self.labels}
