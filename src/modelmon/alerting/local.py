"""Alerting on one machine, for the demo: Alertmanager, a local webhook sink that records
what arrives, and a Prometheus that evaluates the rules and sends to that Alertmanager.

    with LocalAlerting(home / "alerting", recording_windows=["10m"]) as alerting:
        prometheus = alerting.start_prometheus([f"127.0.0.1:{port}"])
        ...                                       # drifted traffic
        note = alerting.wait_for("ModelmonFeatureDrift", timeout=60)
        print(note.text)                          # what the sink received, readable

Rules use a short ``for`` and Alertmanager short group timings so an alert arrives within
seconds of its condition. Everything started is stopped on leaving the block.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from modelmon.alerting import config as cfg
from modelmon.alerting.bridge import format_payload
from modelmon.alerting.export import Export, export
from modelmon.alerting.stack import Alertmanager, alertmanager_binary
from modelmon.stack.prometheus import Prometheus, prometheus_binary

SINK_CHANNEL = "local-sink"


@dataclass
class Notification:
    """One webhook payload the sink received."""

    payload: dict[str, Any]
    received_at: float = field(default_factory=time.time)

    @property
    def status(self) -> str:
        return str(self.payload.get("status", ""))

    @property
    def alertname(self) -> str:
        return str((self.payload.get("commonLabels") or {}).get("alertname", ""))

    @property
    def alerts(self) -> list[dict[str, Any]]:
        return list(self.payload.get("alerts") or [])

    @property
    def title(self) -> str:
        return format_payload(self.payload).title

    @property
    def text(self) -> str:
        """The notification as a person reads it (the notify-bridge's format)."""
        message = format_payload(self.payload)
        return f"{message.title}\n{message.body}"


class WebhookSink:
    """A tiny HTTP server on loopback that records every JSON body POSTed to it."""

    def __init__(self) -> None:
        self.received: list[Notification] = []
        self._changed = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = {"raw": body.decode(errors="replace")}
                with sink._changed:
                    sink.received.append(Notification(payload))
                    sink._changed.notify_all()
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread = threading.Thread(target=self._server.serve_forever, name="modelmon-webhook-sink", daemon=True)
        self._thread.start()

    def wait_for(self, alertname: str | None = None, status: str = "firing", timeout: float = 60.0) -> Notification | None:
        """The first notification (of ``alertname``, when given) with ``status``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for note in self.received:
                    if note.status == status and (alertname is None or note.alertname == alertname):
                        return note
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._changed.wait(remaining)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class LocalAlerting:
    """Alertmanager routing every alert to an in-process webhook sink, and a Prometheus
    (started on request) that evaluates the exported rules and sends to it."""

    def __init__(
        self,
        workdir: Path | str,
        *,
        config: cfg.AlertingConfig | None = None,
        for_: str = "5s",
        group_wait: str = "1s",
        group_interval: str = "2s",
        recording_windows: list[str] | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.base_config = config or cfg.AlertingConfig()
        self.for_ = cfg.check_duration(for_)
        self.group_wait, self.group_interval = cfg.check_duration(group_wait), cfg.check_duration(group_interval)
        self.recording_windows = recording_windows
        self.sink: WebhookSink | None = None
        self.alertmanager: Alertmanager | None = None
        self.prometheus: Prometheus | None = None
        self.exported: Export | None = None

    @staticmethod
    def available() -> bool:
        """Whether Prometheus and Alertmanager are installed."""
        return prometheus_binary() is not None and alertmanager_binary() is not None

    def config(self, sink_url: str) -> cfg.AlertingConfig:
        """The base configuration with every alert routed to the sink, fast."""
        data = self.base_config.model_dump(by_alias=True, exclude_none=True, mode="json")
        data["channels"] = [{"name": SINK_CHANNEL, "type": "webhook", "url": sink_url}]
        data["routing"] = {**data.get("routing", {}), "default": [SINK_CHANNEL], "severity": {}, "models": {},
                           "group_wait": self.group_wait, "group_interval": self.group_interval,
                           "repeat_interval": "1h", "resolve_timeout": "1m"}
        data.pop("smtp", None)
        builtins = data.setdefault("builtins", {})
        builtins["override_for"] = self.for_
        for value in builtins.values():
            if isinstance(value, dict):
                value["channels"] = []
        data["rules"] = [{**r, "channels": []} for r in data.get("rules", [])]
        if self.recording_windows:
            data.setdefault("prometheus", {})["recording_windows"] = list(self.recording_windows)
        return cfg.parse_config(data, "LocalAlerting configuration")

    def __enter__(self) -> LocalAlerting:
        try:
            self.sink = WebhookSink()
            settings = self.config(self.sink.url)
            self.settings = settings
            self.exported = export(settings, self.workdir / "config")
            assert self.exported.alertmanager_config is not None
            self.alertmanager = Alertmanager.start(self.exported.alertmanager_config, self.workdir / "alertmanager")
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start_prometheus(
        self, targets: list[str], *, scrape_interval: str = "1s", evaluation_interval: str = "1s",
        extra_rule_files: list[Path] | None = None, port: int | None = None,
    ) -> Prometheus:
        """A fresh Prometheus scraping ``targets`` with the alert and drift rules, sending to
        this Alertmanager; stopped with the rest."""
        assert self.exported is not None and self.alertmanager is not None, "use LocalAlerting as a context manager"
        self.prometheus = Prometheus.start(
            self.workdir / "prometheus", targets, scrape_interval=scrape_interval, port=port,
            rule_files=[*self.exported.rule_files, *(extra_rule_files or [])],
            alertmanagers=[f"127.0.0.1:{self.alertmanager.port}"], evaluation_interval=evaluation_interval,
            job=self.settings.prometheus.job, fresh=True,
        )
        return self.prometheus

    @property
    def notifications(self) -> list[Notification]:
        """Every notification the sink received so far."""
        return list(self.sink.received) if self.sink else []

    def wait_for(self, alertname: str | None = None, status: str = "firing", timeout: float = 60.0) -> Notification | None:
        """Wait for a notification to reach the sink; None on timeout."""
        assert self.sink is not None
        return self.sink.wait_for(alertname, status, timeout)

    def __exit__(self, *exc: object) -> None:
        for part in (self.prometheus, self.alertmanager, self.sink):
            if part is not None:
                with contextlib.suppress(Exception):  # stop the rest regardless
                    part.stop()
        self.prometheus = self.alertmanager = self.sink = None
