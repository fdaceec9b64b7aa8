"""``modelmon notify-bridge``: Alertmanager and Grafana webhooks to any Apprise URL.

Alertmanager (``POST /alertmanager/<channel>``) and Grafana (``POST /grafana/<channel>``)
send their webhook JSON here; the bridge turns each payload into one readable message
(state, alert, model, version, feature, value, threshold, description, runbook link) and
sends it to every Apprise URL of that channel: SMS through Twilio or SNS, Teams through
workflows, X, ntfy, Pushover and the rest of Apprise's services.

A payload is answered 202 as soon as it is queued, so a slow service never holds up
Alertmanager. Each delivery is tried up to ``attempts`` times, waiting ``retry_seconds``
and then twice as long each time; the bridge's own ``/metrics`` counts payloads,
attempts, retries, deliveries and the deliveries given up.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from modelmon.alerting import config as cfg

log = logging.getLogger("modelmon.alerting.bridge")

DEFAULT_CHANNEL = "default"
SOURCES = ("alertmanager", "grafana")
#: Labels shown on the "where" line of a message, in this order.
WHERE_LABELS = ("model", "version", "feature", "method", "experiment", "run", "instance")
WORKERS = 4


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    status: str  # firing or resolved
    severity: str


def split_urls(text: str) -> list[str]:
    """Apprise URLs separated by spaces, commas or new lines."""
    return [u for u in re.split(r"[\s,]+", text.strip()) if u]


def _value(alert: dict[str, Any]) -> str:
    annotations = alert.get("annotations") or {}
    value = annotations.get("value")
    if value and "{{" not in value:
        return str(value)
    values = alert.get("values") or {}  # Grafana: the value of each query by refId
    if "A" in values:
        return f"{values['A']:.4g}" if isinstance(values["A"], (int, float)) else str(values["A"])
    return str(alert.get("valueString") or "")


def format_alert(alert: dict[str, Any]) -> str:
    labels = alert.get("labels") or {}
    annotations = alert.get("annotations") or {}
    state = "RESOLVED" if alert.get("status") == "resolved" else "FIRING"
    head = f"{state} {labels.get('alertname', 'alert')}"
    if labels.get("severity"):
        head += f" ({labels['severity']})"
    if annotations.get("summary"):
        head += f": {annotations['summary']}"
    lines = [head]
    where = "  ".join(f"{label}: {labels[label]}" for label in WHERE_LABELS if labels.get(label))
    if where:
        lines.append(where)
    value, threshold = _value(alert), annotations.get("threshold")
    if value or threshold:
        lines.append("  ".join(part for part in (f"value: {value}" if value else "",
                                                  f"threshold: {threshold}" if threshold else "") if part))
    if annotations.get("description"):
        lines.append(annotations["description"])
    runbook = annotations.get("runbook_url") or alert.get("dashboardURL") or ""
    if runbook:
        lines.append(f"runbook: {runbook}")
    return "\n".join(lines)


def format_payload(payload: dict[str, Any]) -> Message:
    """One message for an Alertmanager (version 4) or Grafana webhook payload."""
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts or not all(isinstance(a, dict) for a in alerts):
        raise ValueError("the payload has no alerts list")
    status = "resolved" if payload.get("status") == "resolved" else "firing"
    common = payload.get("commonLabels") or {}
    firing = [a for a in alerts if a.get("status") != "resolved"]
    resolved = [a for a in alerts if a.get("status") == "resolved"]
    name = common.get("alertname") or (alerts[0].get("labels") or {}).get("alertname", "alerts")
    title = f"[{status.upper()}{':' + str(len(firing)) if status == 'firing' else ''}] {name}"
    for label in ("model", "version", "experiment", "run"):
        if common.get(label):
            title += f" {label} {common[label]}"
    body = "\n\n".join(format_alert(a) for a in firing + resolved)
    severities = [(a.get("labels") or {}).get("severity", "") for a in firing]
    severity = next((s for s in ("critical", "warning", "info") if s in severities), "info")
    return Message(title=title, body=body, status=status, severity=severity)


def apprise_send(url: str, message: Message) -> bool:
    """Send ``message`` to one Apprise URL; False when Apprise reports a failure."""
    import apprise

    notifier = apprise.Apprise()
    if not notifier.add(url):
        return False
    kind = apprise.NotifyType.SUCCESS if message.status == "resolved" else {
        "critical": apprise.NotifyType.FAILURE, "warning": apprise.NotifyType.WARNING,
    }.get(message.severity, apprise.NotifyType.INFO)
    return bool(notifier.notify(title=message.title, body=message.body, notify_type=kind))


def check_urls(targets: dict[str, list[str]]) -> None:
    """Fail at start, naming the channel (never the URL: it holds credentials), when Apprise
    cannot read a URL."""
    import apprise

    for channel, urls in targets.items():
        if not urls:
            raise cfg.AlertingConfigError(f"channel {channel}: no Apprise URL given")
        for i, url in enumerate(urls):
            if not apprise.Apprise().add(url):
                scheme = url.split("://", 1)[0] if "://" in url else "?"
                raise cfg.AlertingConfigError(
                    f"channel {channel}: URL {i + 1} ({scheme}://...) is not an Apprise URL Apprise can use; "
                    "see https://github.com/caronc/apprise/wiki"
                )


@dataclass
class _Delivery:
    channel: str
    url: str
    message: Message
    attempt: int = 1


class NotifyBridge:
    """The bridge's state: its targets, queue, metrics and Starlette app."""

    def __init__(
        self,
        targets: dict[str, list[str]],
        *,
        attempts: int = 5,
        retry_seconds: float = 2.0,
        send: Callable[[str, Message], bool] = apprise_send,
    ) -> None:
        self.targets = targets
        self.attempts = attempts
        self.retry_seconds = retry_seconds
        self.send = send
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.payloads = Counter("modelmon_bridge_payloads_total", "Webhook payloads received.", ["source", "outcome"], registry=r)
        self.attempts_total = Counter("modelmon_bridge_delivery_attempts_total", "Delivery attempts to an Apprise URL.",
                                      ["channel", "outcome"], registry=r)
        self.retries = Counter("modelmon_bridge_retries_total", "Deliveries tried again after a failure.", ["channel"], registry=r)
        self.notifications = Counter("modelmon_bridge_notifications_total",
                                     "Messages delivered, or given up after every attempt failed.",
                                     ["channel", "outcome"], registry=r)
        self.queue_depth = Gauge("modelmon_bridge_queue_depth", "Deliveries waiting to be tried.", registry=r)
        for source in SOURCES:
            for outcome in ("accepted", "invalid", "unknown_channel"):
                self.payloads.labels(source, outcome)
        for channel in targets:
            self.retries.labels(channel)
            for outcome in ("ok", "error"):
                self.attempts_total.labels(channel, outcome)
            for outcome in ("delivered", "failed"):
                self.notifications.labels(channel, outcome)
        self._queue: asyncio.Queue[_Delivery] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route("/alertmanager", self.receive, methods=["POST"]),
                Route("/alertmanager/{channel}", self.receive, methods=["POST"]),
                Route("/grafana", self.receive, methods=["POST"]),
                Route("/grafana/{channel}", self.receive, methods=["POST"]),
                Route("/metrics", self.metrics),
                Route("/-/healthy", self.healthy),
            ],
            lifespan=self._lifespan,
        )

    @asynccontextmanager
    async def _lifespan(self, app: Starlette):
        self._queue = asyncio.Queue()
        workers = [asyncio.create_task(self._worker()) for _ in range(WORKERS)]
        try:
            yield
        finally:
            for task in [*workers, *self._pending]:
                task.cancel()
            await asyncio.gather(*workers, *self._pending, return_exceptions=True)

    async def healthy(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def receive(self, request: Request) -> Response:
        source = request.url.path.strip("/").split("/", 1)[0]
        channel = request.path_params.get("channel", DEFAULT_CHANNEL)
        if channel not in self.targets:
            self.payloads.labels(source, "unknown_channel").inc()
            known = ", ".join(sorted(self.targets)) or "none"
            return JSONResponse({"error": f"unknown channel {channel!r} (channels: {known})"}, status_code=404)
        try:
            payload = await request.json()
            if not isinstance(payload, dict):
                raise ValueError("the payload is not a JSON object")
            message = format_payload(payload)
        except ValueError as exc:  # json.JSONDecodeError is a ValueError
            self.payloads.labels(source, "invalid").inc()
            return JSONResponse({"error": f"not an {source} webhook payload: {exc}"}, status_code=400)
        self.payloads.labels(source, "accepted").inc()
        assert self._queue is not None
        for url in self.targets[channel]:
            self._enqueue(_Delivery(channel, url, message))
        return JSONResponse({"queued": len(self.targets[channel])}, status_code=202)

    def _enqueue(self, delivery: _Delivery) -> None:
        assert self._queue is not None
        self._queue.put_nowait(delivery)
        self.queue_depth.inc()

    async def _retry_later(self, delivery: _Delivery, delay: float) -> None:
        await asyncio.sleep(delay)
        self._enqueue(delivery)

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            delivery = await self._queue.get()
            self.queue_depth.dec()
            try:
                ok = await asyncio.to_thread(self.send, delivery.url, delivery.message)
            except Exception:  # a notifier bug must not kill the worker
                log.exception("delivery to channel %s raised", delivery.channel)
                ok = False
            self.attempts_total.labels(delivery.channel, "ok" if ok else "error").inc()
            if ok:
                self.notifications.labels(delivery.channel, "delivered").inc()
            elif delivery.attempt < self.attempts:
                delay = self.retry_seconds * 2 ** (delivery.attempt - 1)
                log.warning("delivery to channel %s failed (attempt %d of %d); retrying in %.1f s",
                            delivery.channel, delivery.attempt, self.attempts, delay)
                self.retries.labels(delivery.channel).inc()
                delivery.attempt += 1
                task = asyncio.create_task(self._retry_later(delivery, delay))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
            else:
                log.error("delivery to channel %s failed %d times; giving up", delivery.channel, self.attempts)
                self.notifications.labels(delivery.channel, "failed").inc()


def targets_from_config(config: cfg.AlertingConfig) -> dict[str, list[str]]:
    """The Apprise URLs of every ``apprise`` channel, read now from their secret references."""
    targets = {}
    for index, channel in enumerate(config.channels):
        if isinstance(channel, cfg.AppriseChannel):
            targets[channel.name] = split_urls(channel.urls.resolve(f"channels[{index}].urls"))
    return targets
