"""``modelmon consume labels --from URL``: one consumer for a fleet of servers. It commits
labels to the store the servers share, through the same join (``FeedbackJoiner``); the
servers' realized-quality series count only the labels they joined themselves (the labels
this process commits are in the store, not in their confusion series), and this process's
own ``/metrics`` shows the stream's series."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server

from modelmon.errors import ModelNotFoundError
from modelmon.registry import Registry
from modelmon.serving.feedback import FeedbackJoiner, FeedbackResult, parse_feedback
from modelmon.store import open_store
from modelmon.streams.labels import LabelConsumer
from modelmon.streams.metrics import StreamMetrics
from modelmon.streams.urls import parse_stream_url

logger = logging.getLogger("modelmon.streams")


class StandaloneLabels:
    def __init__(self, url: str, registry: Registry, store_url: str | None, metrics: StreamMetrics, retry_seconds: float = 2.0) -> None:
        self.target = parse_stream_url(url)
        self.registry = registry
        self.joiner = FeedbackJoiner(open_store(store_url), None)
        self.consumer = LabelConsumer(self.target, self.parse, self.record, metrics.label_side(self.target.kind), retry_seconds)
        self._classes: dict[str, list[str]] = {}

    def parse(self, model: str, items: list[dict[str, Any]]) -> list[tuple[str, str]]:
        if model not in self._classes:
            if model not in self.registry.model_names():
                raise ModelNotFoundError(f"model {model!r} is not registered in {self.registry.root}")
            card = self.registry.card(model, "latest")
            self._classes[model] = [str(c) for c in card.signature.class_labels]
        return parse_feedback(items, self._classes[model])

    async def record(self, model: str, pairs: list[tuple[str, str]]) -> FeedbackResult:
        result, _ = await asyncio.to_thread(self.joiner.record, model, pairs, {})
        return result


async def _run(consumer: LabelConsumer) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    while True:
        try:
            await consumer.start()
            break
        except Exception as exc:
            logger.warning("labels: cannot reach %s (%s); trying again", consumer.target.describe(), exc)
            await consumer.stop()
            try:
                await asyncio.wait_for(stop.wait(), 2.0)
                return
            except TimeoutError:
                continue
    await stop.wait()
    await consumer.stop()


def consume_labels(url: str, registry: Registry, store_url: str | None, metrics_port: int | None, host: str = "127.0.0.1") -> None:
    """Consume until SIGINT or SIGTERM; ``metrics_port``: serve /metrics there."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    collectors = CollectorRegistry()
    labels = StandaloneLabels(url, registry, store_url, StreamMetrics(collectors))
    if metrics_port is not None:
        start_http_server(metrics_port, host, registry=collectors)
    asyncio.run(_run(labels.consumer))
