"""Ground-truth labels from a broker, through the same join as ``POST .../feedback``.

Each message is acknowledged only after its labels are committed to the store: a crash
between the two re-delivers the message, and the join (idempotent by prediction id) counts
its labels once. A malformed message (not JSON, no id, a label that is not a class, an
unknown model) is counted, logged with its reason and parked in a dead-letter destination
(``<name>.dead``), then acknowledged: never retried forever, never blocking the stream. When
the store does not answer, the message is left unacknowledged (``nack``) after
``retry_seconds``, so the broker delivers it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from modelmon.errors import ModelmonError, StoreUnavailableError
from modelmon.serving.feedback import FeedbackResult
from modelmon.streams.metrics import LabelSide
from modelmon.streams.urls import StreamTarget, make_broker

logger = logging.getLogger("modelmon.streams")

#: ``parse(model, items)``: the (id, label) pairs, or a 4xx ModelmonError naming the item.
Parse = Callable[[str, list[dict[str, Any]]], list[tuple[str, str]]]
#: ``record(model, pairs)``: commit them to the store; StoreUnavailableError when it is down.
Record = Callable[[str, list[tuple[str, str]]], Awaitable[FeedbackResult]]
#: How often the broker is asked for the consumer's lag (and the connection checked).
WATCH_SECONDS = 5.0


class MalformedMessage(Exception):
    """A message that can never be committed; the text is the reason, for logs and headers."""


def label_items(body: bytes, target: StreamTarget) -> dict[str, list[dict[str, Any]]]:
    """The message's labels by model, as ``{"id", "label"}`` items for ``parse_feedback``.

    A message is one object or a list of them (after the ``path`` option, dotted keys into
    the message); ``id`` and ``label`` name the fields; the model is an item's ``model``
    field, else the URL's ``model`` option."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedMessage(f"not JSON ({exc})") from None
    path = target.options.get("path")
    for key in path.split(".") if path else []:
        if not isinstance(payload, dict) or key not in payload:
            raise MalformedMessage(f"no {path!r} in the message")
        payload = payload[key]
    items = payload if isinstance(payload, list) else [payload]
    if not items:
        raise MalformedMessage("no labels in the message")
    id_key, label_key = target.options.get("id", "id"), target.options.get("label", "label")
    default_model = target.options.get("model")
    by_model: dict[str, list[dict[str, Any]]] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or id_key not in item or label_key not in item:
            raise MalformedMessage(f"item {i} is not an object with {id_key!r} and {label_key!r}")
        model = item.get("model", default_model)
        if not isinstance(model, str):
            raise MalformedMessage(f"item {i} names no model (a 'model' field, or ?model= in the URL)")
        by_model.setdefault(model, []).append({"id": item[id_key], "label": item[label_key]})
    return by_model


class LabelConsumer:
    """Consumes one queue/subject/stream/topic into the join, on the caller's event loop."""

    def __init__(self, target: StreamTarget, parse: Parse, record: Record, side: LabelSide, retry_seconds: float = 2.0) -> None:
        self.target = target
        self.parse = parse
        self.record = record
        self.side = side
        self.retry_seconds = retry_seconds
        self.broker: Any = None
        self._watch: asyncio.Task[None] | None = None
        self._redis: Any = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self.target.kind == "redis":
            await self._create_redis_group()
        self.broker = make_broker(self.target)
        self._subscribe()
        await self.broker.start()
        if self.target.kind == "rabbit":
            from faststream.rabbit import RabbitQueue

            await self.broker.declare_queue(RabbitQueue(self.target.dead_letter, durable=True))
        self.side.connected.set(1)
        self._watch = asyncio.create_task(self._watch_lag(), name="labels-lag")
        logger.info("labels: consuming %s", self.target.describe())

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self.broker is not None:
            await self.broker.stop()
        if self._redis is not None:
            await self._redis.aclose()
        self.side.connected.set(0)

    def _subscribe(self) -> None:
        from faststream import AckPolicy, Context

        target, broker = self.target, self.broker
        redeliver = float(target.options.get("redeliver_seconds", 30))
        common: dict[str, Any] = {"ack_policy": AckPolicy.MANUAL, "decoder": _raw_body}
        if target.kind == "rabbit":
            from faststream.rabbit import RabbitQueue

            subscribers = [broker.subscriber(RabbitQueue(target.name, durable=True), **common)]
        elif target.kind == "nats":
            from faststream.nats import ConsumerConfig, JStream, PullSub

            stream = JStream(target.jetstream, subjects=[target.name, target.dead_letter])
            subscribers = [broker.subscriber(
                target.name, stream=stream, durable=target.group, pull_sub=PullSub(batch_size=50, timeout=1.0),
                config=ConsumerConfig(ack_wait=redeliver), **common,
            )]
        elif target.kind == "redis":
            from faststream.redis import StreamSub

            consumer = f"{socket.gethostname()}-{os.getpid()}"
            # New entries, and (a second reader) entries another consumer left unacknowledged
            # for ``redeliver`` seconds: a crashed consumer's, claimed with XAUTOCLAIM.
            subscribers = [
                broker.subscriber(stream=StreamSub(target.name, group=target.group, consumer=consumer), **common),
                broker.subscriber(stream=StreamSub(target.name, group=target.group, consumer=consumer, min_idle_time=int(redeliver * 1000)), **common),
            ]
        else:
            subscribers = [broker.subscriber(target.name, group_id=target.group, auto_offset_reset="earliest", **common)]

        the_message = Context("message")

        async def handle(body: Any, message: Any = the_message) -> None:
            await self.handle(message)

        for subscriber in subscribers:
            subscriber(handle)

    # -- one message -------------------------------------------------------------------

    async def handle(self, message: Any) -> None:
        try:
            by_model = label_items(message.body, self.target)
            pairs = {model: self.parse(model, items) for model, items in by_model.items()}
        except (MalformedMessage, ModelmonError) as exc:
            await self.park(message, str(exc))
            return
        try:
            results = [await self.record(model, model_pairs) for model, model_pairs in pairs.items()]
        except StoreUnavailableError as exc:
            self.side.messages["retried"].inc()
            logger.warning("labels: %s; the message stays unacknowledged and comes again", exc)
            await asyncio.sleep(self.retry_seconds)
            await message.nack()
            return
        except Exception as exc:  # a bug of ours: parked with the reason rather than retried forever
            logger.exception("labels: cannot commit a message")
            await self.park(message, f"internal error: {type(exc).__name__}")
            return
        await message.ack()
        self.side.messages["committed"].inc()
        for result in results:
            self.side.labels["matched"].inc(len(result.matched))
            self.side.labels["duplicate"].inc(len(result.duplicate))
            self.side.labels["unknown_id"].inc(len(result.unknown))

    async def park(self, message: Any, reason: str) -> None:
        """Publish the message to the dead-letter destination with its reason, then ack it.
        If even that fails (the broker is going), it is left unacknowledged to come again."""
        logger.warning("labels: malformed message parked in %s: %s", self.target.dead_letter, reason)
        headers = {"x-modelmon-reason": reason[:500]}
        target, broker = self.target, self.broker
        try:
            if target.kind == "rabbit":
                await broker.publish(message.body, queue=target.dead_letter, persist=True, headers=headers)
            elif target.kind == "nats":
                await broker.publish(message.body, subject=target.dead_letter, stream=target.jetstream, headers=headers)
            elif target.kind == "redis":  # plain fields, as producers write them (not FastStream's envelope)
                await self._redis_client().xadd(target.dead_letter, {"data": message.body, "reason": headers["x-modelmon-reason"]})
            else:
                await broker.publish(message.body, topic=target.dead_letter, headers=headers)
        except Exception as exc:
            logger.warning("labels: cannot park a malformed message (%s); it comes again", type(exc).__name__)
            await message.nack()
            return
        await message.ack()
        self.side.messages["malformed"].inc()

    # -- lag and connection ------------------------------------------------------------

    async def _watch_lag(self) -> None:
        while True:
            try:
                lag = await self.lag()
            except Exception as exc:  # the broker is unreachable: said by the gauge, retried
                logger.debug("labels: lag query failed: %s", exc)
                self.side.connected.set(0)
            else:
                self.side.connected.set(1)
                if lag is not None:
                    self.side.lag.set(lag)
            await asyncio.sleep(WATCH_SECONDS)

    async def _restart_broker(self) -> None:
        with contextlib.suppress(Exception):
            await self.broker.stop()
        self.broker = make_broker(self.target)
        self._subscribe()
        await self.broker.start()

    def _redis_client(self) -> Any:
        if self._redis is None:
            import redis.asyncio

            self._redis = redis.asyncio.Redis.from_url(self.target.server)
        return self._redis

    async def _create_redis_group(self) -> None:
        """The consumer group, from the stream's first entry: labels sent before any
        consumer existed are read too (FastStream would start it at the stream's end)."""
        from redis.exceptions import ResponseError

        try:
            await self._redis_client().xgroup_create(self.target.name, self.target.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def lag(self) -> int | None:
        """Messages not yet consumed, as the broker reports them (None: Kafka, not asked)."""
        target = self.target
        if target.kind == "rabbit":
            from faststream.rabbit import RabbitQueue

            queue = await self.broker.declare_queue(RabbitQueue(target.name, durable=True))
            declared = await queue.channel.declare_queue(target.name, passive=True)
            return int(declared.declaration_result.message_count or 0)
        if target.kind == "nats":
            info = await self.broker.connection.jetstream().consumer_info(target.jetstream, target.group)
            return int(info.num_pending or 0) + int(info.num_ack_pending or 0)
        if target.kind == "redis":
            client = self._redis_client()
            groups = await client.xinfo_groups(target.name) if await client.exists(target.name) else []
            for group in groups:
                if group["name"].decode() == target.group:
                    return int(group.get("lag") or 0) + int(group.get("pending") or 0)
            # The group is gone: a Redis without persistence restarted (or the stream was
            # deleted). Created again from the stream's start, so what arrived since is read;
            # FastStream stops a subscriber whose group vanished, so the consumer restarts.
            logger.warning("labels: Redis stream %s has no group %s; creating it", target.name, target.group)
            await self._create_redis_group()
            await self._restart_broker()
            return 0
        return None


async def _raw_body(message: Any) -> bytes:
    """The message's bytes as sent: decoded by us, so a malformed one reaches the handler."""
    return bytes(message.body)


async def send_label_messages(target: StreamTarget, messages: list[bytes]) -> None:
    """Publish label messages to ``target`` as a producer would (the demo's labels): RabbitMQ
    persistent messages, JetStream publishes, Redis entries with a ``data`` field."""
    if target.kind == "redis":
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(target.server)
        try:
            for body in messages:
                await client.xadd(target.name, {"data": body})
        finally:
            await client.aclose()
        return
    broker = make_broker(target)
    await broker.connect()
    try:
        for body in messages:
            if target.kind == "rabbit":
                await broker.publish(body, queue=target.name, persist=True)
            elif target.kind == "nats":
                await broker.publish(body, subject=target.name, stream=target.jetstream)
            else:
                await broker.publish(body, topic=target.name)
    finally:
        await broker.stop()
