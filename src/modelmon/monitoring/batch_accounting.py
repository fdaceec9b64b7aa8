"""The per-batch monitoring work of one model version, done in bulk.

Counting a model call into the batch size, inference and queue time histograms, the
prediction counters, the confidence histogram, the expected confusion cells and the drift
bins takes a few dozen numpy calls whatever the batch's size: about 200 us on these
machines, several times the ONNX call itself for a one-row request. So calls (with their
requests' queue times) are queued with a list append and counted together, on the event
loop, by the first model call ``FLUSH_SECONDS`` after the last count (about 1.5 ms for the
100 ms of a saturated server's traffic). Counting on another thread was tried: it cost the
event loop several times the counting's own CPU (8% of the throughput in the serving
benchmark, against under 1% on the loop), as every numpy call that releases the GIL hands
it back and forth.

Anything that reads the counts counts the queue first: a scrape (``ServerMetrics.render``)
and a drift score (``VersionMonitor.score``), so counts are exact whenever they are seen. An
idle server's last calls are counted by the drift scorer's thread (``drift_exporter``) within
``IDLE_FLUSH_SECONDS``; a counted group's rows are dated, for drift windows, when counted.

A task's slow work (a regressor's label-free estimate, ``TaskCounts.settle``) is left to the
drift scorer's thread while the event loop has time to spare, and done by the loop's own
count once it has none: when a counted group holds a model call that served more than one
request (requests queued behind the model: the loop is what limits throughput). At one
request at a time the thread runs beside an idle loop. Under load it ran beside a saturated
one, on 2 cores of which wrk takes one, and cost more than the estimate itself (issue 18,
serving.py's regression model at concurrency 8, medians over alternating pairs of runs on a
shared machine: the loop's thread spent no more CPU per request once it did the estimate
itself, and the scorer's 1.7-2.3 µs per request went; process-tree CPU per request 1.9 µs
lower, requests/s 4% higher, over 16 pairs of 2 s; 101 -> 92 µs over 10 pairs of 3 s).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Sequence

import numpy as np

from modelmon.monitoring.drift import DriftMonitor
from modelmon.monitoring.metrics import ModelMetrics
from modelmon.monitoring.tasks import TaskCounts
from modelmon.types import FeatureBatch, ModelOutput

#: How often the event loop counts the queue under traffic.
FLUSH_SECONDS = 0.1
#: Counted at once however recent the last count: a burst of large batches.
MAX_PENDING_ROWS = 8192


class BatchAccounting:
    def __init__(
        self,
        metrics: ModelMetrics,
        task: TaskCounts,
        drift: DriftMonitor | None,
        max_pending_rows: int = MAX_PENDING_ROWS,
        flush_seconds: float = FLUSH_SECONDS,
    ) -> None:
        self.metrics = metrics
        self.task = task
        self.drift = drift
        self.max_pending_rows = max_pending_rows
        self.flush_seconds = flush_seconds
        # Appended to without a lock: ``list.append`` is atomic under the GIL, and ``_count``
        # takes the calls it saw with a slice and deletes them with another, so a call
        # appended in between stays for the next count. (With a lock, ``add`` took 0.52 µs
        # in a tight loop against 0.19 µs, and about three times as much in place; issue 18.)
        self._pending: list[tuple[FeatureBatch, float, ModelOutput, Sequence[float]]] = []
        # Rows appended since the last count: may miss a call's rows when an append and a
        # count race, which only delays the count that the bound forces.
        self._pending_rows = 0
        self._flush_lock = threading.Lock()  # one flush at a time, so groups count in order
        self._flushed_at = time.monotonic()

    def add(self, batch: FeatureBatch, seconds: float, output: ModelOutput, waits: Sequence[float] = ()) -> None:
        """One model call's rows, duration and outputs, and how long each of its requests
        waited for it (on the event loop)."""
        self._pending.append((batch, seconds, output, waits))
        self._pending_rows += len(batch.numeric)
        if self._pending_rows >= self.max_pending_rows or time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush(settle=False)

    def flush_if_idle(self, idle_seconds: float) -> None:
        """Count what is queued if the event loop has not for ``idle_seconds`` (the drift
        scorer's thread calls this every second)."""
        if time.monotonic() - self._flushed_at >= idle_seconds:
            self.flush()

    def flush(self, settle: bool = True) -> None:
        """Count everything queued (from any thread). ``settle``: also finish the task's slow
        work (``TaskCounts.settle``), as everything but the request path does; the request
        path finishes it too when the group shows a saturated loop (the module's docstring)."""
        with self._flush_lock:
            merged = self._count()
        if settle or merged:
            self.task.settle()

    def _count(self) -> bool:
        """Count the queue; whether one of its model calls served more than one request."""
        self._flushed_at = time.monotonic()
        queue = self._pending
        pending = queue[: len(queue)]
        del queue[: len(pending)]
        self._pending_rows = 0
        if not pending:
            return False
        batches, seconds, outputs, waits = zip(*pending, strict=True)
        self.metrics.batch_size.observe(np.array([len(b.numeric) for b in batches], dtype=np.float64))
        self.metrics.inference_duration.observe(np.array(seconds))
        queued = np.fromiter(itertools.chain.from_iterable(waits), np.float64)  # one per request
        self.metrics.queue_duration.observe(queued)
        output = ModelOutput.concat(list(outputs))
        batch = FeatureBatch.concat(list(batches))  # the task may read them (a regressor's estimate)
        if self.drift is None:
            self.task.count(output, batch)
        else:
            with self.drift.lock:  # a drift score sees a group's counts all or not at all
                self.drift.record(batch.n_rows)
                self.task.count(output, batch)
                self.drift.accountant.count(batch)
        return len(queued) > len(pending)
