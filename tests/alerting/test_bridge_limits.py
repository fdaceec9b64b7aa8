"""notify-bridge under load and under a flapping alert, as the real command with Apprise's
``json://`` delivering to local receivers: the delivery queue stays bounded and every drop
is counted; the rate limit holds a channel to N messages per window and merges the rest
into a digest; a resolved message is never held behind the firing ones of its alert."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from modelmon.alerting import config as cfg
from modelmon.alerting.bridge import AlertState, ChannelLimit, Digest, Window
from tests.alerting import test_prometheus_rules as rule_tests
from tests.alerting.bridge_helpers import alert, payload, start_bridge, value
from tests.alerting.conftest import HttpSink, require

TOKEN = "flood-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class SlowSink:
    """A receiver that takes ``delay`` seconds per request and keeps only counts, so the
    test process itself stays small."""

    def __init__(self, delay: float) -> None:
        self.count: dict[str, int] = {}
        self._lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length") or 0))
                time.sleep(delay)
                with sink._lock:
                    sink.count[self.path] = sink.count.get(self.path, 0) + 1
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def big_payload(i: int, alerts: int = 20) -> dict[str, Any]:
    """A group of ``alerts`` alerts with long descriptions (a message of about 14 KB)."""
    items = [alert("ModelmonFeatureDrift", model="churn", feature=f"feature_{i}_{j}", fingerprint=f"{i:06d}{j:04d}")
             for j in range(alerts)]
    for item in items:
        item["annotations"]["description"] = "Feature drifted far from its training data. " * 12
    return payload(*items)


@dataclass
class Answer:
    status_code: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def flood(url: str, bodies: list[bytes], connections: int = 8) -> list[Answer]:
    """POST every body over ``connections`` keep-alive connections: a bare HTTP/1.1 client,
    so the load is the bridge's work rather than the client's."""
    parts = urlsplit(url)
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: Bearer {TOKEN}\r\n"
            "Content-Type: application/json\r\n").encode()
    answers: list[Answer | None] = [None] * len(bodies)

    async def connection(indices: range) -> None:
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        for i in indices:
            writer.write(head + f"Content-Length: {len(bodies[i])}\r\n\r\n".encode() + bodies[i])
            status = int((await reader.readline()).split()[1])
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, text = line.decode().partition(":")
                if name.lower() == "content-length":
                    length = int(text)
            answers[i] = Answer(status, await reader.readexactly(length))
        writer.close()

    async def run() -> None:
        await asyncio.gather(*(connection(range(c, len(bodies), connections)) for c in range(connections)))

    asyncio.run(run())
    assert all(a is not None for a in answers)
    return answers  # type: ignore[return-value]


@pytest.mark.slow
def test_a_flood_of_10000_posts_keeps_the_queue_bounded_and_counts_every_drop(tmp_path):
    sink = SlowSink(delay=0.2)  # four workers: at most 20 deliveries a second
    (tmp_path / "token").write_text(TOKEN)
    queue_size = 50
    config = {
        "channels": [
            # A chat channel with a rate limit too high to matter: the queue is what bounds it.
            {"name": "chat", "type": "apprise", "urls": "$__env{CHAT_URLS}", "rate_limit": {"messages": 1_000_000, "per": "1m"}},
            # An SMS-like channel with the default rate limit: the digest absorbs the flood.
            {"name": "sms", "type": "apprise", "urls": "$__env{SMS_URLS}"},
        ],
        "bridge": {"token_file": str(tmp_path / "token"), "queue_size": queue_size, "max_alerts": 20, "attempts": 1},
    }
    bridge = start_bridge(tmp_path, config, env={"CHAT_URLS": f"json://127.0.0.1:{sink.port}/chat",
                                                  "SMS_URLS": f"json://127.0.0.1:{sink.port}/sms"})
    n = 10_000
    try:
        # Warm-up, one at a time: the memory a running bridge needs anyway. Fewer posts than
        # the queue holds, so none is dropped however fast they come (100 dropped one on a
        # quiet machine: the sink takes 20 a second).
        warm = [httpx.post(f"{bridge.url}/alertmanager/chat", json=big_payload(i), headers=AUTH)
                for i in range(queue_size - 10)]
        assert [r.json() for r in warm] == [{"queued": 1}] * len(warm)
        deadline = time.monotonic() + 30
        while value(bridge.metrics(), "modelmon_bridge_queue_depth", channel="chat") > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        rss_before, _ = bridge.rss_kib()

        depths: list[float] = []
        stop = threading.Event()

        def watch() -> None:  # the queue's depth, sampled during the flood
            while not stop.is_set():
                depths.append(value(bridge.metrics(), "modelmon_bridge_queue_depth", channel="chat"))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        started = time.monotonic()
        chat_bodies = [json.dumps(big_payload(1000 + i)).encode() for i in range(n)]
        responses = flood(f"{bridge.url}/alertmanager/chat", chat_bodies)
        del chat_bodies
        sms_bodies = [json.dumps(big_payload(20_000 + i, alerts=2)).encode() for i in range(2000)]
        sms_responses = flood(f"{bridge.url}/alertmanager/sms", sms_bodies)
        flood_seconds = time.monotonic() - started
        stop.set()
        watcher.join()
        rss_after, rss_peak = bridge.rss_kib()
        assert bridge.process.poll() is None, bridge.log()  # alive
        assert httpx.get(f"{bridge.url}/-/healthy").status_code == 200
        deadline = time.monotonic() + 60
        while value(bridge.metrics(), "modelmon_bridge_queue_depth", channel="chat") > 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        values = bridge.metrics()
    finally:
        bridge.stop()
        sink.stop()

    assert all(r.status_code == 202 for r in responses + sms_responses)
    queued = sum(r.json()["queued"] for r in responses)
    dropped = value(values, "modelmon_bridge_dropped_total", channel="chat")
    delivered = value(values, "modelmon_bridge_notifications_total", channel="chat", outcome="delivered")
    failed = value(values, "modelmon_bridge_notifications_total", channel="chat", outcome="failed")
    # Every delivery is accounted for: delivered, failed, or dropped and counted.
    assert queued + dropped == n
    assert delivered + failed == queued + len(warm) and failed == 0
    assert sink.count["/chat"] == delivered
    assert dropped > n / 2, "the receiver was meant to be slower than the flood"
    assert max(depths) <= queue_size and value(values, "modelmon_bridge_queue_capacity") == queue_size
    assert value(values, "modelmon_bridge_queue_depth", channel="chat") == 0
    # The SMS channel: five messages, everything else held in one digest (bounded per alert).
    assert sink.count.get("/sms", 0) == 5
    assert value(values, "modelmon_bridge_rate_limited_total", channel="sms") == 2000 - 5
    assert value(values, "modelmon_bridge_digest_alerts", channel="sms") == 2 * (2000 - 5)
    assert value(values, "modelmon_bridge_dropped_total", channel="sms") == 0
    growth_mib = (rss_after - rss_before) / 1024
    peak_growth_mib = (rss_peak - rss_before) / 1024
    print(f"\n{n} + 2000 posts in {flood_seconds:.1f} s; chat: {int(delivered) - len(warm)} delivered, {int(dropped)} dropped; "
          f"queue depth max {max(depths):.0f} of {queue_size}; RSS {rss_before / 1024:.1f} MiB before, "
          f"{rss_after / 1024:.1f} MiB after (+{growth_mib:.1f}), peak +{peak_growth_mib:.1f} MiB")
    # Unbounded, the 10,000 messages of about 14 KB each would hold 140 MB or more.
    assert peak_growth_mib < 40, f"RSS grew by {peak_growth_mib:.1f} MiB"


def flap(status: str, name: str = "ModelmonHighErrorRatio", fingerprint: str = "x-flapping") -> dict[str, Any]:
    return payload(alert(name, status=status, fingerprint=fingerprint, model="churn", version="2"))


def test_a_flapping_alert_is_held_to_the_rate_limit_with_a_digest(tmp_path, http_sink: HttpSink):
    (tmp_path / "urls").write_text(f"json://127.0.0.1:{http_sink.port}/pager\n")
    window = 4.0
    config = {"channels": [{"name": "pager", "type": "apprise", "urls_file": str(tmp_path / "urls"),
                            "rate_limit": {"messages": 3, "per": f"{window:g}s"}}]}
    bridge = start_bridge(tmp_path, config)
    target = f"{bridge.url}/alertmanager/pager"
    answers = []
    try:
        started = time.monotonic()
        answers.append(httpx.post(target, json=flap("firing", "ModelmonHighLatencyP99", "y-steady")))  # 1
        for _ in range(6):  # the flapping alert: firing and resolved, six times over
            answers.append(httpx.post(target, json=flap("firing")))
            answers.append(httpx.post(target, json=flap("resolved")))
        posted = time.monotonic() - started
        # The steady alert resolves while the flapping one's messages are held: it must not wait.
        resolved_steady = httpx.post(target, json=flap("resolved", "ModelmonHighLatencyP99", "y-steady"))
        assert resolved_steady.json() == {"queued": 1}
        steady = http_sink.wait(lambda r: r.json["title"].startswith("[RESOLVED] ModelmonHighLatencyP99"), timeout=10)
        steady_after = time.monotonic() - started
        digest = http_sink.wait(lambda r: r.json["title"].startswith("[DIGEST]"), timeout=window + 10)
        digest_after = time.monotonic() - started
        values = bridge.metrics()
    finally:
        bridge.stop()
    assert posted < window / 2, "posting took too long for this test's timing"
    assert [a.status_code for a in answers] == [202] * 13
    # Within the window: the steady alert, then the flapping one firing and resolved; the
    # rest held (the flapping alert's last message sent was resolved: nothing to rush).
    assert [a.json()["queued"] for a in answers] == [1, 1, 1] + [0] * 10
    assert [a.json().get("held") for a in answers[3:]] == list(range(1, 11))
    titles = [r.json["title"] for r in http_sink.on("/pager")]
    assert titles[:3] == ["[FIRING:1] ModelmonHighLatencyP99 model churn version 2",
                          "[FIRING:1] ModelmonHighErrorRatio model churn version 2",
                          "[RESOLVED] ModelmonHighErrorRatio model churn version 2"]
    assert steady is not None and titles[3] == steady.json["title"] and steady_after < window
    assert digest is not None, bridge.log()
    assert titles[4:] == [digest.json["title"]]
    assert digest_after >= window - 0.5  # sent when the window had room again
    span = digest.json["title"].rsplit("in the last ", 1)[1]
    assert digest.json["title"] == f"[DIGEST] 10 more alerts for model churn in the last {span}"
    assert span.endswith("seconds") and 3 <= int(span.split()[0]) <= window + 3
    assert digest.json["message"].splitlines()[1:] == [
        "RESOLVED ModelmonHighErrorRatio model churn version 2 (5 firing, 5 resolved)"]
    assert digest.json["type"] == "success"  # everything in it has resolved
    assert value(values, "modelmon_bridge_rate_limited_total", channel="pager") == 10
    assert value(values, "modelmon_bridge_digests_total", channel="pager") == 1
    assert value(values, "modelmon_bridge_resolved_past_limit_total", channel="pager") == 1
    assert value(values, "modelmon_bridge_digest_alerts", channel="pager") == 0


def state(key: str, status: str, model: str = "churn") -> AlertState:
    return AlertState(key=key, name="ModelmonFeatureDrift", where=f"model {model}", model=model, status=status,
                      severity="warning")


def test_rate_limit_window_and_digest_text():
    limit = ChannelLimit(Window(messages=2, seconds=600))
    assert limit.has_room(0)
    limit.note_sent(0, [state("a", "firing")])
    limit.note_sent(100, [state("b", "firing")])
    assert not limit.has_room(599) and limit.has_room(600.5)  # the first send left the window
    assert limit.resolves_announced([state("a", "resolved")]) and not limit.resolves_announced([state("c", "resolved")])
    assert not limit.resolves_announced([state("a", "firing")])  # a repeat of the firing is no news
    assert limit.resolves_announced([state("c", "firing"), state("a", "resolved")])  # a group: one resolved
    limit.note_sent(601, [state("a", "resolved")])
    assert not limit.resolves_announced([state("a", "resolved")])
    # Past the limit: only resolved messages of announced alerts, at most `messages` a window.
    for key in "xyz":
        limit.note_sent(700, [state(key, "firing")])
    assert limit.may_pass(701, [state("x", "resolved")]) and not limit.may_pass(701, [state("q", "resolved")])
    limit.past_limit.extend([701, 702])
    assert not limit.may_pass(703, [state("y", "resolved")]) and limit.may_pass(1301.5, [state("y", "resolved")])

    digest = Digest(started=0)
    for i in range(12):
        digest.add([state(f"k{i % 3}", "firing" if i % 2 == 0 else "resolved")])
    message = digest.message(600, "phones", Window(5, 600), max_lines=2)
    assert message.title == "[DIGEST] 12 more alerts for model churn in the last 10 minutes"
    lines = message.body.splitlines()
    assert lines[0] == "Held back by the rate limit of channel phones (5 messages per 10 minutes); each alert as it is now, still firing first:"
    assert len(lines) == 4 and lines[-1] == "... and 1 more alerts"
    two_models = Digest(started=0)
    two_models.add([state("a", "firing", "churn"), state("b", "firing", "shop")])
    assert two_models.message(45, "x", Window(1, 60), 5).title == "[DIGEST] 2 more alerts for models churn, shop in the last 45 seconds"


def test_bridge_settings_errors_name_their_key():
    cases = [
        ({"bridge": {"rate_limit": {"messages": 0, "per": "10m"}}}, "bridge.rate_limit.messages: Input should be greater than or equal to 1"),
        ({"bridge": {"rate_limit": {"messages": 5, "per": "10 minutes"}}}, "bridge.rate_limit.per: '10 minutes' is not a duration"),
        ({"bridge": {"rate_limit": {"messages": 5, "per": "0s"}}}, "bridge.rate_limit.per: '0s': the window must be longer than 0s"),
        ({"bridge": {"rate_limit": {"messages": 5}}}, "bridge.rate_limit.per: Field required"),
        ({"bridge": {"rate_limit": {"messages": 5, "per": "1m", "burst": 2}}}, "bridge.rate_limit.burst: unknown key"),
        ({"channels": [{"name": "sms", "type": "apprise", "urls": "$__env{U}", "rate_limit": {"messages": "many", "per": "1m"}}]},
         "channels[0].rate_limit.messages: Input should be a valid integer"),
        ({"bridge": {"token": "hunter2"}}, "bridge.token: secrets are never written in modelmon.yaml"),
        ({"bridge": {"token": "$__env{T}", "token_file": "/run/secrets/t"}}, "bridge: give either token or token_file, not both"),
        ({"bridge": {"queue_size": 0}}, "bridge.queue_size: Input should be greater than or equal to 1"),
        ({"bridge": {"max_body_bytes": 10}}, "bridge.max_body_bytes: Input should be greater than or equal to 1024"),
        ({"bridge": {"max_alerts": 0}}, "bridge.max_alerts: Input should be greater than or equal to 1"),
        ({"builtins": {"bridge_dropped": {"window": "ten minutes"}}}, "builtins.bridge_dropped.window: 'ten minutes' is not a duration"),
    ]
    for data, expected in cases:
        with pytest.raises(cfg.AlertingConfigError) as error:
            cfg.parse_config(data)
        assert expected in error.value.message, (data, error.value.message)
        assert "hunter2" not in error.value.message
    settings = cfg.parse_config({"bridge": {"token_file": "/run/secrets/t"}}).bridge
    assert str(settings.token) == "$__file{/run/secrets/t}" and settings.rate_limit.messages == 5
    assert settings.rate_limit.per == "10m" and settings.sender_max_alerts() == 256


def test_the_dropped_delivery_rule_fails_its_generated_test_when_broken(tmp_path):
    """The promtool fixture of ModelmonNotifyBridgeDropping is not vacuous."""
    require("promtool")
    rule_tests.test_a_broken_rule_fails_its_generated_test(tmp_path, "ModelmonNotifyBridgeDropping", ") > 0", ") > 100")
