"""Write the monitoring half of the Kubernetes deployment from the installed modelmon.

    python deploy/kubernetes/generate.py [--config modelmon.yaml] [--window 1h ...] [--out DIR]

writes DIR (default: deploy/kubernetes/generated, which overlays/production includes):

    prometheusrule.yaml       PrometheusRule `modelmon`: the alerting rules of
                              `modelmon alerts export` and the recording rules of
                              `modelmon rules export` (fleet drift, quality, regression), their groups
    alertmanager-secret.yaml  Secret `modelmon-alertmanager`: alertmanager.yaml and modelmon.tmpl
                              from `modelmon alerts export` (your channels; their secrets are
                              read now, so keep the file out of version control)
    grafana-dashboards.yaml   one ConfigMap per dashboard, labelled grafana_dashboard: "1" for
                              the Grafana sidecar of kube-prometheus-stack
    kustomization.yaml        the three files, for the overlay

Generated rather than kept in the repository, so they always match the installed version.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from modelmon.alerting.config import load_config
from modelmon.alerting.export import export
from modelmon.dashboards import grafana
from modelmon.rules.drift import check_window

HERE = Path(__file__).resolve().parent
LABELS = {"app.kubernetes.io/name": "modelmon", "app.kubernetes.io/part-of": "modelmon"}
HEADER = "# Written by deploy/kubernetes/generate.py; regenerate rather than edit.\n"


def rule_groups(rule_files: list[Path]) -> list[dict[str, Any]]:
    """Every group of the rule files, in order (a group already seen, by name, is not repeated)."""
    groups: list[dict[str, Any]] = []
    for path in rule_files:
        groups += yaml.safe_load(path.read_text())["groups"]
    seen: dict[str, dict[str, Any]] = {}
    for group in groups:
        if group["name"] in seen and seen[group["name"]] != group:
            raise SystemExit(f"two different rule groups named {group['name']}")
        seen.setdefault(group["name"], group)
    return list(seen.values())


def prometheus_rule(groups: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "modelmon", "labels": {**LABELS, "prometheus": "k8s", "role": "alert-rules"}},
        "spec": {"groups": groups},
    }


def alertmanager_secret(alertmanager_dir: Path) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "modelmon-alertmanager", "labels": LABELS},
        "type": "Opaque",
        "stringData": {p.name: p.read_text() for p in sorted(alertmanager_dir.iterdir()) if p.is_file()},
    }


def dashboard_config_maps(windows: list[str]) -> list[dict[str, Any]]:
    dashboards = grafana.dashboards_json("postgresql", window=",".join(windows))
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": f"grafana-dashboard-{uid}",
                "labels": {**LABELS, "grafana_dashboard": "1"},
                # The sidecar's folderAnnotation (kube-prometheus-stack: grafana_folder).
                "annotations": {"grafana_folder": "modelmon"},
            },
            "data": {f"{uid}.json": json.dumps(model, indent=1) + "\n"},
        }
        for uid, model in dashboards.items()
    ]


def write(out: Path, config: Path | None, windows: list[str]) -> list[Path]:
    for w in windows:
        check_window(w)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        exported = export(load_config(config), Path(tmp) / "alerts")
        # The recording rules exactly as `modelmon rules export` writes them, whatever kinds
        # it holds (drift, quality, regression, ...).
        rules = Path(tmp) / "rules"
        subprocess.run([sys.executable, "-m", "modelmon.cli", "rules", "export", str(rules),
                        *(f"--window={w}" for w in windows)], check=True, capture_output=True)
        groups = rule_groups([*exported.rule_files, *sorted(rules.glob("*.rules.yml"))])
        assert exported.alertmanager_config is not None
        secret = alertmanager_secret(exported.alertmanager_config.parent)
    files = {
        "prometheusrule.yaml": [prometheus_rule(groups)],
        "alertmanager-secret.yaml": [secret],
        "grafana-dashboards.yaml": dashboard_config_maps(windows),
    }
    written = []
    for name, documents in files.items():
        path = out / name
        path.write_text(HEADER + yaml.safe_dump_all(documents, sort_keys=False))
        if name == "alertmanager-secret.yaml":
            path.chmod(0o600)  # it may hold the channels' secrets
        written.append(path)
    kustomization = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "resources": list(files)}
    (out / "kustomization.yaml").write_text(HEADER + yaml.safe_dump(kustomization, sort_keys=False))
    return [*written, out / "kustomization.yaml"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="modelmon.yaml: alert channels, routing and rules "
                        "[default: ./modelmon.yaml if present, else the built-in rules alone]")
    parser.add_argument("--window", action="append", help="window of the fleet recording rules (repeatable) [default: 1h]")
    parser.add_argument("--out", type=Path, default=HERE / "generated", help="output directory [default: %(default)s]")
    args = parser.parse_args(argv)
    config = args.config or (Path("modelmon.yaml") if Path("modelmon.yaml").exists() else None)
    for path in write(args.out, config, args.window or ["1h"]):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
