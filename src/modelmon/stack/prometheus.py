"""A local Prometheus: config written from the targets, started on loopback, queried.

Used by the demo and the tests alike, so what the tests prove is what users run. The binary
comes from the Debian package ``prometheus`` (2.42 on bookworm).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from modelmon.stack.processes import LoopbackService, free_port

INSTALL_HINT = "install it with: sudo apt-get install --no-install-recommends prometheus"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def prometheus_config(
    targets: list[str],
    scrape_interval: str,
    rule_files: list[Path] | None = None,
    alertmanagers: list[str] | None = None,
    evaluation_interval: str | None = None,
    job: str = "modelmon",
) -> dict[str, Any]:
    """A configuration scraping ``targets`` that loads ``rule_files`` and, when given, sends
    alerts to ``alertmanagers`` (host:port)."""
    config: dict[str, Any] = {
        "global": {"scrape_interval": scrape_interval, "evaluation_interval": evaluation_interval or scrape_interval},
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": list(targets)}]}],
    }
    if rule_files:
        # Absolute: Prometheus reads relative paths from its config file's directory, and a
        # path that matches no file loads no rules, silently.
        config["rule_files"] = [str(Path(p).resolve()) for p in rule_files]
    if alertmanagers:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": list(alertmanagers)}]}]}
    return config


class Prometheus(LoopbackService):
    """A running Prometheus with its own config and data directory."""

    @classmethod
    def start(
        cls,
        workdir: Path,
        targets: list[str],
        scrape_interval: str = "1s",
        port: int | None = None,
        rule_files: list[Path] | None = None,
        alertmanagers: list[str] | None = None,
        evaluation_interval: str | None = None,
        job: str = "modelmon",
        fresh: bool = False,
    ) -> Prometheus:
        """Scrape ``targets``, evaluate ``rule_files`` and alert to ``alertmanagers``
        (host:port). ``fresh`` empties the data directory first, so the figures are this
        run's own."""
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError(f"prometheus is not installed; {INSTALL_HINT}")
        workdir.mkdir(parents=True, exist_ok=True)
        if fresh:
            shutil.rmtree(workdir / "data", ignore_errors=True)
        config = workdir / "prometheus.yml"
        content = prometheus_config(targets, scrape_interval, rule_files, alertmanagers, evaluation_interval, job)
        config.write_text(yaml.safe_dump(content, sort_keys=False))
        port = port or free_port()
        command = [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'data'}",
                   f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"]
        return cls.launch("prometheus", command, workdir, port)

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector."""
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=10)
        body = response.json()
        if body.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {body}")
        return body["data"]["result"]

    def scalar(self, promql: str) -> float | None:
        """The single value of an instant query, or None when it returns nothing."""
        result = self.query(promql)
        if not result:
            return None
        if len(result) > 1:
            raise RuntimeError(f"query {promql!r} returned {len(result)} series, expected one")
        return float(result[0]["value"][1])

    def wait_for(self, promql: str, expected: float, timeout: float = 30.0) -> float | None:
        """Poll until ``promql`` equals ``expected``; return the last value seen."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.scalar(promql)
            if value is not None and abs(value - expected) < 1e-9:
                return value
            time.sleep(0.25)
        return value

    def targets_up(self) -> bool:
        return bool(self.query("up == 1"))
