"""The prediction log: every prediction written to the store, off the request path.

The request path only appends a chunk (one request's ids, labels and probabilities, as
arrays) to a bounded in-memory queue. A writer thread turns chunks into rows and inserts
them in batches. When the store is slow or down, the batch goes to a spool file on local
disk instead, and spooled files are replayed once the store answers again; replays insert
with ``ON CONFLICT DO NOTHING`` on the prediction id, so a batch replayed twice is stored
once. Nothing is dropped silently: a full queue drops the chunk and counts it.

Counters (``modelmon_prediction_log_rows_total{outcome}``): written, spooled, replayed,
dropped.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, Field

from modelmon.store import Store
from modelmon.store.predictions import insert_ignoring_duplicates, predictions

logger = logging.getLogger("modelmon.quality")

OUTCOMES = ("written", "spooled", "replayed", "dropped")


class PredictionLogSettings(BaseModel):
    enabled: bool = True
    feature_sample: float = Field(0.0, ge=0, le=1, description="Share of requests whose input features are logged too.")
    max_queue_rows: int = Field(100_000, ge=1, description="Rows waiting in memory; beyond this, chunks are dropped and counted.")
    batch_rows: int = Field(2000, ge=1, description="Most rows per insert.")
    flush_seconds: float = Field(0.2, gt=0, description="Longest a row waits before its batch is written.")
    spool_dir: Path | None = Field(None, description="Where batches go while the store is down [default: $MODELMON_HOME/spool].")
    retry_seconds: float = Field(2.0, gt=0, description="How often a down store is tried again.")


@dataclass(slots=True)
class Chunk:
    """One request's predictions, as the request path has them."""

    model: str
    version: int
    predicted_at: float
    ids: list[str]
    labels: list[Any]
    probabilities: np.ndarray
    features: list[dict[str, Any]] | None


class PredictionLog:
    def __init__(self, store: Store, settings: PredictionLogSettings, spool_dir: Path, registry: CollectorRegistry) -> None:
        self.store = store
        self.settings = settings
        self.spool_dir = spool_dir
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.rows = Counter(
            "modelmon_prediction_log_rows", "Prediction log rows, by what happened to them.", ["outcome"], registry=registry
        )
        self.outcomes = {outcome: self.rows.labels(outcome) for outcome in OUTCOMES}
        self.queued_rows = Gauge("modelmon_prediction_log_queue_rows", "Rows waiting to be written.", registry=registry)
        self.spool_files = Gauge("modelmon_prediction_log_spool_files", "Spooled batches waiting for the store.", registry=registry)
        self._queue: deque[Chunk] = deque()
        self._queued = 0
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._busy = False  # the writer holds a batch it took from the queue
        self._store_down_until = 0.0
        self._thread: threading.Thread | None = None

    # -- request path ------------------------------------------------------------------

    def submit(self, chunk: Chunk) -> None:
        """Queue a request's predictions; never blocks, never raises."""
        n = len(chunk.ids)
        with self._lock:
            if self._queued + n > self.settings.max_queue_rows:
                self.outcomes["dropped"].inc(n)
                return
            self._queue.append(chunk)
            self._queued += n
        if self._queued >= self.settings.batch_rows:
            self._wake.set()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        self.spool_files.set(len(self._spooled()))
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Write or spool everything queued, then stop."""
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until the queue is empty (for tests and shutdown); True if it emptied."""
        deadline = time.monotonic() + timeout
        self._wake.set()
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queue and not self._busy:
                    return True
            time.sleep(0.01)
        return False

    # -- writer thread -----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self.settings.flush_seconds)
            self._wake.clear()
            while True:
                batch = self._take()
                if not batch:
                    break
                try:
                    self._write(self._rows(batch))
                finally:
                    self._busy = False
            if time.monotonic() >= self._store_down_until:
                self._replay()
            if self._stopping:
                with self._lock:
                    if not self._queue:
                        return

    def _take(self) -> list[Chunk]:
        with self._lock:
            batch, rows = [], 0
            while self._queue and rows < self.settings.batch_rows:
                chunk = self._queue.popleft()
                batch.append(chunk)
                rows += len(chunk.ids)
            self._queued -= rows
            self._busy = bool(batch)
            self.queued_rows.set(self._queued)
            return batch

    @staticmethod
    def _rows(batch: list[Chunk]) -> list[dict[str, Any]]:
        rows = []
        for chunk in batch:
            at = datetime.fromtimestamp(chunk.predicted_at, UTC)
            probabilities = chunk.probabilities.tolist()
            for i, prediction_id in enumerate(chunk.ids):
                rows.append({
                    "id": prediction_id, "model": chunk.model, "version": chunk.version,
                    "predicted_at": at, "predicted_label": str(chunk.labels[i]),
                    "probabilities": probabilities[i],
                    "features": chunk.features[i] if chunk.features is not None else None,
                })  # fmt: skip
        return rows

    def _insert(self, rows: list[dict[str, Any]]) -> None:
        with self.store.write() as connection:
            connection.execute(insert_ignoring_duplicates(predictions, self.store.dialect), rows)

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if time.monotonic() < self._store_down_until:
            self._spool(rows)
            return
        try:
            self._insert(rows)
        except Exception as exc:  # any store failure: keep the rows on disk instead
            logger.warning("prediction log: store unavailable (%s); spooling %d rows", type(exc).__name__, len(rows))
            self._store_down_until = time.monotonic() + self.settings.retry_seconds
            self._spool(rows)
            return
        self.outcomes["written"].inc(len(rows))

    def _spool(self, rows: list[dict[str, Any]]) -> None:
        name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.jsonl"
        temporary = self.spool_dir / f".{name}.tmp"
        try:
            with temporary.open("w") as f:
                for row in rows:
                    f.write(json.dumps({**row, "predicted_at": row["predicted_at"].isoformat()}) + "\n")
                f.flush()
            temporary.rename(self.spool_dir / name)  # whole files only: a crash leaves a .tmp, not half a batch
        except OSError:
            logger.exception("prediction log: cannot spool %d rows", len(rows))
            self.outcomes["dropped"].inc(len(rows))
            return
        self.outcomes["spooled"].inc(len(rows))
        self.spool_files.set(len(self._spooled()))

    def _spooled(self) -> list[Path]:
        return sorted(self.spool_dir.glob("*.jsonl"))

    def _replay(self) -> None:
        for path in self._spooled():
            rows = []
            try:
                text = path.read_text()
            except FileNotFoundError:  # another replica sharing the spool replayed it
                continue
            for line in text.splitlines():
                row = json.loads(line)
                row["predicted_at"] = datetime.fromisoformat(row["predicted_at"])
                rows.append(row)
            try:
                for start in range(0, len(rows), self.settings.batch_rows):
                    self._insert(rows[start : start + self.settings.batch_rows])
            except Exception as exc:
                logger.warning("prediction log: replay failed (%s); will retry", type(exc).__name__)
                self._store_down_until = time.monotonic() + self.settings.retry_seconds
                return
            path.unlink(missing_ok=True)
            self.outcomes["replayed"].inc(len(rows))
            self.spool_files.set(len(self._spooled()))
