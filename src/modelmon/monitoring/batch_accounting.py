"""The per-batch monitoring work of one model version, done in bulk.

Counting a model call into the prediction counters, the confidence histogram, the expected
confusion cells and the drift bins takes a few dozen numpy calls whatever the batch's size:
about 200 us on these machines, several times the ONNX call itself for a one-row request.
So calls are queued (a list append) and counted together: every ``FLUSH_SECONDS`` by the
drift scorer's thread (``drift_exporter``), and always before anything reads the counts: a
scrape (``ServerMetrics.render``) and a drift score (``DriftMonitor.report``) flush first.
Counts are therefore exact whenever they are seen; a flushed group's rows are dated, for
drift windows, when the group is counted (about a second late at most). Only if
``max_pending_rows`` pile up (no drift thread, no scrape) does a request count them itself.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from modelmon.quality import calibration
from modelmon.registry.signature import FeatureBatch

if TYPE_CHECKING:  # metrics imports the drift exporter, which imports this module
    from modelmon.monitoring.drift import DriftMonitor
    from modelmon.monitoring.metrics import ModelMetrics
    from modelmon.quality.calibration import Calibration

FLUSH_SECONDS = 1.0
MAX_PENDING_ROWS = 8192


class BatchAccounting:
    def __init__(
        self,
        metrics: ModelMetrics,
        drift: DriftMonitor | None,
        calibration_map: Calibration | None,
        max_pending_rows: int = MAX_PENDING_ROWS,
    ) -> None:
        self.metrics = metrics
        self.drift = drift
        self.calibration = calibration_map
        self.max_pending_rows = max_pending_rows
        self._pending: list[tuple[FeatureBatch, np.ndarray]] = []
        self._pending_rows = 0
        self._queue_lock = threading.Lock()  # the pending list: held for an append or a swap
        self._flush_lock = threading.Lock()  # one flush at a time, so groups count in order

    def add(self, batch: FeatureBatch, seconds: float, proba: np.ndarray) -> None:
        """One model call's rows and probabilities (on the event loop)."""
        self.metrics.batch_size.observe(batch.n_rows)
        self.metrics.inference_duration.observe(seconds)
        with self._queue_lock:
            self._pending.append((batch, proba))
            self._pending_rows += batch.n_rows
            due = self._pending_rows >= self.max_pending_rows
        if due:
            self.flush()

    def flush(self) -> None:
        """Count everything queued (from any thread)."""
        with self._flush_lock:
            with self._queue_lock:
                pending, self._pending, self._pending_rows = self._pending, [], 0
            if not pending:
                return
            batch = FeatureBatch.concat([b for b, _ in pending])
            proba = pending[0][1] if len(pending) == 1 else np.concatenate([p for _, p in pending])
            top = proba.argmax(axis=1)
            confidence = proba[np.arange(len(top)), top]
            if self.metrics.expected_confusion is not None:
                cells = calibration.expected_confusion(calibration.apply(self.calibration, proba), top)
                self.metrics.expected_confusion.add(cells.ravel())
            if self.drift is None:
                self.metrics.observe_predictions(top, confidence)
                return
            with self.drift.lock:  # a drift score sees a group's counts all or not at all
                self.drift.record(batch.n_rows)
                self.metrics.observe_predictions(top, confidence)
                self.drift.accountant.count(batch)
