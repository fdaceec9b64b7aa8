"""Alert rules compiled to Prometheus rule files, and promtool unit tests that prove them.

``alert_rules(config)`` is every enabled built-in rule plus the custom ones. The rule file
(``modelmon-alerts.rules.yml``) holds them in one group, next to the fleet drift recording
rules of ``modelmon.rules.drift`` (and the quality and regression recording rules, in files
of their own); the test file runs every built-in rule on a
violating input (it must fire, with the exact labels and text) and on a healthy one (it
must stay quiet).
"""

from __future__ import annotations

from typing import Any

import yaml

from modelmon.alerting import config as cfg
from modelmon.alerting.builtins import builtin_rules, minutes
from modelmon.alerting.model import NUMBER, AlertRule, Case, Threshold
from modelmon.rules import drift as drift_rules

GROUP = "modelmon-alerts"
RULE_FILE = "modelmon-alerts.rules.yml"
TEST_FILE = "modelmon-alerts.test.yml"
LONG_TEST_FILE = "modelmon-alerts-long-windows.test.yml"
DRIFT_RULE_FILE = "modelmon-drift.rules.yml"
QUALITY_RULE_FILE = "modelmon-quality.rules.yml"
REGRESSION_RULE_FILE = "modelmon-regression.rules.yml"
CUSTOM_DEFAULT_SEVERITY = "warning"
CUSTOM_DEFAULT_FOR = "5m"


def custom_rule(rule: cfg.CustomRule, config: cfg.AlertingConfig) -> AlertRule:
    """A custom condition as an AlertRule (with test cases where they can be derived)."""
    for_ = rule.for_ or CUSTOM_DEFAULT_FOR
    runbook = rule.runbook_url or f"{config.runbook_base_url}#custom-rules"
    if rule.expr is not None:
        expr = rule.expr.strip()
        threshold = Threshold.literal("in the rule's expr")
        default_summary = f"{rule.name} is firing"
        default_description = f"{rule.name} fired: its expression returned $value."
    else:
        comparator, limit = _condition(rule)
        expr, what = compile_condition(rule), f"the {rule.aggregation} of {rule.metric}"
        threshold = Threshold.literal(f"{comparator} {NUMBER.expect(limit)}")
        where = " ".join(f"{label}=${label}" for label in rule.by if label in _TEXT_LABELS)
        default_summary = f"{rule.name}: {what} is $value"
        default_description = f"{rule.name}{' (' + where + ')' if where else ''}: {what} is $value (condition: $threshold)."
    summary = _user_text(rule.summary) if rule.summary else default_summary
    description = _user_text(rule.description) if rule.description else default_description
    out = AlertRule(
        name=rule.name, expr=expr, for_=for_, severity=rule.severity or CUSTOM_DEFAULT_SEVERITY,
        summary=summary, description=description, value_format=NUMBER, threshold=threshold,
        runbook_url=runbook, labels=dict(rule.labels), channels=list(rule.channels), builtin=False,
        range_seconds=cfg.duration_seconds(rule.window),
    )
    if rule.expr is None and not rule.summary and not rule.description:
        out.cases = custom_cases(rule, out)
    return out


_TEXT_LABELS = ("model", "version", "feature", "method", "instance", "job", "experiment", "run", "split", "metric")


def _user_text(text: str) -> str:
    """User-written alert text is a Prometheus template already: keep its ``$`` as they are."""
    return text.replace("$", "$$")


def _selector(rule: cfg.CustomRule, suffix: str = "") -> str:
    matchers = ", ".join(f'{k}="{_escape(v)}"' for k, v in rule.matchers.items())
    return f"{rule.metric}{suffix}{{{matchers}}}" if matchers else f"{rule.metric}{suffix}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _condition(rule: cfg.CustomRule) -> tuple[cfg.Comparator, float]:
    """The comparator and threshold of a metric condition (a rule without ``expr``:
    CustomRule's validation requires both there)."""
    assert rule.comparator is not None and rule.threshold is not None, f"{rule.name} has an expr, not a condition"
    return rule.comparator, rule.threshold


def compile_condition(rule: cfg.CustomRule) -> str:
    by = ", ".join(rule.by)
    w = rule.window
    agg = rule.aggregation
    if agg == "last":
        value = f"max by ({by}) ({_selector(rule)})"
    elif agg in ("avg", "min", "max"):
        value = f"{agg} by ({by}) ({agg}_over_time({_selector(rule)}[{w}]))"
    elif agg in ("sum", "count"):
        value = f"{agg} by ({by}) ({_selector(rule)})"
    elif agg in ("rate", "increase"):
        value = f"sum by ({by}) ({agg}({_selector(rule)}[{w}]))"
    else:  # quantile of a histogram
        value = f"histogram_quantile({rule.quantile!r}, sum by ({by}, le) (rate({_selector(rule, '_bucket')}[{w}])))"
    return f"{value} {rule.comparator} {rule.threshold!r}"


def custom_cases(rule: cfg.CustomRule, compiled: AlertRule) -> list[Case]:
    """A violating and a healthy input for a metric condition, where one can be derived."""
    if rule.aggregation in ("count", "quantile"):
        return []
    comparator, limit = _condition(rule)
    t = float(limit)
    step = abs(t) / 2 if t else 1.0
    # Values well inside and outside the condition: rates come out of float arithmetic,
    # so a value on the boundary itself would be a coin toss.
    bad, good = {
        ">": (t + step, t - step), ">=": (t + step, t - step), "<": (t - step, t + step),
        "<=": (t - step, t + step), "==": (t, t + step), "!=": (t + step, t),
    }[comparator]
    if comparator in ("==", "!=") and rule.aggregation in ("rate", "increase", "avg"):
        return []
    window_minutes = minutes(rule.window)
    n = 2 + window_minutes + minutes(compiled.for_) + 2
    labels = {label: "x" for label in rule.by} | dict(rule.matchers)
    if rule.aggregation in ("rate", "increase") and (bad < 0 or good < 0):
        return []  # a counter cannot decrease
    text = ", ".join(f'{k}="{_escape(v)}"' for k, v in labels.items())

    def series(value: float) -> list[tuple[str, str]]:
        if rule.aggregation == "rate":
            return [(f"{rule.metric}{{{text}}}", f"0+{value * 60!r}x{n}")]
        if rule.aggregation == "increase":
            return [(f"{rule.metric}{{{text}}}", f"0+{value / window_minutes!r}x{n}")]
        return [(f"{rule.metric}{{{text}}}", f"{value!r}x{n}")]

    expected = {label: "x" for label in rule.by} | {k: v for k, v in rule.matchers.items() if k in rule.by}
    values = {"value": NUMBER.expect(bad)} | {label: expected.get(label, "") for label in _TEXT_LABELS}
    return [Case("violating", series(bad), n, [(expected, values)]), Case("healthy", series(good), n)]


def alert_rules(config: cfg.AlertingConfig) -> list[AlertRule]:
    rules = builtin_rules(config) + [custom_rule(r, config) for r in config.rules if r.enabled]
    names = [r.name for r in rules]
    clash = sorted({n for n in names if names.count(n) > 1})
    if clash:
        raise cfg.AlertingConfigError(f"rules: {', '.join(clash)} is also the name of a built-in rule; rename it")
    return rules


def rule_group(rules: list[AlertRule], config: cfg.AlertingConfig) -> dict[str, Any]:
    group: dict[str, Any] = {"name": GROUP}
    if config.prometheus.evaluation_interval:
        group["interval"] = config.prometheus.evaluation_interval
    group["rules"] = [
        {
            "alert": r.name,
            "expr": r.expr,
            "for": r.for_,
            "labels": r.alert_labels(),
            "annotations": r.annotations("prometheus"),
        }
        for r in rules
    ]
    return group


def rule_files(config: cfg.AlertingConfig) -> dict[str, dict[str, Any]]:
    """File name -> content: the alerting rules, and the fleet drift, quality and regression
    recording rules (the same files as ``modelmon rules export``) for dashboards and custom
    rules."""
    from modelmon.rules import quality as quality_rules
    from modelmon.rules import regression as regression_rules

    rules = alert_rules(config)
    windows = config.prometheus.recording_windows
    return {
        RULE_FILE: {"groups": [rule_group(rules, config)]},
        DRIFT_RULE_FILE: {"groups": [drift_rules.drift_rule_group(w) for w in windows]},
        QUALITY_RULE_FILE: {"groups": [quality_rules.quality_rule_group(w) for w in windows]},
        REGRESSION_RULE_FILE: {"groups": [regression_rules.regression_rule_group(w) for w in windows]},
    }


def rules_tests(config: cfg.AlertingConfig) -> dict[str, dict[str, Any]]:
    """promtool unit tests, file name -> content: every case of every rule that has them.

    Cases sampled every minute go to one file, cases over windows of hours (sampled every
    10 minutes) to another, since promtool's evaluation interval is per file."""
    tests: dict[int, list[dict[str, Any]]] = {}
    for rule in alert_rules(config):
        for case in rule.cases:
            exp_alerts = []
            for labels, values in case.alerts:
                exp_alerts.append({
                    "exp_labels": {**rule.alert_labels(), **labels},
                    "exp_annotations": rule.annotations("expect", {**labels, **values}),
                })
            tests.setdefault(case.interval, []).append({
                "name": f"{rule.name}: {case.name}",
                "interval": f"{case.interval}m",
                "input_series": [{"series": s, "values": v} for s, v in case.series],
                "alert_rule_test": [{"eval_time": f"{case.eval_minutes}m", "alertname": rule.name, "exp_alerts": exp_alerts}],
            })
    files = {}
    for interval, cases in sorted(tests.items()):
        name = TEST_FILE if interval == 1 else LONG_TEST_FILE
        # The drift recording rules too: ModelmonFleetFeatureDrift reads them.
        files[name] = {"rule_files": [RULE_FILE, DRIFT_RULE_FILE], "evaluation_interval": f"{interval}m", "tests": cases}
    return files


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:  # no &id001 anchors: the files are read by people
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump_yaml(content: Any) -> str:
    """YAML with multi-line strings (PromQL) as literal blocks, keys in the order given."""
    return yaml.dump(content, Dumper=_Dumper, sort_keys=False, width=1000, allow_unicode=True)
