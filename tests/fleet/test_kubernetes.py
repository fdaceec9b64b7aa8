"""deploy/kubernetes rendered and validated offline (no cluster here): the production overlay
with the generated monitoring, every manifest against the Kubernetes OpenAPI schemas of a
current release (kubernetes-validate, strict: an unknown field is an error), ServiceMonitor
and PrometheusRule against the Prometheus Operator's CRD schemas (cloudcoil's models,
generated from the CRDs' openAPIV3Schema, made strict the same way), the PrometheusRule's
rules through ``promtool check rules``, the Alertmanager configuration through
``amtool check-config``, the dashboards through Grafana's schemas as tests/dashboards does;
then the promises the manifests make to each other (selectors, ports, drain and grace)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from tests.dashboards.test_dashboards import schema_errors
from tests.fleet.kustomize import render

REPO = Path(__file__).resolve().parents[2]
KUBERNETES = REPO / "deploy" / "kubernetes"
# The newest release kubernetes-validate ships schemas for (1.37 with kubernetes-validate 1.37).
KUBERNETES_VERSION = kubernetes_validate.latest_version()


@pytest.fixture(scope="module")
def kubernetes_copy(tmp_path_factory) -> Path:
    """A copy of deploy/kubernetes with the monitoring generate.py writes."""
    copy = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(KUBERNETES, copy, ignore=shutil.ignore_patterns("generated"))
    subprocess.run([sys.executable, str(copy / "generate.py"), "--out", str(copy / "generated")],
                   check=True, capture_output=True, cwd=copy)
    return copy


@pytest.fixture(scope="module")
def rendered(kubernetes_copy) -> list[dict[str, Any]]:
    """The production overlay, rendered."""
    return render(kubernetes_copy / "overlays" / "production")


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def strict(schema: Any) -> Any:
    """Every object schema with properties refuses properties it does not list."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


def operator_validator(kind: str) -> jsonschema.Draft202012Validator:
    from cloudcoil.models.prometheus_operator import v1

    schema = strict(getattr(v1, kind).model_json_schema(by_alias=True))
    return jsonschema.Draft202012Validator(schema)


def test_every_manifest_validates_against_kubernetes_and_operator_schemas(rendered):
    kinds = sorted(d["kind"] for d in rendered)
    assert kinds == sorted(["Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler",
                            "ServiceMonitor", "PrometheusRule", "Secret", *["ConfigMap"] * 5])
    for doc in rendered:
        assert doc["metadata"]["namespace"] == "modelmon"
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            errors = [f"{e.json_path}: {e.message[:200]}" for e in operator_validator(doc["kind"]).iter_errors(doc)]
            assert errors == [], f"{doc['kind']}: {errors}"
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_the_validators_catch_mistakes(rendered):
    deployment = json.loads(json.dumps(by_kind(rendered, "Deployment")[0]))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)
    monitor = json.loads(json.dumps(by_kind(rendered, "ServiceMonitor")[0]))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    monitor["spec"]["endpoints"][0]["scheme"] = 7
    errors = [e.message for e in operator_validator("ServiceMonitor").iter_errors(monitor)]
    assert any("intervall" in e for e in errors) and any(e.startswith("7 is not valid") for e in errors), errors


def test_prometheus_rule_is_the_exported_rules_and_passes_promtool(rendered, tmp_path):
    if shutil.which("promtool") is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    rule = by_kind(rendered, "PrometheusRule")[0]
    groups = rule["spec"]["groups"]
    names = [g["name"] for g in groups]
    assert {"modelmon-alerts", "modelmon-drift-1h", "modelmon-quality-1h"} <= set(names)
    assert len(names) == len(set(names))
    # The same rules `modelmon alerts export` and `modelmon rules export` write.
    export = tmp_path / "export"
    subprocess.run([sys.executable, "-m", "modelmon.cli", "alerts", "export", str(export / "alerts")], check=True, capture_output=True)
    subprocess.run([sys.executable, "-m", "modelmon.cli", "rules", "export", str(export / "rules")], check=True, capture_output=True)
    exported = {}
    for path in [*(export / "alerts" / "prometheus").glob("*.rules.yml"), *(export / "rules").glob("*.rules.yml")]:
        exported.update({g["name"]: g for g in yaml.safe_load(path.read_text())["groups"]})
    assert {g["name"]: g for g in groups} == exported
    rule_file = tmp_path / "rule.yml"
    rule_file.write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run(["promtool", "check", "rules", str(rule_file)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    # The alerts select job="modelmon": the ServiceMonitor's jobLabel gives its targets that job.
    monitor = by_kind(rendered, "ServiceMonitor")[0]
    service = by_kind(rendered, "Service")[0]
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "modelmon"
    assert any('job="modelmon"' in r["expr"] for g in groups for r in g["rules"])


def test_alertmanager_secret_and_dashboards(rendered, tmp_path):
    secret = by_kind(rendered, "Secret")[0]
    assert set(secret["stringData"]) == {"alertmanager.yml", "modelmon.tmpl"}
    if shutil.which("amtool"):
        (tmp_path / "alertmanager.yml").write_text(secret["stringData"]["alertmanager.yml"])
        (tmp_path / "modelmon.tmpl").write_text(secret["stringData"]["modelmon.tmpl"])
        check = subprocess.run(["amtool", "check-config", str(tmp_path / "alertmanager.yml")], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
    maps = by_kind(rendered, "ConfigMap")
    assert {m["metadata"]["labels"]["grafana_dashboard"] for m in maps} == {"1"}
    for config_map in maps:
        ((name, text),) = config_map["data"].items()
        assert schema_errors(json.loads(text)) == [], name
        # A ConfigMap holds at most 1 MiB.
        assert len(text.encode()) < 1024 * 1024


def test_the_manifests_keep_their_promises(rendered):
    deployment = by_kind(rendered, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    # Selectors: Service, PDB and ServiceMonitor find the pods; the HPA scales this Deployment.
    for selector in (by_kind(rendered, "Service")[0]["spec"]["selector"],
                     deployment["spec"]["selector"]["matchLabels"],
                     by_kind(rendered, "PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    service = by_kind(rendered, "Service")[0]
    assert by_kind(rendered, "ServiceMonitor")[0]["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert by_kind(rendered, "ServiceMonitor")[0]["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    assert by_kind(rendered, "HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    # Probes on the health endpoints; the drain fits in the grace period after preStop.
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    drain = float(next(a.split("=", 1)[1] for a in container["args"] if a.startswith("--drain-seconds=")))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The readiness probe must see the drain: at least one probe period inside it.
    assert container["readinessProbe"]["periodSeconds"] * container["readinessProbe"]["failureThreshold"] < drain
    assert pre_stop + drain + 10 <= pod["terminationGracePeriodSeconds"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    # Hardening: non-root, read-only root filesystem, no token, the registry read-only.
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True and mounts["models"]["mountPath"] == "/models"
    env = {e["name"]: e for e in container["env"]}
    assert env["MODELMON_STORE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "modelmon-store"
    assert env["MODELMON_API_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "modelmon-api-token"
    assert env["MODELMON_HOME"]["value"] == mounts["data"]["mountPath"]
    assert {"requests", "limits"} <= container["resources"].keys()
    assert container["image"] == "registry.example.com/modelmon:0.1.0"


def test_same_rendering_as_kubectl_kustomize(rendered, kubernetes_copy):
    """Our renderer against the real Kustomize, where kubectl is installed."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl not installed: the rendering is checked by tests/fleet/kustomize.py alone")
    result = subprocess.run(["kubectl", "kustomize", str(kubernetes_copy / "overlays" / "production")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    theirs = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(result.stdout)}
    ours = {(d["kind"], d["metadata"]["name"]): d for d in rendered}
    assert theirs == ours
