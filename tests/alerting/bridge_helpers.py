"""Starting the real ``modelmon notify-bridge`` for the bridge tests, and reading its metrics
and memory."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelmon.stack.processes import free_port, stop_process, wait_for_http


@dataclass
class RunningBridge:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def metrics(self) -> dict[tuple[str, tuple], float]:
        return metric_values(self.url)

    def rss_kib(self) -> tuple[int, int]:
        """Resident memory now and at its peak (VmRSS, VmHWM), in KiB."""
        fields = dict(line.split(":", 1) for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines())
        return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])

    def stop(self) -> None:
        stop_process(self.process)


def start_bridge(tmp_path: Path, config: dict[str, Any], *args: str, env: dict[str, str] | None = None,
                 port: int | None = None) -> RunningBridge:
    """The real command on loopback with ``config`` as its modelmon.yaml."""
    port = port or free_port()
    config_file = tmp_path / "bridge-modelmon.yaml"
    config_file.write_text(yaml.safe_dump(config))
    log_path = tmp_path / f"bridge-{port}.log"
    environment = {k: v for k, v in os.environ.items() if k != "MODELMON_BRIDGE_TOKEN"} | (env or {})
    process = subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", "notify-bridge", "--config", str(config_file), "--port", str(port), *args],
        stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=environment,
    )
    bridge = RunningBridge(process, f"http://127.0.0.1:{port}", log_path)
    try:
        wait_for_http(f"{bridge.url}/-/healthy", timeout=30, process=process)
    except Exception:
        bridge.stop()
        raise AssertionError(f"the bridge did not start:\n{bridge.log()}") from None
    return bridge


def metric_values(url: str) -> dict[tuple[str, tuple], float]:
    values = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            values[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return values


def value(values: dict, name: str, **labels: str) -> float:
    return values[(name, tuple(sorted(labels.items())))]


def alert(name: str, status: str = "firing", fingerprint: str | None = None, **labels: str) -> dict[str, Any]:
    """One alert as Alertmanager's webhook carries it."""
    out: dict[str, Any] = {
        "status": status,
        "labels": {"alertname": name, "severity": "critical", **labels},
        "annotations": {"summary": f"{name} on {labels.get('model', 'a model')}", "description": "Something is off."},
        "startsAt": "2025-01-01T00:00:00Z",
    }
    if fingerprint is not None:
        out["fingerprint"] = fingerprint
    return out


def payload(*alerts: dict[str, Any]) -> dict[str, Any]:
    """An Alertmanager (version 4) webhook payload of ``alerts``."""
    status = "firing" if any(a["status"] == "firing" for a in alerts) else "resolved"
    common = {k: v for k, v in alerts[0]["labels"].items() if all(a["labels"].get(k) == v for a in alerts)}
    return {"version": "4", "status": status, "receiver": "test", "groupKey": "{}:{}", "commonLabels": common,
            "commonAnnotations": {}, "groupLabels": {}, "externalURL": "http://alertmanager", "alerts": list(alerts)}
