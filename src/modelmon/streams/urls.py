"""A broker URL names the broker and the queue, subject, stream or topic, plus modelmon's
options in its query string (docs/streams.md):

- ``amqp://guest:guest@127.0.0.1:5672/?queue=labels``
- ``nats://127.0.0.1:4222?subject=labels&stream=LABELS`` (JetStream)
- ``redis://127.0.0.1:6379/0?stream=labels&group=modelmon``
- ``kafka://127.0.0.1:9092?topic=labels&group=modelmon`` (untested against a real Kafka)

Options for labels: ``model`` (when messages do not say), ``id`` and ``label`` (field names),
``path`` (dotted path to the list of labels in each message), ``group`` (consumer group or
durable name, default ``modelmon``), ``redeliver_seconds`` (NATS: the consumer's ack wait;
Redis: how long an entry stays unacknowledged before another consumer claims it; default
30), ``dead`` (the dead-letter destination, default ``<name>.dead``), ``stream`` (NATS: the
JetStream stream, default the subject in capitals).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from modelmon.errors import ModelmonError

#: FastStream's own log lines (one per message at its default level) go here, at DEBUG.
BROKER_LOGGER = logging.getLogger("modelmon.streams.broker")
BROKER_LOGGER.setLevel(logging.WARNING)  # its INFO lines are about its own tasks
Kind = Literal["rabbit", "nats", "redis", "kafka"]
#: URL scheme -> (broker, the query key naming the destination).
SCHEMES: dict[str, tuple[Kind, str]] = {
    "amqp": ("rabbit", "queue"), "amqps": ("rabbit", "queue"),
    "nats": ("nats", "subject"), "tls": ("nats", "subject"),
    "redis": ("redis", "stream"), "rediss": ("redis", "stream"),
    "kafka": ("kafka", "topic"),
}
OPTIONS = {"model", "id", "label", "path", "group", "redeliver_seconds", "stream", "dead"}


@dataclass(frozen=True)
class StreamTarget:
    kind: Kind
    server: str  # the broker's address, as its client takes it
    name: str  # queue, subject, stream or topic
    options: dict[str, str] = field(default_factory=dict)

    @property
    def group(self) -> str:
        return self.options.get("group", "modelmon")

    @property
    def dead_letter(self) -> str:
        """Where malformed messages are parked."""
        return self.options.get("dead", f"{self.name}.dead")

    @property
    def jetstream(self) -> str:
        """NATS: the JetStream stream holding the subject."""
        return self.options.get("stream") or self.name.replace(".", "_").replace("*", "_").replace(">", "_").upper()

    def describe(self) -> str:
        """The URL without credentials, for logs and event sources."""
        if self.kind == "kafka":  # bootstrap servers, host:port[,host:port]
            return f"kafka://{self.server}/{self.name}"
        parts = urlsplit(self.server)
        return f"{self.kind}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/{self.name}"


def parse_stream_url(url: str) -> StreamTarget:
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ModelmonError(f"broker URL {parts.scheme}://...: the scheme must be one of {sorted(SCHEMES)}")
    kind, key = SCHEMES[parts.scheme]
    query = dict(parse_qsl(parts.query))
    name = query.pop(key, "")
    if not name:
        raise ModelmonError(f"broker URL {parts.scheme}://{parts.hostname}...: name the {key} with ?{key}=NAME")
    unknown = set(query) - OPTIONS
    if unknown:
        raise ModelmonError(f"broker URL: unknown option(s) {sorted(unknown)}; options are {sorted(OPTIONS | {key})}")
    if kind == "kafka":
        server = parts.netloc
    else:
        server = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    return StreamTarget(kind, server, name, query)


def make_broker(target: StreamTarget) -> Any:
    """The FastStream broker for ``target`` (imported here: the extra modelmon[streams])."""
    try:
        if target.kind == "rabbit":
            from faststream.rabbit import RabbitBroker

            return RabbitBroker(target.server, logger=BROKER_LOGGER, log_level=logging.DEBUG, reconnect_interval=1.0)
        if target.kind == "nats":
            from faststream.nats import NatsBroker

            return NatsBroker(target.server, logger=BROKER_LOGGER, log_level=logging.DEBUG, max_reconnect_attempts=-1, reconnect_time_wait=1)
        if target.kind == "redis":
            from faststream.redis import RedisBroker

            return RedisBroker(target.server, logger=BROKER_LOGGER, log_level=logging.DEBUG)
        from faststream.kafka import KafkaBroker

        return KafkaBroker(target.server, logger=BROKER_LOGGER, log_level=logging.DEBUG)
    except ImportError as exc:
        raise ModelmonError(f"message queues need the extra: pip install 'modelmon[streams]' ({exc.name} is missing)") from None
