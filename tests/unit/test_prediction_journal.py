"""The prediction log's journal: segments mapped into memory (``PredictionLog``). A line
copied into the mapping must survive its process being killed; the dead process's open
segment, zeros past its lines, is cut and written by the next writer; a segment that fills
up is sealed early; one that cannot be allocated (a full disk) drops and counts the rows,
and the next call journals again."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text

from modelmon.serving import prediction_log
from modelmon.serving.prediction_log import Chunk, PredictionLog, PredictionLogSettings
from modelmon.serving.segment_writer import SegmentWriter, trim_unused
from modelmon.store import Store, close_store, open_store

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path: Path):
    url = str(tmp_path / "store.db")
    yield open_store(url)
    close_store(url)


def stored_ids(store: Store) -> list[str]:
    with store.read() as connection:
        return sorted(row[0] for row in connection.execute(text("SELECT id FROM predictions")))


def outcomes(log: PredictionLog) -> dict[str, float]:
    return {s.labels["outcome"]: s.value for s in log.rows.collect()[0].samples if s.name.endswith("_total")}


def write_all(log: PredictionLog) -> None:
    """Start the log, have everything journaled so far written to the store, stop it."""
    log.start()
    try:
        assert log.flush()
    finally:
        log.stop()


def chunk(first: int, rows: int = 1, features: list | None = None) -> Chunk:
    return Chunk("shop", 1, 1_700_000_000.0 + first, "p", first, [float(first + i) for i in range(rows)], None, features)


def test_lines_of_a_killed_process_are_trimmed_and_written(store: Store, tmp_path: Path):
    spool = tmp_path / "spool"
    script = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        from prometheus_client import CollectorRegistry
        from modelmon.serving.prediction_log import Chunk, PredictionLog, PredictionLogSettings
        from modelmon.store import open_store
        log = PredictionLog(open_store({str(tmp_path / "store.db")!r}), PredictionLogSettings(), Path({str(spool)!r}), CollectorRegistry())
        for i in range(250):
            log.submit(Chunk("shop", 1, 1_700_000_000.0 + i, "dead", i, [float(i)], None, None))
        os.kill(os.getpid(), signal.SIGKILL)  # no seal, no unmap: only the kernel's pages remain
    """)
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == -signal.SIGKILL
    (segment,) = spool.glob("*.open")
    assert segment.stat().st_size == prediction_log.SEGMENT_BYTES  # allocated whole: zeros past the lines
    reports: list[tuple[str, int]] = []
    writer = SegmentWriter(store, spool, "next", 2000, 1.0, lambda event, n: reports.append((event, n)))
    writer.adopt_orphans()
    (adopted,) = writer.sealed_segments()
    assert adopted.read_bytes().count(b"\n") == 250 and adopted.read_bytes().endswith(b"]\n")
    writer.write_sealed(final=True)
    assert stored_ids(store) == sorted(f"dead-{i}" for i in range(250))
    assert ("replayed", 250) in reports
    assert not list(spool.glob("*.jsonl*"))


def test_trim_keeps_a_line_cut_short_which_the_writer_skips(store: Store, tmp_path: Path):
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = b'["shop",1,1700000000.0,"cut",1,[1.5],null,null]\n["shop",1,1700000001.0,"cut",2,[2.5],null,null]\n'
    segment = spool / "dead-000000001.jsonl.open"
    segment.write_bytes(lines + b'["shop",1,17000' + bytes(1000))
    assert trim_unused(segment) == len(lines) + len(b'["shop",1,17000')
    empty = spool / "dead-000000002.jsonl.open"
    empty.write_bytes(bytes(4096))  # opened, never written
    assert trim_unused(empty) == 0 and empty.stat().st_size == 0
    (spool / "dead.lock").touch()
    writer = SegmentWriter(store, spool, "next", 2000, 1.0, lambda event, n: None)
    writer.adopt_orphans()
    assert [p.name for p in writer.sealed_segments()] == ["next-orphan-dead-000000001.jsonl"]  # the empty one deleted
    writer.write_sealed(final=True)
    assert stored_ids(store) == ["cut-1", "cut-2"]


def test_a_full_segment_is_sealed_early_and_a_long_line_has_one_of_its_own(store: Store, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(prediction_log, "SEGMENT_BYTES", 512)
    log = PredictionLog(store, PredictionLogSettings(segment_seconds=60), tmp_path / "spool", CollectorRegistry())
    long_features = [{"note": "x" * 2000}]
    chunks = [chunk(i) for i in range(20)] + [chunk(100, features=long_features)] + [chunk(200 + i) for i in range(5)]
    for c in chunks:
        log.submit(c)
    sealed = sorted((tmp_path / "spool").glob("*.jsonl"))
    assert len(sealed) >= 3  # 20 lines of about 60 bytes fill more than two 512-byte segments
    assert any(p.stat().st_size > 2000 for p in sealed)  # the long line, in a segment of its size
    write_all(log)
    assert stored_ids(store) == sorted(f"p-{c.first_id}" for c in chunks)
    assert outcomes(log) == {"written": len(chunks), "spooled": 0, "replayed": 0, "dropped": 0}


def test_a_segment_that_cannot_be_allocated_drops_and_counts_its_rows(store: Store, tmp_path: Path, monkeypatch):
    log = PredictionLog(store, PredictionLogSettings(), tmp_path / "spool", CollectorRegistry())

    def disk_full(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(prediction_log.os, "posix_fallocate", disk_full)
    log.submit(chunk(1, rows=3))
    assert not list((tmp_path / "spool").glob("*.jsonl*"))  # no segment left half made
    monkeypatch.undo()
    log.submit(chunk(4, rows=2))
    write_all(log)
    assert outcomes(log) == {"written": 2, "spooled": 0, "replayed": 0, "dropped": 3}
    assert stored_ids(store) == ["p-4", "p-5"]


def test_an_idle_open_segment_is_not_sealed_and_a_stop_leaves_no_empty_one(store: Store, tmp_path: Path):
    log = PredictionLog(store, PredictionLogSettings(segment_seconds=0.05), tmp_path / "spool", CollectorRegistry())
    log.start()
    try:
        log.submit(chunk(1))
        assert log.flush()
        log.submit(chunk(2, features=[{"a": np.float64(1.5)}]))
        deadline = 50
        while stored_ids(store) != ["p-1", "p-2"] and deadline:  # sealed by the thread, written by the writer
            deadline -= 1
            time.sleep(0.1)
        assert stored_ids(store) == ["p-1", "p-2"]
        open_segments = list((tmp_path / "spool").glob("*.open"))
        assert len(open_segments) == 1  # the next one, opened by the thread, waiting for lines
    finally:
        log.stop()
    assert not list((tmp_path / "spool").glob("*.jsonl*"))


def test_where_a_segment_cannot_be_mapped_the_journal_is_written(store: Store, tmp_path: Path, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise OSError(errno.ENODEV, os.strerror(errno.ENODEV))  # as some FUSE and network file systems do

    monkeypatch.setattr(prediction_log.mmap, "mmap", refuse)
    log = PredictionLog(store, PredictionLogSettings(), tmp_path / "spool", CollectorRegistry())
    for i in range(5):
        log.submit(chunk(i, rows=2 if i % 2 else 1))
    assert "journaling with write() instead" in caplog.text
    (segment,) = (tmp_path / "spool").glob("*.open")
    assert segment.read_bytes().count(b"\n") == 5  # appended: no zeros to cut
    write_all(log)
    assert outcomes(log) == {"written": 7, "spooled": 0, "replayed": 0, "dropped": 0}
    # chunk(i) has ids p-i, p-(i+1) for two rows: p-0; p-1, p-2; p-2; p-3, p-4; p-4 (repeats stored once)
    assert stored_ids(store) == ["p-0", "p-1", "p-2", "p-3", "p-4"]


def test_outputs_the_journal_cannot_write_are_dropped_and_counted_not_raised(store: Store, tmp_path: Path):
    log = PredictionLog(store, PredictionLogSettings(), tmp_path / "spool", CollectorRegistry())
    transposed = np.ones((2, 3)).T  # not C-contiguous: orjson refuses it
    log.submit(Chunk("shop", 1, 1_700_000_000.0, "p", 1, ["a", "b", "a"], transposed, None))
    log.submit(chunk(10))
    write_all(log)
    assert outcomes(log) == {"written": 1, "spooled": 0, "replayed": 0, "dropped": 3}
    assert stored_ids(store) == ["p-10"]


def test_segments_left_without_a_lock_file_are_written(store: Store, tmp_path: Path):
    """A server that stopped while the store was down leaves its sealed segments and no
    lock file (its lock is released at stop); one that could not seal leaves ``.open``."""
    spool = tmp_path / "spool"
    spool.mkdir()
    (spool / "gone-000000001.jsonl").write_bytes(b'["shop",1,1700000000.0,"gone",1,[1.5],null,null]\n')
    (spool / "gone-000000002.jsonl.open").write_bytes(b'["shop",1,1700000001.0,"gone",2,[2.5],null,null]\n' + bytes(100))
    writer = SegmentWriter(store, spool, "next", 2000, 1.0, lambda event, n: None)
    writer.adopt_orphans()
    writer.write_sealed(final=True)
    assert stored_ids(store) == ["gone-1", "gone-2"]
    assert sorted(p.name for p in spool.iterdir()) == []
