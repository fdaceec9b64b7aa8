"""The prediction log: every prediction written to the store, without slowing a request and
without losing one when the store or the process fails.

Each model call (one request, or a batch of them) appends one JSON line to a journal
segment on local disk before its requests are answered. A segment is a file of
``SEGMENT_BYTES`` (allocated on disk when it opens, so a full disk is an error there, not a
crash later) mapped into memory: a line is a copy into the mapping, with no system call.
Once copied it survives the process being killed, even with SIGKILL: the mapping's pages
are the file's own pages in the kernel's cache. (A ``write`` per line, as before, cost the
event loop 3.5-5.5 µs per model call in place, against 0.9 µs in a tight loop: the call
released the GIL, and a busy thread of the process took it; issue 18.) Segments are
sealed every ``segment_seconds``, cut to their used length. A writer process
(``segment_writer``: a process, so that it never takes the GIL from the event loop) inserts
each sealed segment into the store in batches and deletes it; when the store is slow or down
the segments simply wait on disk (they are the spool) and are retried every
``retry_seconds``. Inserts are ``ON CONFLICT DO NOTHING`` on the prediction id,
so a segment inserted twice (a crash between insert and delete) is stored once.

Each process journals under its own prefix and holds a lock on it; at start-up, the
segments of prefixes whose lock is free (a process that died) are inserted too, an open
segment first cut after its last line (``segment_writer.trim_unused``). So labels can count
on every acknowledged prediction reaching the store.

Counters ``modelmon_prediction_log_rows_total{outcome}``: ``written`` (inserted at the first
try), ``spooled`` (the first try failed: kept on disk), ``replayed`` (inserted after a failed
try, or left by a process that died), ``dropped`` (could not even be journaled).
"""

from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import mmap
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import BaseModel, Field

from modelmon.serving.segment_writer import SEGMENT_SUFFIX, sealed_segments
from modelmon.store import STORE_URL_ENV, Store

logger = logging.getLogger("modelmon.serving")

OUTCOMES = ("written", "spooled", "replayed", "dropped")
#: A journal segment's size: about 40,000 one-row lines, several times what the busiest
#: server of the serving benchmark journals in a ``segment_seconds`` (a segment that fills up
#: is sealed early). A longer line gets a segment of its own size.
SEGMENT_BYTES = 4 * 1024 * 1024


class PredictionLogSettings(BaseModel):
    enabled: bool = True
    feature_sample: float = Field(0.0, ge=0, le=1, description="Share of model calls (a request, or a batch of them) whose input features are logged too.")
    batch_rows: int = Field(2000, ge=1, description="Most rows per insert.")
    segment_seconds: float = Field(0.5, gt=0, description="How long a journal segment stays open before it is written to the store.")
    spool_dir: Path | None = Field(None, description="Journal directory [default: $MODELMON_HOME/spool].")
    retry_seconds: float = Field(2.0, gt=0, description="How often a down store is tried again.")
    events_dir: Path | None = Field(None, description="Also hand each sealed segment to this directory, for the prediction event publisher (modelmon.streams).")


@dataclass(slots=True)
class Chunk:
    """One model call's predictions, journaled as one line. Their ids are consecutive:
    ``<id_prefix>-<first_id>``, ``<id_prefix>-<first_id + 1>``, ..."""

    model: str
    version: int
    predicted_at: float
    id_prefix: str
    first_id: int
    # Predicted class labels, as text; a regressor's values as numbers, or all as text
    # (repr) when one is not finite (JSON has no NaN): the writer stores them as text.
    labels: list[str] | list[float]
    probabilities: np.ndarray | None  # a classifier's [N, C]; None for a model without them
    features: list[dict[str, Any]] | None


@dataclass(slots=True)
class _Segment:
    """The open journal segment: a file mapped into memory (``memory``), or, where it cannot
    be mapped, a file appended to with ``write`` (``fd``); ``used``: the bytes of its lines."""

    path: Path
    memory: mmap.mmap | None
    fd: int | None
    opened: float
    used: int = 0

    def room(self, n: int) -> bool:
        return self.memory is None or self.used + n <= len(self.memory)

    def append(self, line: bytes) -> None:
        if self.memory is not None:
            end = self.used + len(line)
            self.memory[self.used : end] = line
            self.used = end
        else:
            assert self.fd is not None
            os.write(self.fd, line)
            self.used += len(line)

    def seal(self) -> None:
        """Unmapped (or closed), cut to its lines, renamed without ``.open`` so the writer
        may take it; deleted if it has no line."""
        if self.memory is not None:
            self.memory.close()
        if self.fd is not None:
            os.close(self.fd)
        if not self.used:
            self.path.unlink(missing_ok=True)
            return
        if self.memory is not None:
            os.truncate(self.path, self.used)
        self.path.rename(self.path.with_suffix(""))


def prediction_ids(prefix: str, first: int, n: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(first, first + n)]


class PredictionLog:
    def __init__(self, store: Store, settings: PredictionLogSettings, spool_dir: Path, registry: CollectorRegistry) -> None:
        self.store = store
        self.settings = settings
        self.directory = spool_dir
        self.directory.mkdir(parents=True, exist_ok=True)
        self.prefix = uuid.uuid4().hex[:12]
        self.rows = Counter(
            "modelmon_prediction_log_rows", "Prediction log rows, by what happened to them.", ["outcome"], registry=registry
        )
        self.outcomes = {outcome: self.rows.labels(outcome) for outcome in OUTCOMES}
        self.pending_segments = Gauge(
            "modelmon_prediction_log_spool_files", "Journal segments waiting to be written to the store.", registry=registry
        )
        self._lock_file = (self.directory / f"{self.prefix}.lock").open("w")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours while we live
        self._segment_lock = threading.Lock()
        self._numbers = itertools.count(1)  # segments' numbers (next() is atomic: two threads open segments)
        self._segment: _Segment | None = None  # the open one
        self._mapping = True  # False once the file system refused to map a segment
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writer: subprocess.Popen | None = None
        self._reports: threading.Thread | None = None
        self._restart_at = 0.0

    # -- request path ------------------------------------------------------------------

    def submit(self, chunk: Chunk) -> None:
        """Journal one model call's predictions; never blocks on the store, never raises.

        A line is the array ``[model, version, time, id prefix, first id counter, labels,
        probabilities, features]``: one line per model call, however many requests it served,
        copied into the mapped segment. Labels are text, or a regressor's values as JSON numbers (stored
        as their ``repr``, as the text an earlier version journaled). The writer still reads
        the lines of earlier versions: per
        request, ``[model, version, time, ids, labels, probabilities, features]``, and before
        that the objects ``{"m", "v", "t", "ids", "y", "p", "f"}``."""
        try:
            line = orjson.dumps(
                [chunk.model, chunk.version, chunk.predicted_at, chunk.id_prefix, chunk.first_id, chunk.labels,
                 chunk.probabilities, chunk.features],
                option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_APPEND_NEWLINE,
            )
            with self._segment_lock:
                segment = self._segment
                if segment is None or not segment.room(len(line)):
                    self._segment = None
                    if segment is not None:
                        segment.seal()
                    self._segment = segment = self._new_segment(len(line))
                segment.append(line)
        except Exception:  # a full disk, or outputs orjson cannot write: counted, never raised
            logger.exception("prediction log: cannot journal %d rows", len(chunk.labels))
            self.outcomes["dropped"].inc(len(chunk.labels))

    def _new_segment(self, size: int = 0) -> _Segment:
        """A new open segment of ``SEGMENT_BYTES`` (or ``size``), allocated and mapped; where
        the file system cannot map a file (some network and FUSE file systems), this and every
        later segment is appended to with ``write`` instead, as before the mapping."""
        path = self.directory / f"{self.prefix}-{next(self._numbers):09d}{SEGMENT_SUFFIX}.open"
        if not self._mapping:
            return _Segment(path, None, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644), time.monotonic())
        size = max(SEGMENT_BYTES, size)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            if hasattr(os, "posix_fallocate"):
                os.posix_fallocate(fd, 0, size)  # ENOSPC here; a sparse mapping would die of SIGBUS
            else:  # macOS: a sparse file (only Linux is a supported server platform)
                os.ftruncate(fd, size)
            memory = mmap.mmap(fd, size)
        except OSError as exc:
            path.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise
            logger.warning("prediction log: cannot map a journal segment in %s (%s); journaling with write() instead",
                           self.directory, exc)
            self._mapping = False
            return self._new_segment(size)
        finally:
            os.close(fd)  # the mapping keeps the file
        return _Segment(path, memory, None, time.monotonic())

    def _close_segment(self) -> None:
        with self._segment_lock:
            segment, self._segment = self._segment, None
            if segment is not None:
                segment.seal()

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer process, and the thread that seals segments and watches it."""
        self._start_writer()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Seal the journal and have the writer write what the store will take; the rest
        stays on disk, for the next start."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._close_segment()
        self._stop_writer(timeout)
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()
        (self.directory / f"{self.prefix}.lock").unlink(missing_ok=True)

    def flush(self, timeout: float = 10.0) -> bool:
        """Seal and write everything journaled so far (tests, shutdown); True if all of it
        reached the store."""
        self._close_segment()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not sealed_segments(self.directory, self.prefix):
                return True
            time.sleep(0.05)
        return False

    def _run(self) -> None:
        """Seal the open segment every ``segment_seconds``; start the writer again if it died."""
        while not self._stop.wait(self._tick):
            segment = self._segment
            if segment is not None and segment.used and time.monotonic() - segment.opened >= self.settings.segment_seconds:
                try:
                    self._rotate()
                except Exception:  # keep sealing: a dead thread would leave segments to fill up first
                    logger.exception("prediction log: rotating the journal failed")
            writer = self._writer
            if writer is not None and writer.poll() is not None and time.monotonic() >= self._restart_at:
                logger.error("prediction log: the writer process exited with %s; starting it again", writer.returncode)
                self._restart_at = time.monotonic() + self.settings.retry_seconds
                self._start_writer()

    def _rotate(self) -> None:
        """Seal the open segment and put the next one in its place, made here before the
        lock is taken: the request path waits for a swap, not for a file to be allocated."""
        try:
            following = self._new_segment()
        except OSError:  # a full disk: the next model call tries again, and counts what it drops
            logger.exception("prediction log: cannot open a journal segment")
            return
        with self._segment_lock:
            segment, self._segment = self._segment, following
        if segment is not None:
            try:
                segment.seal()
            except OSError:  # left open: the next server's writer cuts and writes it
                logger.exception("prediction log: cannot seal %s", segment.path)

    @property
    def _tick(self) -> float:
        """How often segments are sealed (when due) and written."""
        return min(0.1, self.settings.segment_seconds)

    # -- the writer process ------------------------------------------------------------

    def _start_writer(self) -> None:
        command = [
            sys.executable, "-m", "modelmon.serving.segment_writer", "--spool", str(self.directory),
            "--prefix", self.prefix, "--batch-rows", str(self.settings.batch_rows),
            "--retry-seconds", str(self.settings.retry_seconds), "--period", str(self._tick),
            *(["--events-dir", str(self.settings.events_dir)] if self.settings.events_dir is not None else []),
        ]
        env = {**os.environ, STORE_URL_ENV: self.store.url.render_as_string(hide_password=False)}
        self._writer = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self._reports = threading.Thread(target=self._read_reports, args=(self._writer,), name="prediction-log-reports", daemon=True)
        self._reports.start()

    def _read_reports(self, writer: subprocess.Popen) -> None:
        """The writer's ``<event> <n>`` lines, into the metrics, until it exits."""
        assert writer.stdout is not None
        for line in writer.stdout:
            event, _, n = line.decode(errors="replace").partition(" ")
            if not n.strip().isdigit():
                logger.warning("prediction log: unexpected output of the writer: %r", line[:200])
            elif event == "pending":
                self.pending_segments.set(int(n))
            elif event in self.outcomes:
                self.outcomes[event].inc(int(n))

    def _stop_writer(self, timeout: float) -> None:
        """Ask for a last pass over the sealed segments; wait for it, at most ``timeout``."""
        writer, self._writer = self._writer, None
        if writer is None:
            return
        assert writer.stdin is not None
        try:
            if not writer.stdin.closed:
                writer.stdin.write(b"stop\n")
                writer.stdin.close()
        except BrokenPipeError:
            pass  # it had exited
        try:
            writer.wait(timeout)
        except subprocess.TimeoutExpired:
            logger.warning("prediction log: the writer did not finish in %.0f s; the rest waits on disk", timeout)
            writer.kill()
            writer.wait()
        if self._reports is not None:
            self._reports.join(timeout)
