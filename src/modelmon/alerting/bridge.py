"""``modelmon notify-bridge``: Alertmanager and Grafana webhooks to any Apprise URL.

Alertmanager (``POST /alertmanager/<channel>``) and Grafana (``POST /grafana/<channel>``)
send their webhook JSON here; the bridge turns each payload into one readable message
(state, alert, model, version, feature, value, threshold, description, runbook link) and
sends it to every Apprise URL of that channel: SMS through Twilio or SNS, Teams through
workflows, X, ntfy, Pushover and the rest of Apprise's services.

The bridge can text people, so it is guarded and bounded:

- **Token.** With a token configured (``bridge.token`` in modelmon.yaml, ``--token-file``
  or ``$MODELMON_BRIDGE_TOKEN``) every webhook needs ``Authorization: Bearer <token>``
  (compared in constant time, never logged; 401 without it). Without one the bridge
  listens on loopback only.
- **Bounds.** Bodies above ``max_body_bytes`` get 413. Each channel holds at most
  ``queue_size`` deliveries (waiting, being sent or waiting to retry); beyond that new ones
  are dropped and counted. Workers take the channels in turn, so a flooded channel does
  not delay the others. A payload with more than ``max_alerts`` alerts is spelled out for
  the first ``max_alerts`` and summarised for the rest, in one message.
- **Rate limit per channel.** At most ``messages`` messages in any window of ``per``; the
  messages held back are merged into one digest ("12 more alerts for model churn in the
  last 10 minutes"), sent as soon as the window has room. A message that resolves an alert
  whose firing message was sent is not held: it goes at once, past the limit if need be
  (within an allowance of another ``messages`` per window).

A payload is answered 202 as soon as it is handled, so a slow service never holds up
Alertmanager. Each delivery is tried up to ``attempts`` times, waiting ``retry_seconds``
and then twice as long each time; the bridge's own ``/metrics`` counts all of the above.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import itertools
import json
import logging
import os
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from modelmon.alerting import config as cfg
from modelmon.errors import MalformedRequestError, PayloadTooLargeError
from modelmon.http import read_limited_body
from modelmon.secrets import bearer_matches

log = logging.getLogger("modelmon.alerting.bridge")

DEFAULT_CHANNEL = "default"
SOURCES = ("alertmanager", "grafana")
#: Labels shown on the "where" line of a message, in this order.
WHERE_LABELS = ("model", "version", "feature", "method", "experiment", "run", "instance", "channel")
WORKERS = 4
#: The token's environment variable, when neither modelmon.yaml nor --token-file gives one.
TOKEN_ENV = "MODELMON_BRIDGE_TOKEN"
#: Distinct alerts a channel's digest lists (more are counted only), and alerts per channel
#: remembered as announced (firing sent), oldest forgotten first: both bound memory.
DIGEST_ALERTS = 1000
ANNOUNCED_ALERTS = 10_000
PAYLOAD_OUTCOMES = ("accepted", "invalid", "unknown_channel", "unauthorized", "too_large")
#: Longest title and body a message keeps (longer ones are cut, saying so): with queue_size,
#: this bounds the memory a channel's queue can take.
MAX_TITLE_CHARS = 500
MAX_BODY_CHARS = 32_000


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    status: str  # firing or resolved
    severity: str


@dataclass(frozen=True)
class AlertState:
    """One alert of a payload, as the rate limit and the digest see it."""

    key: str  # the alert's identity: its fingerprint, else a hash of its labels
    name: str
    where: str  # "model churn feature amount"
    model: str
    status: str  # firing or resolved
    severity: str


@dataclass(frozen=True)
class Window:
    """At most ``messages`` messages in any ``seconds``."""

    messages: int
    seconds: float


def split_urls(text: str) -> list[str]:
    """Apprise URLs separated by spaces, commas or new lines."""
    return [u for u in re.split(r"[\s,]+", text.strip()) if u]


# -- messages ---------------------------------------------------------------------------


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
    # ModelmonFeatureDrift's method is an annotation (a label would change the alert's identity).
    shown = labels | ({"method": annotations["method"]} if not labels.get("method") and annotations.get("method") else {})
    where = "  ".join(f"{label}: {shown[label]}" for label in WHERE_LABELS if shown.get(label))
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


def _alerts(payload: dict[str, Any]) -> list[dict[str, Any]]:
    alerts = payload.get("alerts")
    if not isinstance(alerts, list) or not alerts or not all(isinstance(a, dict) for a in alerts):
        raise ValueError("the payload has no alerts list")
    for alert in alerts:
        for key in ("labels", "annotations"):
            if not isinstance(alert.get(key) or {}, dict):
                raise ValueError(f"an alert's {key} is not an object")
    return alerts


def _names(counts: dict[str, int], most: int = 5) -> str:
    """``a (3), b (2) and 4 more`` for the largest counts."""
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    text = ", ".join(f"{name} ({n})" for name, n in ordered[:most])
    return text + (f" and {len(ordered) - most} more" if len(ordered) > most else "")


def format_payload(payload: dict[str, Any], max_alerts: int | None = None) -> Message:
    """One message for an Alertmanager (version 4) or Grafana webhook payload. With
    ``max_alerts``, the alerts beyond it (and those the sender truncated) are summarised
    in one closing paragraph instead of spelled out."""
    alerts = _alerts(payload)
    status = "resolved" if payload.get("status") == "resolved" else "firing"
    common = payload.get("commonLabels") or {}
    firing = [a for a in alerts if a.get("status") != "resolved"]
    resolved = [a for a in alerts if a.get("status") == "resolved"]
    name = common.get("alertname") or (alerts[0].get("labels") or {}).get("alertname", "alerts")
    title = f"[{status.upper()}{':' + str(len(firing)) if status == 'firing' else ''}] {name}"
    for label in ("model", "version", "experiment", "run"):
        if common.get(label):
            title += f" {label} {common[label]}"
    ordered = firing + resolved
    shown = ordered if max_alerts is None else ordered[:max_alerts]
    paragraphs = [format_alert(a) for a in shown]
    rest = ordered[len(shown):]
    truncated = payload.get("truncatedAlerts")
    truncated = truncated if isinstance(truncated, int) and truncated > 0 else 0
    if rest or truncated:
        names: dict[str, int] = {}
        models: dict[str, int] = {}
        for alert in rest:
            labels = alert.get("labels") or {}
            names[str(labels.get("alertname", "alert"))] = names.get(str(labels.get("alertname", "alert")), 0) + 1
            if labels.get("model"):
                models[str(labels["model"])] = models.get(str(labels["model"]), 0) + 1
        n_firing = sum(1 for a in rest if a.get("status") != "resolved")
        summary = f"... and {len(rest) + truncated} more alerts not shown"
        if rest:
            summary += f" ({n_firing} firing, {len(rest) - n_firing} resolved): {_names(names)}"
            if models:
                summary += f"; models {_names(models)}"
        if truncated:
            summary += f" ({truncated} left out by the sender)"
        paragraphs.append(summary)
    severities = [(a.get("labels") or {}).get("severity", "") for a in firing]
    severity = next((s for s in ("critical", "warning", "info") if s in severities), "info")
    return Message(title=title, body="\n\n".join(paragraphs), status=status, severity=severity)


def cut(message: Message) -> Message:
    """The message within MAX_TITLE_CHARS and MAX_BODY_CHARS, saying where it was cut."""
    if len(message.title) <= MAX_TITLE_CHARS and len(message.body) <= MAX_BODY_CHARS:
        return message
    note = f"\n\n... (cut at {MAX_BODY_CHARS} characters)"
    body = message.body if len(message.body) <= MAX_BODY_CHARS else message.body[: MAX_BODY_CHARS - len(note)] + note
    return Message(title=message.title[:MAX_TITLE_CHARS], body=body, status=message.status, severity=message.severity)


def alert_states(payload: dict[str, Any]) -> list[AlertState]:
    """Each alert of a payload: its identity, name, where, state and severity."""
    states = []
    for alert in _alerts(payload):
        labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
        fingerprint = alert.get("fingerprint")
        identity = fingerprint if isinstance(fingerprint, str) and fingerprint else json.dumps(sorted(labels.items()))
        key = hashlib.blake2b(identity.encode(), digest_size=8).hexdigest()
        where = " ".join(f"{label} {labels[label]}" for label in WHERE_LABELS[:4] if labels.get(label))
        states.append(AlertState(
            key=key, name=labels.get("alertname", "alert")[:200], where=where[:200], model=labels.get("model", "")[:100],
            status="resolved" if alert.get("status") == "resolved" else "firing", severity=labels.get("severity", ""),
        ))
    return states


def _span(seconds: float) -> str:
    """``10 minutes``, ``45 seconds``, ``2 hours``."""
    for unit, size in (("hour", 3600), ("minute", 60)):
        if seconds >= 1.5 * size:
            n = round(seconds / size)
            return f"{n} {unit}s"
    n = max(1, round(seconds))
    return f"{n} second{'s' if n != 1 else ''}"


@dataclass
class _Held:
    state: AlertState
    firing: int = 0
    resolved: int = 0


@dataclass
class Digest:
    """The messages a channel's rate limit held back, merged: how many alerts, and the
    latest state of each (at most DIGEST_ALERTS listed)."""

    started: float
    alerts: OrderedDict[str, _Held] = field(default_factory=OrderedDict)
    count: int = 0  # alert notifications held (an alert re-sent 3 times counts 3)
    messages: int = 0
    unlisted: int = 0

    def add(self, states: list[AlertState]) -> None:
        self.messages += 1
        for state in states:
            self.count += 1
            held = self.alerts.get(state.key)
            if held is None:
                if len(self.alerts) >= DIGEST_ALERTS:
                    self.unlisted += 1
                    continue
                held = self.alerts[state.key] = _Held(state)
            held.state = state
            if state.status == "firing":
                held.firing += 1
            else:
                held.resolved += 1

    def update(self, states: list[AlertState]) -> None:
        """Later news of alerts held here (a resolved message sent past the limit)."""
        for state in states:
            if state.key in self.alerts:
                self.alerts[state.key].state = state

    def states(self) -> list[AlertState]:
        return [held.state for held in self.alerts.values()]

    def message(self, now: float, channel: str, window: Window, max_lines: int) -> Message:
        models = sorted({h.state.model for h in self.alerts.values() if h.state.model})
        if len(models) == 1:
            where = f" for model {models[0]}"
        elif models:
            where = f" for models {', '.join(models[:3])}" + (f" and {len(models) - 3} more" if len(models) > 3 else "")
        else:
            where = ""
        plural = "s" if self.count != 1 else ""
        headline = f"{self.count} more alert{plural}{where} in the last {_span(now - self.started)}"
        lines = [f"Held back by the rate limit of channel {channel} ({window.messages} messages per "
                 f"{_span(window.seconds)}); each alert as it is now, still firing first:"]
        held = list(self.alerts.values())
        held.sort(key=lambda h: h.state.status != "firing")  # still firing first
        for h in held[:max_lines]:
            counts = ", ".join(part for part in (f"{h.firing} firing" if h.firing else "",
                                                  f"{h.resolved} resolved" if h.resolved else "") if part)
            lines.append(f"{h.state.status.upper()} {h.state.name}{' ' + h.state.where if h.state.where else ''} ({counts})")
        more = len(held) - min(len(held), max_lines) + self.unlisted
        if more:
            lines.append(f"... and {more} more alerts")
        firing = [h.state for h in held if h.state.status == "firing"]
        severity = next((s for s in ("critical", "warning", "info") if s in {f.severity for f in firing}), "info")
        return Message(title=f"[DIGEST] {headline}", body="\n".join(lines),
                       status="firing" if firing else "resolved", severity=severity)


@dataclass
class ChannelLimit:
    """One channel's rate limit: when its messages went, what is held, what people know."""

    window: Window
    sent: deque[float] = field(default_factory=deque)
    #: Resolved messages sent past the limit: their own allowance of ``messages`` per window.
    past_limit: deque[float] = field(default_factory=deque)
    digest: Digest | None = None
    #: Alerts whose firing message (or a digest listing them as firing) was sent.
    announced: OrderedDict[str, None] = field(default_factory=OrderedDict)

    def _room(self, times: deque[float], now: float) -> bool:
        while times and times[0] <= now - self.window.seconds:
            times.popleft()
        return len(times) < self.window.messages

    def has_room(self, now: float) -> bool:
        return self._room(self.sent, now)

    def may_pass(self, now: float, states: list[AlertState]) -> bool:
        """A message goes past the limit when it resolves an alert people were told is
        firing, within an allowance of another ``messages`` per window."""
        return self.resolves_announced(states) and self._room(self.past_limit, now)

    def resolves_announced(self, states: list[AlertState]) -> bool:
        """Whether the payload says an alert resolved that people were told is firing."""
        return any(s.status == "resolved" and s.key in self.announced for s in states)

    def note_sent(self, now: float, states: list[AlertState]) -> None:
        self.sent.append(now)
        for state in states:
            if state.status == "firing":
                self.announced[state.key] = None
                self.announced.move_to_end(state.key)
                if len(self.announced) > ANNOUNCED_ALERTS:
                    self.announced.popitem(last=False)
            else:
                self.announced.pop(state.key, None)


# -- the token ----------------------------------------------------------------------------


def resolve_token(settings: cfg.AlertingConfig, token_file: Path | None = None) -> tuple[str | None, str]:
    """The bridge's token and where it came from: ``--token-file``, else ``bridge.token``,
    else ``$MODELMON_BRIDGE_TOKEN``; (None, "none") when none is configured. A file or
    variable that is empty is an error, never an open bridge."""
    if token_file is not None:
        ref = cfg.SecretRef(source="file", name=str(token_file))
        value = ref.resolve("--token-file")
        if not value:
            raise cfg.AlertingConfigError(f"--token-file: {token_file} is empty")
        return value, f"--token-file {token_file}"
    if settings.bridge.token is not None:
        return settings.bridge.resolve_token(), f"bridge.token ({settings.bridge.token})"
    if TOKEN_ENV in os.environ:
        value = os.environ[TOKEN_ENV].strip()
        if not value:
            raise cfg.AlertingConfigError(f"${TOKEN_ENV} is set but empty")
        return value, f"${TOKEN_ENV}"
    return None, "none"


def is_loopback(host: str) -> bool:
    host = host.strip().strip("[]")
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # another name may resolve to any interface


def check_listen(host: str, token: str | None) -> None:
    """Without a token only loopback is allowed: anyone reaching the port could otherwise
    send messages to every channel."""
    if token is None and not is_loopback(host):
        raise cfg.AlertingConfigError(
            f"refusing to listen on {host} without a token: anyone who can reach the port could send messages "
            f"to every channel (SMS included) and forge resolved notifications. Give a token (bridge.token_file in "
            f"modelmon.yaml, which `modelmon alerts export` also gives Alertmanager and Grafana; or --token-file, or "
            f"${TOKEN_ENV}), or listen on 127.0.0.1"
        )


# -- delivery -------------------------------------------------------------------------------


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
    """The bridge's state: its targets, token, rate limits, queue, metrics and Starlette app."""

    def __init__(
        self,
        targets: dict[str, list[str]],
        *,
        attempts: int = 5,
        retry_seconds: float = 2.0,
        send: Callable[[str, Message], bool] = apprise_send,
        token: str | None = None,
        max_body_bytes: int = 1_048_576,
        queue_size: int = 1000,
        max_alerts: int = 20,
        rate_limits: dict[str, Window] | None = None,
        default_rate_limit: Window | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.targets = targets
        self.attempts = attempts
        self.retry_seconds = retry_seconds
        self.send = send
        self._token = token
        self.max_body_bytes = max_body_bytes
        self.queue_size = queue_size
        self.max_alerts = max_alerts
        self.clock = clock
        default = default_rate_limit or Window(**_window_args(cfg.RateLimit(**cfg.DEFAULT_BRIDGE_RATE_LIMIT)))
        self.limits = {channel: ChannelLimit((rate_limits or {}).get(channel, default)) for channel in targets}
        #: How often held digests are looked at: a twentieth of the shortest window, 50 ms to 1 s.
        shortest = min((limit.window.seconds for limit in self.limits.values()), default=20.0)
        self.tick = min(1.0, max(0.05, shortest / 20))

        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.payloads = Counter("modelmon_bridge_payloads_total", "Webhook payloads received.", ["source", "outcome"], registry=r)
        self.attempts_total = Counter("modelmon_bridge_delivery_attempts_total", "Delivery attempts to an Apprise URL.",
                                      ["channel", "outcome"], registry=r)
        self.retries = Counter("modelmon_bridge_retries_total", "Deliveries tried again after a failure.", ["channel"], registry=r)
        self.notifications = Counter("modelmon_bridge_notifications_total",
                                     "Messages delivered, or given up after every attempt failed.",
                                     ["channel", "outcome"], registry=r)
        self.dropped = Counter("modelmon_bridge_dropped_total",
                               "Deliveries dropped because the delivery queue was full.", ["channel"], registry=r)
        self.held = Counter("modelmon_bridge_rate_limited_total",
                            "Messages held back by the channel's rate limit (merged into a digest).", ["channel"], registry=r)
        self.digests = Counter("modelmon_bridge_digests_total", "Digests of held-back messages sent.", ["channel"], registry=r)
        self.past_limit = Counter("modelmon_bridge_resolved_past_limit_total",
                                  "Resolved messages sent past the rate limit (their alert's firing message was sent).",
                                  ["channel"], registry=r)
        self.truncated = Counter("modelmon_bridge_alerts_summarised_total",
                                 "Alerts summarised rather than spelled out (more than max_alerts in a payload).",
                                 ["channel"], registry=r)
        self.digest_alerts = Gauge("modelmon_bridge_digest_alerts", "Alert notifications waiting in the channel's digest.",
                                   ["channel"], registry=r)
        self.queue_depth = Gauge("modelmon_bridge_queue_depth",
                                 "Deliveries the channel holds: waiting, being sent or waiting to retry.",
                                 ["channel"], registry=r)
        Gauge("modelmon_bridge_queue_capacity", "Most deliveries a channel holds at once (bridge.queue_size).",
              registry=r).set(queue_size)
        for source in SOURCES:
            for outcome in PAYLOAD_OUTCOMES:
                self.payloads.labels(source, outcome)
        for channel in targets:
            for counter in (self.retries, self.dropped, self.held, self.digests, self.past_limit, self.truncated):
                counter.labels(channel)
            self.digest_alerts.labels(channel)
            self.queue_depth.labels(channel)
            for outcome in ("ok", "error"):
                self.attempts_total.labels(channel, outcome)
            for outcome in ("delivered", "failed"):
                self.notifications.labels(channel, outcome)
        #: Each channel's deliveries waiting for a worker, taken in turn so that a flooded
        #: channel does not delay the others; ``_held`` counts what a channel holds (waiting,
        #: being sent, waiting to retry), at most queue_size.
        self._waiting: dict[str, deque[_Delivery]] = {channel: deque() for channel in targets}
        self._held = dict.fromkeys(targets, 0)
        self._turn = itertools.cycle(list(targets))
        self._available: asyncio.Semaphore | None = None
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

    def __repr__(self) -> str:  # never the token
        return f"NotifyBridge(channels={sorted(self.targets)}, token={'set' if self._token else 'none'})"

    @asynccontextmanager
    async def _lifespan(self, app: Starlette):
        self._available = asyncio.Semaphore(0)  # one for each delivery waiting
        tasks = [asyncio.create_task(self._worker()) for _ in range(WORKERS)]
        tasks.append(asyncio.create_task(self._flush_digests()))
        try:
            yield
        finally:
            held = {c: limit.digest.count for c, limit in self.limits.items() if limit.digest is not None}
            if held:
                log.warning("stopping with held alerts not sent: %s", ", ".join(f"{c}: {n}" for c, n in held.items()))
            for task in [*tasks, *self._pending]:
                task.cancel()
            await asyncio.gather(*tasks, *self._pending, return_exceptions=True)

    async def healthy(self, request: Request) -> Response:
        return PlainTextResponse("ok")

    async def metrics(self, request: Request) -> Response:
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)

    async def receive(self, request: Request) -> Response:
        source = request.url.path.strip("/").split("/", 1)[0]
        if self._token is not None and not bearer_matches(request.headers.get("authorization", ""), self._token):
            self.payloads.labels(source, "unauthorized").inc()
            return JSONResponse({"error": "this bridge needs the header 'Authorization: Bearer <token>' with its token"},
                                status_code=401, headers={"WWW-Authenticate": 'Bearer realm="notify-bridge"'})
        channel = request.path_params.get("channel", DEFAULT_CHANNEL)
        if channel not in self.targets:
            self.payloads.labels(source, "unknown_channel").inc()
            known = ", ".join(sorted(self.targets)) or "none"
            return JSONResponse({"error": f"unknown channel {channel!r} (channels: {known})"}, status_code=404)
        try:
            body = await read_limited_body(request, self.max_body_bytes)
        except PayloadTooLargeError as exc:
            self.payloads.labels(source, "too_large").inc()
            return JSONResponse({"error": exc.message}, status_code=413)
        except MalformedRequestError as exc:  # a Content-Length that is not a number
            self.payloads.labels(source, "invalid").inc()
            return JSONResponse({"error": exc.message}, status_code=400)
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise ValueError("the payload is not a JSON object")
            message = format_payload(payload, self.max_alerts)
            states = alert_states(payload)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError; nesting too deep
            self.payloads.labels(source, "invalid").inc()
            return JSONResponse({"error": f"not an {source} webhook payload: {exc}"}, status_code=400)
        self.payloads.labels(source, "accepted").inc()
        if len(states) > self.max_alerts:
            self.truncated.labels(channel).inc(len(states) - self.max_alerts)
        outcome = self._admit(channel, message, states)
        return JSONResponse(outcome, status_code=202)

    # -- rate limit ------------------------------------------------------------------------

    def _admit(self, channel: str, message: Message, states: list[AlertState]) -> dict[str, Any]:
        """Send now, send past the limit (news that an alert people were told about has
        resolved), or hold in the channel's digest."""
        limit, now = self.limits[channel], self.clock()
        if limit.digest is None and limit.has_room(now):
            return {"queued": self._send(channel, message, states, now)}
        if limit.may_pass(now, states):
            limit.past_limit.append(now)
            self.past_limit.labels(channel).inc()
            if limit.digest is not None:
                limit.digest.update(states)
            return {"queued": self._send(channel, message, states, now)}
        if limit.digest is None:
            limit.digest = Digest(started=now)
        limit.digest.add(states)
        self.held.labels(channel).inc()
        self.digest_alerts.labels(channel).set(limit.digest.count)
        return {"queued": 0, "held": limit.digest.count}

    def _send(self, channel: str, message: Message, states: list[AlertState], now: float) -> int:
        self.limits[channel].note_sent(now, states)
        message = cut(message)
        return sum(self._enqueue(_Delivery(channel, url, message)) for url in self.targets[channel])

    def flush_digests(self) -> None:
        """Send each held digest whose channel's window has room."""
        now = self.clock()
        for channel, limit in self.limits.items():
            digest = limit.digest
            if digest is None or not limit.has_room(now):
                continue
            limit.digest = None
            self.digest_alerts.labels(channel).set(0)
            self.digests.labels(channel).inc()
            self._send(channel, digest.message(now, channel, limit.window, self.max_alerts), digest.states(), now)

    async def _flush_digests(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                self.flush_digests()
            except Exception:  # a bug here must not stop the digests for good
                log.exception("sending a digest failed")

    # -- queue and workers -----------------------------------------------------------------

    def _enqueue(self, delivery: _Delivery) -> bool:
        """Admit a new delivery if its channel holds fewer than ``queue_size``; else drop
        and count it."""
        channel = delivery.channel
        if self._held[channel] >= self.queue_size:
            self.dropped.labels(channel).inc()
            return False
        self._held[channel] += 1
        self.queue_depth.labels(channel).inc()
        self._put(delivery)
        return True

    def _put(self, delivery: _Delivery) -> None:
        assert self._available is not None
        self._waiting[delivery.channel].append(delivery)
        self._available.release()

    async def _next(self) -> _Delivery:
        """The next waiting delivery, channel by channel in turn."""
        assert self._available is not None
        await self._available.acquire()
        while True:  # the semaphore counts waiting deliveries: some channel has one
            waiting = self._waiting[next(self._turn)]
            if waiting:
                return waiting.popleft()

    def _finish(self, delivery: _Delivery) -> None:
        self._held[delivery.channel] -= 1
        self.queue_depth.labels(delivery.channel).dec()

    async def _retry_later(self, delivery: _Delivery, delay: float) -> None:
        await asyncio.sleep(delay)
        self._put(delivery)  # keeps the place it was admitted with

    async def _worker(self) -> None:
        while True:
            delivery = await self._next()
            try:
                ok = await asyncio.to_thread(self.send, delivery.url, delivery.message)
            except Exception:  # a notifier bug must not kill the worker
                log.exception("delivery to channel %s raised", delivery.channel)
                ok = False
            self.attempts_total.labels(delivery.channel, "ok" if ok else "error").inc()
            if ok:
                self.notifications.labels(delivery.channel, "delivered").inc()
                self._finish(delivery)
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
                self._finish(delivery)


# -- from modelmon.yaml -------------------------------------------------------------------------


def _window_args(limit: cfg.RateLimit) -> dict[str, Any]:
    return {"messages": limit.messages, "seconds": cfg.duration_seconds(limit.per)}


def targets_from_config(config: cfg.AlertingConfig) -> dict[str, list[str]]:
    """The Apprise URLs of every ``apprise`` channel, read now from their secret references."""
    targets = {}
    for index, channel in enumerate(config.channels):
        if isinstance(channel, cfg.AppriseChannel):
            targets[channel.name] = split_urls(channel.urls.resolve(f"channels[{index}].urls"))
    return targets


def rate_limits_from_config(config: cfg.AlertingConfig) -> dict[str, Window]:
    """Each apprise channel's rate limit (its own, else ``bridge.rate_limit``)."""
    return {
        channel.name: Window(**_window_args(channel.rate_limit or config.bridge.rate_limit))
        for channel in config.channels if isinstance(channel, cfg.AppriseChannel)
    }


def bridge_from_config(
    config: cfg.AlertingConfig,
    targets: dict[str, list[str]],
    *,
    host: str,
    token_file: Path | None = None,
    attempts: int | None = None,
    retry_seconds: float | None = None,
) -> tuple[NotifyBridge, str]:
    """The bridge for ``modelmon notify-bridge``, and where its token came from; refuses a
    non-loopback ``host`` without a token."""
    token, token_source = resolve_token(config, token_file)
    check_listen(host, token)
    b = config.bridge
    bridge = NotifyBridge(
        targets,
        attempts=attempts if attempts is not None else b.attempts,
        retry_seconds=retry_seconds if retry_seconds is not None else b.retry_seconds,
        token=token, max_body_bytes=b.max_body_bytes, queue_size=b.queue_size, max_alerts=b.max_alerts,
        rate_limits=rate_limits_from_config(config), default_rate_limit=Window(**_window_args(b.rate_limit)),
    )
    return bridge, token_source
