"""The streams' series (docs/metrics.md, "Message queues"). Each side's series are created at
zero when that side (labels, events) is configured, so ``increase()`` sees the first event.
``broker`` is the broker's kind (rabbit, nats, redis, kafka): a fixed set, never a URL."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

MESSAGE_OUTCOMES = ("committed", "malformed", "retried")
LABEL_OUTCOMES = ("matched", "duplicate", "unknown_id")
EVENT_OUTCOMES = ("published", "spooled", "dropped")


@dataclass
class LabelSide:
    messages: dict[str, Counter]
    labels: dict[str, Counter]
    lag: Gauge
    connected: Gauge


@dataclass
class EventSide:
    events: dict[str, Counter]
    spool_files: Gauge
    spool_bytes: Gauge
    connected: Gauge


class StreamMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter("modelmon_stream_messages", "Label messages consumed, by outcome.", ["broker", "outcome"], registry=registry)
        self.labels = Counter("modelmon_stream_labels", "Labels in committed messages, by what the join made of them.", ["broker", "outcome"], registry=registry)
        self.lag = Gauge("modelmon_stream_consumer_lag_messages", "Messages waiting for the label consumer, as the broker reports it.", ["broker"], registry=registry)
        self.connected = Gauge("modelmon_stream_connected", "1 while the broker connection works.", ["broker", "role"], registry=registry)
        self.events = Counter("modelmon_stream_events", "Prediction events, by what happened to them.", ["broker", "outcome"], registry=registry)
        self.spool_files = Gauge("modelmon_stream_spool_files", "Journal segments waiting to be published.", ["broker"], registry=registry)
        self.spool_bytes = Gauge("modelmon_stream_spool_bytes", "Bytes of the journal segments waiting to be published.", ["broker"], registry=registry)

    def label_side(self, broker: str) -> LabelSide:
        return LabelSide(
            {o: self.messages.labels(broker, o) for o in MESSAGE_OUTCOMES},
            {o: self.labels.labels(broker, o) for o in LABEL_OUTCOMES},
            self.lag.labels(broker),
            self.connected.labels(broker, "labels"),
        )

    def event_side(self, broker: str) -> EventSide:
        return EventSide(
            {o: self.events.labels(broker, o) for o in EVENT_OUTCOMES},
            self.spool_files.labels(broker),
            self.spool_bytes.labels(broker),
            self.connected.labels(broker, "events"),
        )
