"""The brokers on this machine (RabbitMQ, NATS with JetStream, Redis), started when they are
not running, stopped and started again by the tests that need it, and left as found; and
independent clients (aio-pika, nats-py, redis-py: not modelmon's code) to publish and read.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

PORTS = {"rabbit": 5672, "nats": 4222, "redis": 6379}
START = {  # the machine's commands, for a broker found not running
    "rabbit": ["rabbitmq-server", "-detached"],
    "redis": ["redis-server", "--port", "6379", "--daemonize", "yes"],
    "nats": ["nats-server", "-js", "-p", "4222"],
}
SERVER = {"rabbit": "amqp://guest:guest@127.0.0.1:5672/", "nats": "nats://127.0.0.1:4222", "redis": "redis://127.0.0.1:6379/0"}
KEY = {"rabbit": "queue", "nats": "subject", "redis": "stream"}


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_until(check, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ensure_running(kind: str) -> None:
    """Start the broker if it is not running; skip the test (saying why) if it cannot."""
    port = PORTS[kind]
    if listening(port):
        return
    command = START[kind]
    if shutil.which(command[0]) is None:
        pytest.skip(f"{kind} is not running on 127.0.0.1:{port} and {command[0]} is not installed")
    subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until(lambda: listening(port), 90, f"{kind} on port {port}")
    except AssertionError:
        pytest.skip(f"{kind} is not running on 127.0.0.1:{port} and `{' '.join(command)}` did not start it")


def url(kind: str, name: str, **options: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {KEY[kind]: name, **options}.items())
    return f"{SERVER[kind]}?{query}"


@dataclass
class Outage:
    """Stops a running broker and starts it again as it was."""

    kind: str
    _command: list[str] | None = None
    _redis_config: dict[str, str] | None = None

    def stop(self) -> None:
        if self.kind == "rabbit":
            # The RabbitMQ application stops (its listeners close, connections drop); the
            # Erlang node stays, so it starts again as it was, durable queues included.
            subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True)
        elif self.kind == "nats":
            pid = int(subprocess.run(["pgrep", "-x", "nats-server"], check=True, capture_output=True, text=True).stdout.split()[0])
            self._command = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").decode().split("\0")
            os.kill(pid, signal.SIGTERM)  # JetStream keeps its streams on disk (-sd)
        else:
            import redis

            client = redis.Redis(port=6379)
            self._redis_config = {k: str(client.config_get(k)[k]) for k in ("bind", "dir", "save", "appendonly", "port")}
            try:
                client.shutdown(save=self._redis_config["save"] != "", nosave=self._redis_config["save"] == "")
            except redis.ConnectionError:
                pass  # the answer to SHUTDOWN is the connection closing
        wait_until(lambda: not listening(PORTS[self.kind]), 60, f"{self.kind} to stop")

    def start(self) -> None:
        if self.kind == "rabbit":
            subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True)
        elif self.kind == "nats":
            assert self._command is not None
            subprocess.Popen(self._command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        else:
            config = self._redis_config or {}
            command = ["redis-server", "--port", config.get("port", "6379"), "--daemonize", "yes"]
            for key in ("bind", "dir", "save", "appendonly"):
                if key in config:  # each address of bind its own argument
                    command += [f"--{key}", *(config[key].split() or [""])]
            subprocess.run(command, check=True, capture_output=True)
        wait_until(lambda: listening(PORTS[self.kind]), 90, f"{self.kind} to start again")


# -- independent clients ---------------------------------------------------------------


async def _publish(kind: str, name: str, bodies: list[bytes]) -> None:
    if kind == "rabbit":
        import aio_pika

        connection = await aio_pika.connect(SERVER[kind])
        async with connection:
            channel = await connection.channel()
            await channel.declare_queue(name, durable=True)
            for body in bodies:
                await channel.default_exchange.publish(aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=name)
    elif kind == "nats":
        import nats

        client = await nats.connect(SERVER[kind])
        js = client.jetstream()
        for body in bodies:
            await js.publish(name, body)
        await client.close()
    else:
        import redis.asyncio

        client = redis.asyncio.Redis(port=6379)
        for body in bodies:
            await client.xadd(name, {"data": body})
        await client.aclose()


def publish(kind: str, name: str, bodies: list[bytes]) -> None:
    asyncio.run(_publish(kind, name, bodies))


async def _read(kind: str, name: str, durable: str) -> list[bytes]:
    """Everything waiting in ``name`` for this reader (RabbitMQ: the queue's messages, taken;
    NATS: a durable pull consumer's next messages; Redis: the stream after ``durable``'s
    last entry, kept in the stream)."""
    out: list[bytes] = []
    if kind == "rabbit":
        import aio_pika

        connection = await aio_pika.connect(SERVER[kind])
        async with connection:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, durable=True)
            while (message := await queue.get(no_ack=False, fail=False)) is not None:
                out.append(message.body)
                await message.ack()
    elif kind == "nats":
        import nats
        from nats.errors import TimeoutError as NatsTimeout

        client = await nats.connect(SERVER[kind])
        subscription = await client.jetstream().pull_subscribe(name, durable=durable)
        while True:
            try:
                messages = await subscription.fetch(500, timeout=1.0)
            except (NatsTimeout, TimeoutError):
                break
            for message in messages:
                out.append(message.data)
                await message.ack()
        await client.close()
    else:
        import redis.asyncio

        client = redis.asyncio.Redis(port=6379)
        last = _REDIS_READ.get((name, durable), "-")
        for entry_id, fields in await client.xrange(name, min=last if last == "-" else f"({last}"):
            out.append(fields[b"data"] if b"data" in fields else repr(fields).encode())
            _REDIS_READ[(name, durable)] = entry_id.decode()
        await client.aclose()
    return out


_REDIS_READ: dict[tuple[str, str], str] = {}


def read(kind: str, name: str, durable: str = "test-reader") -> list[bytes]:
    return asyncio.run(_read(kind, name, durable))


def delivered_unacknowledged(kind: str, name: str, group: str = "modelmon") -> int:
    """What the broker says was delivered to the label consumer and not acknowledged (0 while
    the consumer has not yet made its queue, durable consumer or group)."""
    try:
        return _unacknowledged(kind, name, group)
    except Exception as exc:
        if "NOGROUP" in str(exc) or "not found" in str(exc).lower():
            return 0
        raise


def _unacknowledged(kind: str, name: str, group: str) -> int:
    if kind == "rabbit":
        listing = subprocess.run(["rabbitmqctl", "-q", "list_queues", "name", "messages_unacknowledged"],
                                 check=True, capture_output=True, text=True).stdout
        return sum(int(n) for q, n in (line.split() for line in listing.splitlines() if line.strip()) if q == name)
    if kind == "nats":
        async def ask() -> int:
            import nats

            client = await nats.connect(SERVER[kind])
            info = await client.jetstream().consumer_info(name.replace(".", "_").upper(), group)
            await client.close()
            return int(info.num_ack_pending)

        return asyncio.run(ask())
    import redis

    return int(redis.Redis(port=6379).xpending(name, group)["pending"])


def forget(kind: str, names: list[str]) -> None:
    """Delete a test's queues, streams or keys (with their dead-letter destinations)."""
    async def run() -> None:
        every = [*names, *(f"{n}.dead" for n in names)]
        if kind == "rabbit":
            import aio_pika

            connection = await aio_pika.connect(SERVER[kind])
            async with connection:
                channel = await connection.channel()
                for name in every:
                    await channel.queue_delete(name)
        elif kind == "nats":
            import nats
            from nats.js.errors import NotFoundError

            client = await nats.connect(SERVER[kind])
            for name in names:
                try:
                    await client.jetstream().delete_stream(name.replace(".", "_").upper())
                except NotFoundError:
                    pass
            await client.close()
        else:
            import redis.asyncio

            client = redis.asyncio.Redis(port=6379)
            await client.delete(*every)
            await client.aclose()

    asyncio.run(run())
