"""``modelmon alerts export OUT_DIR``: every file the alerting stack needs, from one config.

    OUT_DIR/prometheus/modelmon-alerts.rules.yml      alerting rules (built-in and custom)
    OUT_DIR/prometheus/modelmon-drift.rules.yml       fleet drift recording rules
    OUT_DIR/prometheus/modelmon-quality.rules.yml     fleet quality recording rules
    OUT_DIR/prometheus/modelmon-regression.rules.yml  regression error recording rules
    OUT_DIR/prometheus/modelmon-alerts*.test.yml      promtool unit tests of the alerting rules
    OUT_DIR/alertmanager/alertmanager.yml             routes, inhibition, receivers
    OUT_DIR/alertmanager/modelmon.tmpl                notification templates
    OUT_DIR/grafana/provisioning/alerting/*.yaml      Grafana contact points, policies, rules
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from modelmon.alerting import alertmanager, grafana
from modelmon.alerting import config as cfg
from modelmon.alerting import prometheus_rules as prom

PROMETHEUS_DIR = "prometheus"
ALERTMANAGER_DIR = "alertmanager"
GRAFANA_DIR = "grafana/provisioning/alerting"


@dataclass
class Export:
    """What an export wrote."""

    out_dir: Path
    rule_files: list[Path] = field(default_factory=list)
    test_files: list[Path] = field(default_factory=list)
    alertmanager_config: Path | None = None
    grafana_files: list[Path] = field(default_factory=list)
    #: Config keys whose secrets were written into alertmanager.yml (mode 0600).
    substituted_secrets: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    alert_names: list[str] = field(default_factory=list)


def _write(path: Path, text: str, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        # Created 0600 before anything is written, so the secrets are never world-readable.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
    else:
        path.write_text(text)
    return path


def export(config: cfg.AlertingConfig, out_dir: Path | str, *, alertmanager_files: bool = True) -> Export:
    """Write every file; ``alertmanager_files=False`` skips the Alertmanager configuration
    (for a Prometheus-only setup whose secrets are not at hand)."""
    out = Path(out_dir)
    result = Export(out_dir=out)
    rules = prom.alert_rules(config)
    result.alert_names = [r.name for r in rules]
    for name, content in prom.rule_files(config).items():
        result.rule_files.append(_write(out / PROMETHEUS_DIR / name, prom.dump_yaml(content)))
    for name, content in prom.rules_tests(config).items():
        result.test_files.append(_write(out / PROMETHEUS_DIR / name, prom.dump_yaml(content)))
    untested = [r.name for r in rules if not r.builtin and not r.cases]
    if untested:
        result.notes.append(f"no promtool test generated for {', '.join(untested)} (raw expr, own text, count or quantile)")
    if alertmanager_files:
        content, secrets = alertmanager.alertmanager_config(config, rules)
        result.substituted_secrets = secrets.substituted
        result.notes.extend(secrets.notes)
        am_dir = out / ALERTMANAGER_DIR
        result.alertmanager_config = _write(am_dir / alertmanager.CONFIG_FILE, prom.dump_yaml(content),
                                            private=bool(secrets.substituted))
        _write(am_dir / alertmanager.TEMPLATE_FILE, alertmanager.template_text())
    if config.bridge.token is None and any(isinstance(c, cfg.AppriseChannel) for c in config.channels):
        result.notes.append("bridge.token is not set: Alertmanager and Grafana reach notify-bridge without a token, "
                            "so the bridge listens on loopback only (set bridge.token_file; docs/alerting.md)")
    files, notes = grafana.provisioning(config, rules)
    result.notes.extend(notes)
    for name, content in files.items():
        result.grafana_files.append(_write(out / GRAFANA_DIR / name, prom.dump_yaml(content)))
    return result
