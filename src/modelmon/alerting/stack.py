"""A local Alertmanager, for the alerting stack, the demo and the tests.

Alertmanager comes from the Debian package ``prometheus-alertmanager`` (0.25 on bookworm;
the binary is ``prometheus-alertmanager``, or ``alertmanager`` elsewhere). It listens on
loopback with clustering off (``--cluster.listen-address=`` empty). The Prometheus that
evaluates the rules and sends to it is ``modelmon.stack.prometheus.Prometheus``, started
with ``rule_files`` and ``alertmanagers``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx

from modelmon.stack.processes import LoopbackService, free_port

ALERTMANAGER_INSTALL_HINT = "install it with: sudo apt-get install --no-install-recommends prometheus-alertmanager"


def alertmanager_binary() -> str | None:
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


def amtool_binary() -> str | None:
    return shutil.which("amtool")


class Alertmanager(LoopbackService):
    """A running Alertmanager with its own data directory."""

    @classmethod
    def start(cls, config_file: Path, workdir: Path, port: int | None = None, log_level: str = "info") -> Alertmanager:
        binary = alertmanager_binary()
        if binary is None:
            raise FileNotFoundError(f"Alertmanager is not installed; {ALERTMANAGER_INSTALL_HINT}")
        workdir.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        command = [binary, f"--config.file={config_file}", f"--storage.path={workdir / 'data'}",
                   f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=", f"--log.level={log_level}"]
        return cls.launch("alertmanager", command, workdir, port)

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (API v2)."""
        return httpx.get(f"{self.url}/api/v2/alerts", timeout=10).json()

    def post_alerts(self, alerts: list[dict[str, Any]]) -> None:
        """Send alerts straight to Alertmanager, as Prometheus does."""
        httpx.post(f"{self.url}/api/v2/alerts", json=alerts, timeout=10).raise_for_status()

