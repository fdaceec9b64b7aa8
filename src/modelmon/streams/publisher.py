"""Prediction events to a broker: a process of its own beside the prediction log's writer,
``python -m modelmon.streams.publisher``, started by ``modelmon serve --publish-predictions``.

The writer links every sealed journal segment into ``<spool>/events/`` before it inserts it
into the store; this process publishes each linked segment's predictions as CloudEvents,
oldest segment first, one event after the other (so a replica's events arrive in the order
it made them), then deletes the link. Nothing runs on the request path, and the events wait
on disk while the broker is down, with the journal's guarantees:

- bounded: past ``max_bytes`` of waiting segments, the newest are dropped and counted
  (``dropped``; the oldest keep their order);
- counted: ``published``, ``spooled`` (waited because the broker was down), ``dropped``;
- replayed in order when the broker returns, from the first event not yet confirmed.

An event is sent again only if the broker took it but its confirmation was lost (the
connection died in between): delivery is at least once, and the CloudEvents ``id`` (the
prediction id) tells a consumer it saw the event already. NATS JetStream drops such a
repeat itself (``Nats-Msg-Id``).

Same pipes as the writer: stdin ``stop`` (a last pass, then exit) or end of file (exit);
stdout ``<event> <n>`` lines: ``published``, ``spooled``, ``dropped``, ``connected 0|1``,
``pending <files> <bytes>``. The broker URL comes in ``$MODELMON_PUBLISH_URL`` (``ps`` shows
arguments, and URLs hold passwords).
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from modelmon.serving.segment_writer import SEGMENT_SUFFIX
from modelmon.streams.events import CONTENT_TYPE, segment_events
from modelmon.streams.urls import StreamTarget, make_broker, parse_stream_url

logger = logging.getLogger("modelmon.streams")

PUBLISH_URL_ENV = "MODELMON_PUBLISH_URL"
#: Longest wait for one event's confirmation before the broker counts as down.
SEND_TIMEOUT = 5.0
#: Events per Redis pipeline (one round trip, applied atomically with MULTI/EXEC).
REDIS_BATCH = 500
#: Events in flight at once to RabbitMQ, NATS and Kafka, sent in order on one connection;
#: each batch is confirmed before the next is sent. One at a time, RabbitMQ took 167
#: persistent events/s on the shared test machine; 100 in flight, 630/s (benchmarks/streams.py).
WINDOW = 100

Report = Callable[[str, str], None]


class Sender:
    """Publishes events to one destination; FastStream's broker for RabbitMQ, NATS and Kafka,
    redis-py (FastStream's own Redis client) for Redis, so that each stream entry is the
    plain field ``data`` holding the event, as any Redis client reads it."""

    def __init__(self, target: StreamTarget) -> None:
        self.target = target
        self.broker: Any = None
        self.redis: Any = None

    async def connect(self) -> None:
        target = self.target
        if target.kind == "redis":
            import redis.asyncio

            self.redis = redis.asyncio.Redis.from_url(target.server, socket_timeout=SEND_TIMEOUT, socket_connect_timeout=SEND_TIMEOUT)
            await self.redis.ping()
            return
        self.broker = make_broker(target)
        await self.broker.connect()
        if target.kind == "rabbit":
            from faststream.rabbit import RabbitQueue

            await self.broker.declare_queue(RabbitQueue(target.name, durable=True))
        elif target.kind == "nats":
            from nats.js.errors import NotFoundError

            js = self.broker.connection.jetstream()
            try:
                await js.stream_info(target.jetstream)
            except NotFoundError:
                await js.add_stream(name=target.jetstream, subjects=[target.name])

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        if self.broker is not None:
            await self.broker.stop()
        self.broker = self.redis = None

    async def send(self, events: list[tuple[str, bytes]]) -> int:
        """Publish ``events`` in order; returns how many (a prefix of them) were published."""
        target = self.target
        if target.kind == "redis":
            async with self.redis.pipeline(transaction=True) as pipe:
                for _, body in events:
                    pipe.xadd(target.name, {"data": body})
                await asyncio.wait_for(pipe.execute(), SEND_TIMEOUT)
            return len(events)
        # Started in order, so written in order on the one connection; the confirmations
        # say which arrived. After the first failure, the rest counts as not sent (it is sent
        # again: at least once).
        results = await asyncio.gather(
            *(asyncio.wait_for(self._publish(event_id, body), SEND_TIMEOUT) for event_id, body in events),
            return_exceptions=True,
        )
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                if i == 0:
                    raise result
                return i
        return len(events)

    def _publish(self, event_id: str, body: bytes) -> Any:
        target = self.target
        if target.kind == "rabbit":
            return self.broker.publish(body, queue=target.name, persist=True, content_type=CONTENT_TYPE, message_id=event_id)
        if target.kind == "nats":
            return self.broker.publish(body, subject=target.name, stream=target.jetstream, timeout=SEND_TIMEOUT,
                                       headers={"Nats-Msg-Id": event_id, "content-type": CONTENT_TYPE})
        return self.broker.publish(body, topic=target.name, headers={"content-type": CONTENT_TYPE})


class EventPublisher:
    def __init__(self, sender: Sender, directory: Path, spool: Path, prefix: str, source: str, max_bytes: int, report: Report) -> None:
        self.sender = sender
        self.directory = directory
        self.spool = spool
        self.prefix = prefix
        self.source = source
        self.max_bytes = max_bytes
        self.report = report
        self.connected: bool | None = None
        self._sent: dict[str, int] = {}  # segment name -> events already published
        self._spooled: set[str] = set()  # segments counted as spooled
        self._pending: tuple[int, int] | None = None

    def _set_connected(self, up: bool) -> None:
        if up != self.connected:
            self.connected = up
            self.report("connected", str(int(up)))

    # -- the spool ---------------------------------------------------------------------

    def _alive(self, prefix: str) -> bool:
        """A journal prefix is alive while its server holds the lock on ``<prefix>.lock``."""
        lock = self.spool / f"{prefix}.lock"
        try:
            with lock.open("r") as handle:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except FileNotFoundError:
            return False
        except BlockingIOError:
            return True
        return False

    def adopt_orphans(self) -> None:
        """Segments of a server that died are ours to publish (renamed: two publishers
        cannot both take one). ``-0-`` sorts them before our own, newer segments."""
        for path in self.directory.glob(f"*{SEGMENT_SUFFIX}"):
            prefix = path.name.split("-", 1)[0]
            if prefix != self.prefix and not self._alive(prefix):
                try:
                    path.rename(self.directory / f"{self.prefix}-0-orphan-{path.name}")
                except FileNotFoundError:
                    pass  # another publisher took it

    def pending(self) -> list[Path]:
        return sorted(self.directory.glob(f"{self.prefix}-*{SEGMENT_SUFFIX}"))

    def _events(self, path: Path) -> list[tuple[str, bytes]]:
        return segment_events(path.read_bytes(), self.source)

    def enforce_bound(self, segments: list[Path]) -> list[Path]:
        """Past ``max_bytes``, drop the newest segments (never the one being published)."""
        sizes = [p.stat().st_size for p in segments]
        total = sum(sizes)
        while total > self.max_bytes and len(segments) > 1:
            path = segments.pop()
            total -= sizes.pop()
            dropped = len(self._events(path)) - self._sent.pop(path.name, 0)
            path.unlink(missing_ok=True)
            self._spooled.discard(path.name)
            self.report("dropped", str(dropped))
            logger.error("prediction events: the spool is full (%d bytes); dropped %d events", self.max_bytes, dropped)
        pending = (len(segments), total)
        if pending != self._pending:
            self._pending = pending
            self.report("pending", f"{pending[0]} {pending[1]}")
        return segments

    def _count_spooled(self, segments: list[Path]) -> None:
        """While the broker is down, each waiting segment's unsent events count once."""
        for path in segments:
            if path.name not in self._spooled:
                self._spooled.add(path.name)
                self.report("spooled", str(len(self._events(path)) - self._sent.get(path.name, 0)))

    # -- publishing --------------------------------------------------------------------

    async def publish_pending(self) -> bool:
        """One pass: publish every waiting segment in order; False if the broker failed."""
        self.adopt_orphans()
        segments = self.enforce_bound(self.pending())
        if self.connected is not True and not await self._connect():
            self._count_spooled(segments)
            return False
        for path in segments:
            try:
                events = self._events(path)
            except FileNotFoundError:
                continue
            done = self._sent.get(path.name, 0)
            try:
                while done < len(events):
                    batch = events[done : done + (REDIS_BATCH if self.sender.target.kind == "redis" else WINDOW)]
                    sent = await self.sender.send(batch)
                    done += sent
                    self._sent[path.name] = done
                    self.report("published", str(sent))
                    if sent < len(batch):
                        raise ConnectionError(f"{len(batch) - sent} events of a batch not confirmed")
            except Exception as exc:  # the broker went away: the rest waits on disk
                logger.warning("prediction events: %s unreachable (%s); events wait on disk", self.sender.target.describe(), type(exc).__name__)
                self._set_connected(False)
                await self._disconnect()
                self._count_spooled(segments)
                return False
            path.unlink(missing_ok=True)
            self._sent.pop(path.name, None)
            self._spooled.discard(path.name)
        self.enforce_bound(self.pending())
        return True

    async def _connect(self) -> bool:
        try:
            await asyncio.wait_for(self.sender.connect(), SEND_TIMEOUT * 2)
        except Exception as exc:
            if self.connected is not False:  # said once per outage, not at every retry
                logger.warning("prediction events: cannot reach %s (%s); events wait on disk", self.sender.target.describe(), exc)
            self._set_connected(False)
            await self._disconnect()
            return False
        self._set_connected(True)
        return True

    async def _disconnect(self) -> None:
        try:
            await asyncio.wait_for(self.sender.close(), SEND_TIMEOUT)
        except Exception as exc:
            logger.debug("prediction events: close failed: %s", exc)
            self.sender.broker = self.sender.redis = None


async def run(publisher: EventPublisher, period: float, retry_seconds: float) -> None:
    loop = asyncio.get_running_loop()
    said: asyncio.Queue[bytes] = asyncio.Queue()
    stdin = sys.stdin.fileno()
    loop.add_reader(stdin, lambda: said.put_nowait(os.read(stdin, 256)))
    wait = period
    while True:
        try:
            message = await asyncio.wait_for(said.get(), wait)
        except TimeoutError:
            message = None
        if message == b"":
            break  # the parent is gone: what waits stays on disk for the next server
        final = message is not None and b"stop" in message
        ok = await publisher.publish_pending()
        if final:
            break
        wait = period if ok else retry_seconds
    await publisher._disconnect()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="modelmon's prediction event publisher (started by modelmon serve)")
    parser.add_argument("--events-dir", type=Path, required=True)
    parser.add_argument("--spool", type=Path, required=True, help="the journal's directory (its locks)")
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--source", required=True, help="the CloudEvents source")
    parser.add_argument("--max-bytes", type=int, required=True)
    parser.add_argument("--period", type=float, required=True)
    parser.add_argument("--retry-seconds", type=float, required=True)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this process stops
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s (publisher): %(message)s")
    for noisy in ("aiormq", "aio_pika", "nats", "aiokafka"):  # a line per reconnection attempt; ours says it once
        logging.getLogger(noisy).setLevel(logging.CRITICAL)

    def report(event: str, value: str) -> None:
        try:
            sys.stdout.write(f"{event} {value}\n")
            sys.stdout.flush()
        except BrokenPipeError:
            raise SystemExit(0) from None

    target = parse_stream_url(os.environ[PUBLISH_URL_ENV])
    args.events_dir.mkdir(parents=True, exist_ok=True)
    publisher = EventPublisher(Sender(target), args.events_dir, args.spool, args.prefix, args.source, args.max_bytes, report)
    asyncio.run(run(publisher, args.period, args.retry_seconds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
