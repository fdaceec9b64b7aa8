"""The prediction log's writer: inserts sealed journal segments into the store, then deletes
them. ``PredictionLog`` runs it in a child process of the server,
``python -m modelmon.serving.segment_writer``.

Why a process and not a thread: measured in the serving benchmark (one-row requests,
concurrency 8, 2 cores), the same writer in a thread cost about 4% of the server's
throughput beyond its own CPU, as it took the GIL from a saturated event loop; in a process
of its own it costs only its CPU, and runs at a lower priority than serving
(``WRITER_NICENESS``): a busy server answers first, and the segments wait on disk, which is
what they are for.

The parent talks to it over pipes:

- stdin: ``stop`` asks for a last pass over every sealed segment, then exit; end of file
  (the parent died) means exit at once: the next server on the spool adopts what is left.
- stdout: one line per event, ``<outcome> <rows>`` (``written``, ``spooled``,
  ``replayed``) and ``pending <segments>``, which the parent adds to its metrics.

With ``--events-dir`` (``modelmon serve --publish-predictions``), each sealed segment is also
hard-linked there before it is inserted, for the event publisher (modelmon.streams.publisher)
to publish and delete: the store and the broker each get the segment, neither waits for the
other, and a link costs no copy.

The store's URL comes in ``$MODELMON_STORE_URL`` (not in the arguments, which ``ps``
shows); the parent has already migrated it.
"""

from __future__ import annotations

import argparse
import fcntl
import logging
import os
import select
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from modelmon.store.engine import Store, create_store_engine, resolve_store_url
from modelmon.store.predictions import (
    PredictionTimestamps,
    insert_journal_lines,
    insert_sqlite_lines,
    label_texts,
    sqlite_line,
)

logger = logging.getLogger("modelmon.serving")

SEGMENT_SUFFIX = ".jsonl"
#: Added to the writer process's nice value: serving comes first on a busy machine.
WRITER_NICENESS = 10

#: ``report(event, n)``: an outcome's rows, or ``pending`` and the number of sealed segments.
Report = Callable[[str, int], None]


def sealed_segments(directory: Path, prefix: str) -> list[Path]:
    """The journal ``prefix``'s sealed segments, oldest first (the open one ends in ``.open``)."""
    return sorted(directory.glob(f"{prefix}-*{SEGMENT_SUFFIX}"))


def trim_unused(path: Path) -> int:
    """Cut a dead process's open segment after its last line; its length. A segment is
    allocated whole when it opens (``PredictionLog``): past the lines it is zeros. A line
    the crash cut short stays, and is skipped when read."""
    with path.open("r+b") as segment:
        used = len(segment.read().rstrip(b"\0"))
        segment.truncate(used)
    return used


class SegmentWriter:
    """Writes the sealed segments of one journal ``prefix`` in ``directory``, and adopts the
    segments of journals whose process died (their lock is free)."""

    def __init__(
        self, store: Store, directory: Path, prefix: str, batch_rows: int, retry_seconds: float, report: Report,
        events_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.events_dir = events_dir
        self._linked: set[str] = set()
        self.directory = directory
        self.prefix = prefix
        self.batch_rows = batch_rows
        self.retry_seconds = retry_seconds
        self.report = report
        self._retry_at = 0.0
        self._failed_once: set[Path] = set()
        self._timestamp = PredictionTimestamps()
        self._pending_reported: int | None = None

    def _report_pending(self, segments: int) -> None:
        if segments != self._pending_reported:
            self._pending_reported = segments
            self.report("pending", segments)

    def adopt_orphans(self) -> None:
        """Segments of processes that are gone become ours to write: those whose lock is
        free (a process that died), and those left with no lock file at all (a server that
        stopped while the store was down, or could not seal a segment)."""
        prefixes = {lock.stem for lock in self.directory.glob("*.lock")}
        prefixes |= {path.name.split("-", 1)[0] for path in self.directory.glob(f"*-*{SEGMENT_SUFFIX}*")}
        prefixes.discard(self.prefix)
        for prefix in sorted(prefixes):
            lock = self.directory / f"{prefix}.lock"
            with lock.open("a") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # alive: its own writer handles its segments
                for path in self.directory.glob(f"{prefix}-*{SEGMENT_SUFFIX}*"):
                    if path.name.endswith(".open") and not trim_unused(path):
                        path.unlink()
                        continue
                    sealed = path.with_name(path.name.removesuffix(".open"))
                    adopted = self.directory / f"{self.prefix}-orphan-{sealed.name}"
                    path.rename(adopted)
                    self._failed_once.add(adopted)
                lock.unlink(missing_ok=True)

    def sealed_segments(self) -> list[Path]:
        return sealed_segments(self.directory, self.prefix)

    def write_sealed(self, final: bool) -> None:
        """Insert and delete every sealed segment, in order; stop at the first the store
        refuses (it waits on disk, tried again after ``retry_seconds`` unless ``final``)."""
        segments = self.sealed_segments()
        self._report_pending(len(segments))
        for path in segments:
            self.link_for_events(path)
        if not final and time.monotonic() < self._retry_at:
            return
        for path in segments:
            try:
                batches, rows = self.read(path)
            except FileNotFoundError:  # adopted by a newer server after this one's parent died
                continue
            try:
                for batch in batches:
                    self.insert(batch)
            except Exception as exc:  # any store failure: the segment waits on disk
                if path not in self._failed_once:
                    self._failed_once.add(path)
                    self.report("spooled", rows)
                    logger.warning("prediction log: store unavailable (%s); %d rows wait on disk", type(exc).__name__, rows)
                self._retry_at = time.monotonic() + self.retry_seconds
                return
            self.report("replayed" if path in self._failed_once else "written", rows)
            self._failed_once.discard(path)
            path.unlink(missing_ok=True)
            self._linked.discard(path.name)
            self._report_pending(len(self.sealed_segments()))

    def link_for_events(self, path: Path) -> None:
        """Hand a sealed segment to the event publisher, once (a link, else a copy)."""
        if self.events_dir is None or path.name in self._linked:
            return
        _, orphan, original = path.name.partition("-orphan-")
        if orphan and (
            (self.events_dir / original).exists() or any(self.events_dir.glob(f"*-orphan-{original}"))
        ):  # adopted from a server that died after linking it: its link is (being) published
            self._linked.add(path.name)
            return
        target = self.events_dir / path.name
        try:
            os.link(path, target)
        except FileExistsError:
            pass
        except FileNotFoundError:  # adopted by a newer server after this one's parent died
            return
        except OSError:  # another file system: copy, then rename, so the publisher never reads half
            partial = target.with_name(target.name + ".partial")
            shutil.copyfile(path, partial)
            partial.rename(target)
        self._linked.add(path.name)

    def read(self, path: Path) -> tuple[list[list[Any]], int]:
        """The segment's entries, in batches of about ``batch_rows`` rows, and its number of
        rows: for SQLite each line's parameters (``sqlite_line``), for PostgreSQL each line's
        text for ``insert_journal_lines``. Python touches each line once (to check it and
        date it), and each row only to check that its label is text, or make a regressor's
        value its text (``label_texts``)."""
        sqlite = self.store.dialect != "postgresql"
        batches: list[list[Any]] = [[]]
        batch_rows = rows = 0
        for line in path.read_bytes().splitlines():
            try:
                chunk = orjson.loads(line)
            except orjson.JSONDecodeError:  # a line cut short by a crash mid-write
                continue
            if type(chunk) is dict:  # journaled by an earlier version, one request per line
                chunk = [chunk["m"], chunk["v"], chunk["t"], chunk["ids"], chunk["y"], chunk["p"], chunk.get("f")]
            at = self._timestamp(chunk[2])
            entry: Any
            if len(chunk) == 8:
                n = len(chunk[5])
                if sqlite:
                    entry = sqlite_line(at, chunk)
                else:
                    labels = chunk[5]
                    texts = label_texts(labels)
                    text = line if texts is labels else orjson.dumps([*chunk[:5], texts, *chunk[6:]])  # a regressor's numbers
                    entry = b'["' + at.encode() + b'",' + text + b"]"
            else:  # an earlier version's line, listing its ids
                model, version, t, ids, labels, probabilities, features = chunk
                upgraded = [model, version, t, None, None, [str(y) for y in labels], probabilities, features]
                n = len(ids)
                entry = (sqlite_line(at, upgraded, ids) if sqlite else
                         b'["' + at.encode() + b'",' + orjson.dumps(upgraded) + b"," + orjson.dumps(ids) + b"]")
            if batch_rows and batch_rows + n > self.batch_rows:
                batches.append([])
                batch_rows = 0
            batches[-1].append(entry)
            batch_rows += n
            rows += n
        return batches, rows

    def insert(self, batch: list[Any]) -> None:
        """One batch of ``read``'s entries, in one transaction."""
        with self.store.write() as connection:
            if self.store.dialect == "postgresql":
                insert_journal_lines(connection, batch)
            else:
                insert_sqlite_lines(connection, batch)


def parent_says(timeout: float) -> bytes | None:
    """What the parent wrote on stdin within ``timeout`` seconds: ``b""`` when it has gone,
    ``None`` when it said nothing."""
    if not select.select([sys.stdin.fileno()], [], [], timeout)[0]:
        return None
    return os.read(sys.stdin.fileno(), 256)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="modelmon's prediction log writer (started by modelmon serve)")
    parser.add_argument("--spool", type=Path, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--batch-rows", type=int, required=True)
    parser.add_argument("--retry-seconds", type=float, required=True)
    parser.add_argument("--period", type=float, required=True, help="seconds between passes")
    parser.add_argument("--events-dir", type=Path, help="also link each sealed segment here, for the event publisher")
    args = parser.parse_args(argv)
    # A terminal's Ctrl-C and a service manager's SIGTERM reach the whole process group: the
    # parent decides when this process stops (it first seals the open segment).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s (writer): %(message)s")
    os.nice(WRITER_NICENESS)

    def report(event: str, n: int) -> None:
        try:
            sys.stdout.write(f"{event} {n}\n")
            sys.stdout.flush()
        except BrokenPipeError:  # the parent is gone: what was written stays written
            raise SystemExit(0) from None

    url = resolve_store_url()
    if args.events_dir is not None:
        args.events_dir.mkdir(parents=True, exist_ok=True)
    writer = SegmentWriter(
        Store(url, create_store_engine(url)), args.spool, args.prefix, args.batch_rows, args.retry_seconds, report, args.events_dir
    )
    writer.adopt_orphans()
    while True:
        said = parent_says(args.period)
        if said == b"":
            return 0
        if said is not None and b"stop" in said:
            writer.write_sealed(final=True)
            return 0
        writer.write_sealed(final=False)


if __name__ == "__main__":
    sys.exit(main())
