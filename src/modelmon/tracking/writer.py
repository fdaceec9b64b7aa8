"""Batched writes of metric values, off the training loop's thread.

A loop that logs every batch would otherwise pay a transaction per call. Values wait in
memory and a background thread writes them in one transaction at most ``flush_seconds``
later (sooner when ``max_rows`` are waiting), so the store, and Grafana reading it, lag
the loop by about a second. A write that fails (a database restart, say) keeps its rows
and is retried on the next tick; only the final flush, when the run ends, raises.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from modelmon.store import Store
from modelmon.tracking.records import insert_metric_values

log = logging.getLogger("modelmon.tracking")


class BatchWriter:
    def __init__(
        self,
        store: Store,
        *,
        flush_seconds: float,
        max_rows: int,
        after_flush: Callable[[], None] | None = None,
        name: str = "modelmon-run-writer",
    ) -> None:
        self._store = store
        self._flush_seconds = flush_seconds
        self._max_rows = max_rows
        self._after_flush = after_flush
        self._rows: list[Mapping[str, Any]] = []
        self._rows_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def add(self, rows: list[Mapping[str, Any]]) -> None:
        with self._rows_lock:
            self._rows.extend(rows)
            full = len(self._rows) >= self._max_rows
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Write everything added so far, now, in this thread."""
        with self._flush_lock:
            with self._rows_lock:
                rows, self._rows = self._rows, []
            try:
                insert_metric_values(self._store, rows)
            except BaseException:
                with self._rows_lock:
                    self._rows[:0] = rows
                raise
        if self._after_flush is not None:
            self._after_flush()

    def close(self) -> None:
        """Stop the thread and write what is left (raising if that fails)."""
        self._closed = True
        self._wake.set()
        self._thread.join()
        self.flush()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self._flush_seconds)
            self._wake.clear()
            if self._closed:
                return
            try:
                self.flush()
            except Exception as exc:
                log.warning("could not write metric values to %s (will retry): %s",
                            self._store.display_url, exc)
