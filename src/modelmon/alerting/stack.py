"""A local Alertmanager, and a Prometheus that evaluates the alert rules and sends to it.

Alertmanager comes from the Debian package ``prometheus-alertmanager`` (0.25 on bookworm;
the binary is ``prometheus-alertmanager``, or ``alertmanager`` elsewhere). It listens on
loopback with clustering off (``--cluster.listen-address=`` empty). The Prometheus is the
project's ``modelmon.stack.prometheus.Prometheus`` (same class, same queries), started here
with a configuration that also has an ``alerting:`` section.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from modelmon.stack.processes import free_port, stop_process, wait_for_http
from modelmon.stack.prometheus import Prometheus

ALERTMANAGER_INSTALL_HINT = "install it with: sudo apt-get install --no-install-recommends prometheus-alertmanager"


def alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def amtool_binary() -> str | None:
    return shutil.which("amtool")


@dataclass
class Alertmanager:
    """A running Alertmanager with its own data directory."""

    workdir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, config_file: Path, workdir: Path, port: int | None = None, log_level: str = "info") -> Alertmanager:
        binary = alertmanager_binary()
        if binary is None:
            raise FileNotFoundError(f"Alertmanager is not installed; {ALERTMANAGER_INSTALL_HINT}")
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        log_path = workdir / "alertmanager.log"
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config_file}",
                f"--storage.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                f"--log.level={log_level}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=log_path.open("wb"),
        )
        instance = cls(workdir=workdir, port=port, process=process, log_path=log_path)
        try:
            wait_for_http(f"{instance.url}/-/ready", timeout=30, process=process)
        except Exception:
            instance.stop()
            raise RuntimeError(f"alertmanager did not start; log:\n{log_path.read_text()[-2000:]}") from None
        return instance

    def stop(self) -> None:
        stop_process(self.process)

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (API v2)."""
        return httpx.get(f"{self.url}/api/v2/alerts", timeout=10).json()

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Send alerts straight to Alertmanager, as Prometheus does."""
        httpx.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=10).raise_for_status()


def start_prometheus(
    workdir: Path,
    targets: list[str],
    rule_files: list[Path],
    alertmanagers: list[str],
    *,
    scrape_interval: str = "15s",
    evaluation_interval: str | None = None,
    job: str = "modelmon",
    port: int | None = None,
    fresh: bool = False,
) -> Prometheus:
    """Prometheus on loopback with the rules loaded and alerting to ``alertmanagers``."""
    return Prometheus.start(
        workdir, targets, scrape_interval=scrape_interval, port=port, rule_files=rule_files,
        alertmanagers=alertmanagers, evaluation_interval=evaluation_interval, job=job, fresh=fresh,
    )  # fmt: skip
