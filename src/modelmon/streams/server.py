"""The streams of ``modelmon serve``: companions of the model server (started once its models
are loaded, stopped after its prediction log), wired by the CLI.

- ``LabelStream`` consumes labels on the server's event loop, through the server's own
  feedback path (``ModelServer.record_labels``: the join, the store, the quality series).
- ``EventStream`` runs the event publisher process (``modelmon.streams.publisher``) on the
  segments the prediction log's writer links into ``events_dir``: nothing on the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from modelmon.serving.app import ModelServer
from modelmon.serving.feedback import FeedbackResult, parse_feedback
from modelmon.streams.labels import LabelConsumer
from modelmon.streams.metrics import EventSide, StreamMetrics
from modelmon.streams.publisher import PUBLISH_URL_ENV
from modelmon.streams.urls import StreamTarget, parse_stream_url

logger = logging.getLogger("modelmon.streams")
#: Default bound of the event spool: 256 MiB, about a million one-row predictions of 30
#: features without the features, or 250k with them.
DEFAULT_SPOOL_BYTES = 256 * 1024 * 1024


class LabelStream:
    def __init__(self, server: ModelServer, target: StreamTarget, metrics: StreamMetrics, retry_seconds: float = 2.0) -> None:
        self.server = server
        self.target = target
        self.consumer = LabelConsumer(target, self.parse, self.record, metrics.label_side(target.kind), retry_seconds)
        self._starting: asyncio.Task[None] | None = None

    def parse(self, model: str, items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return parse_feedback(items, self.server.runtime(model, None).class_labels)

    async def record(self, model: str, pairs: list[tuple[str, str]]) -> FeedbackResult:
        return await self.server.record_labels(self.server.runtime(model, None), pairs)

    async def start(self) -> None:
        """Connect in the background: a broker that is down does not keep the server from
        serving; the consumer starts when it answers."""
        self._starting = asyncio.create_task(self._start(), name="labels-start")

    async def _start(self) -> None:
        while True:
            try:
                await self.consumer.start()
                return
            except Exception as exc:
                logger.warning("labels: cannot reach %s (%s); trying again", self.target.describe(), exc)
                with contextlib.suppress(Exception):
                    await self.consumer.stop()
                await asyncio.sleep(2.0)

    async def stop(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._starting
        await self.consumer.stop()


class EventStream:
    """Runs the publisher process and adds its reports to the server's metrics; starts it
    again if it dies."""

    def __init__(self, server: ModelServer, url: str, metrics: StreamMetrics, max_bytes: int = DEFAULT_SPOOL_BYTES) -> None:
        self.server = server
        self.url = url
        self.target = parse_stream_url(url)
        self.side: EventSide = metrics.event_side(self.target.kind)
        self.max_bytes = max_bytes
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = False
        self._reader: threading.Thread | None = None

    async def start(self) -> None:
        log = self.server.prediction_log
        if log is None or log.settings.events_dir is None:
            raise RuntimeError("--publish-predictions needs the prediction log and its events directory")
        self._start_process()

    def _start_process(self) -> None:
        log = self.server.prediction_log
        assert log is not None and log.settings.events_dir is not None
        command = [
            sys.executable, "-m", "modelmon.streams.publisher", "--events-dir", str(log.settings.events_dir),
            "--spool", str(log.directory), "--prefix", log.prefix, "--source", f"/modelmon/{socket.gethostname()}",
            "--max-bytes", str(self.max_bytes), "--period", str(min(0.5, log.settings.segment_seconds)),
            "--retry-seconds", str(log.settings.retry_seconds),
        ]
        env = {**os.environ, PUBLISH_URL_ENV: self.url}
        self._process = process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._reader = threading.Thread(target=self._read_reports, args=(process,), name="events-reports", daemon=True)
        self._reader.start()

    def _read_reports(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            event, _, value = line.decode(errors="replace").strip().partition(" ")
            try:
                if event in self.side.events:
                    self.side.events[event].inc(int(value))
                elif event == "connected":
                    self.side.connected.set(int(value))
                elif event == "pending":
                    files, size = value.split()
                    self.side.spool_files.set(int(files))
                    self.side.spool_bytes.set(int(size))
                else:
                    raise ValueError(event)
            except ValueError:
                logger.warning("prediction events: unexpected output of the publisher: %r", line[:200])
        process.wait()
        if not self._stopping:
            logger.error("prediction events: the publisher exited with %s; starting it again", process.returncode)
            self.side.connected.set(0)
            time.sleep(2.0)
            if not self._stopping:
                self._start_process()

    async def stop(self, timeout: float = 15.0) -> None:
        """A last pass over what the writer linked (it has stopped by now); what the broker
        does not take in ``timeout`` waits on disk for the next start."""
        self._stopping = True
        process = self._process
        if process is None:
            return
        assert process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            process.stdin.write(b"stop\n")
            process.stdin.close()
        try:
            await asyncio.get_running_loop().run_in_executor(None, process.wait, timeout)
        except subprocess.TimeoutExpired:
            logger.warning("prediction events: the publisher did not finish in %.0f s; the rest waits on disk", timeout)
            process.kill()
            process.wait()
