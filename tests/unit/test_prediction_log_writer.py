"""The prediction log's writer has the database build the rows from the journal's lines,
not SQLAlchemy Core: what it stores must read back as what ``insert_ignoring_duplicates(
predictions, ...)`` stores from the same predictions, on SQLite and PostgreSQL, through
SQLAlchemy and as raw columns (the JSON columns' text parsed)."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import orjson
import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import select, text
from sqlalchemy.dialects import sqlite as sqlite_dialect

from modelmon.serving.prediction_log import (
    Chunk,
    PredictionLog,
    PredictionLogSettings,
    prediction_ids,
)
from modelmon.serving.segment_writer import SegmentWriter
from modelmon.store import Store, close_store, open_store
from modelmon.store.predictions import (
    PredictionTimestamps,
    insert_ignoring_duplicates,
    labels,
    predictions,
)
from tests.tracking.conftest import postgres_schema


@pytest.fixture(params=["sqlite", "postgresql"])
def two_stores(request, tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    """Two empty stores of the same database kind: the writer's, and the reference one."""
    if request.param == "sqlite":
        urls = [str(tmp_path / "new.db"), str(tmp_path / "old.db")]
        yield open_store(urls[0]), open_store(urls[1])
        for url in urls:
            close_store(url)
    else:
        with postgres_schema() as new, postgres_schema() as old:
            # The writer's sessions in another time zone: its times must still be UTC.
            yield open_store(new + "%20-ctimezone%3DAmerica%2FNew_York"), open_store(old)
            close_store(new + "%20-ctimezone%3DAmerica%2FNew_York")


def sample_chunks() -> list[Chunk]:
    """Chunks covering what the writer converts: one and several rows, features absent and
    present (non-ASCII, nested, null), probabilities in every float notation, labels of
    several classes' types as text, times near second boundaries and on them."""
    rng = np.random.default_rng(7)
    chunks = [
        Chunk("shop", 3, 1_700_000_000.0, "a", 1, ["gold"], np.array([[0.25, 0.75]]), None),
        Chunk("shop", 3, 1_700_000_000.9999996, "a", 2, ["silver", "bronze"],
              np.array([[2.5e-05, 0.999975], [1e-07, 0.9999999]]), None),
        Chunk("shop", 3, 1_700_000_001.123456, "a", 4, ["gold", "gold"],
              np.array([[5e-324, 1.0], [1e-300, 0.0]]),
              [{"region": "Zürich", "amount": 12.5, "tags": ["x", "y"], "missing": None},
               {"région": "a\"b\\c\n", "amount": 1e-05, "count": 3}]),
        Chunk("shop", 4, 1_700_000_002.5, "a", 6, ["1"], np.array([[1e16, -2.5e-05]]), [{}]),
        Chunk("iris", 1, 1_700_000_002.0000004, "a", 7, ["True"], np.array([[0.1, 0.2, 0.7]]), None),
        Chunk("iris", 1, 1_700_000_002.5000005, "a", 8, ["Ünïcode ☃ \"quoted\""], np.array([[1 / 3, 2 / 3, 0.0]]), None),
    ]
    t = 1_700_000_003.0
    for i in range(40):
        n = int(rng.integers(1, 4))
        probabilities = rng.dirichlet([0.05, 0.05, 0.05], size=n)  # many tiny probabilities
        t += float(rng.uniform(0, 0.4))
        chunks.append(Chunk("shop", 3, t, f"b-{i}", 0, [str(k) for k in range(n)], probabilities, None))
    return chunks


def ids(chunk: Chunk) -> list[str]:
    return prediction_ids(chunk.id_prefix, chunk.first_id, len(chunk.labels))


def old_rows(chunks: list[Chunk]) -> list[dict]:
    """The rows the writer built before, from the journal lines (as the old ``_read``)."""
    rows = []
    for chunk in chunks:
        line = orjson.loads(orjson.dumps(
            {"m": chunk.model, "v": chunk.version, "t": chunk.predicted_at, "ids": ids(chunk),
             "y": chunk.labels, "p": chunk.probabilities, "f": chunk.features},
            option=orjson.OPT_SERIALIZE_NUMPY,
        ))
        at = datetime.fromtimestamp(line["t"], UTC)
        for i, prediction_id in enumerate(line["ids"]):
            rows.append({
                "id": prediction_id, "model": line["m"], "version": line["v"], "predicted_at": at,
                "predicted_label": str(line["y"][i]), "probabilities": line["p"][i] if line["p"] is not None else None,
                "features": line["f"][i] if line["f"] is not None else None,
            })
    return rows


def replayed(chunks: list[Chunk]) -> list[Chunk]:
    """A replay of the first chunks, one of them changed: the stored rows must not change."""
    first = chunks[0]
    return [*chunks[:3], Chunk(first.model, first.version, first.predicted_at + 5, first.id_prefix, first.first_id, ["changed"], first.probabilities, None)]


def write_new(store: Store, chunks: list[Chunk], spool: Path, batch_rows: int) -> None:
    log = PredictionLog(store, PredictionLogSettings(batch_rows=batch_rows), spool, CollectorRegistry())
    log.start()
    try:
        for chunk in chunks:
            log.submit(chunk)
        assert log.flush()
        for chunk in replayed(chunks):
            log.submit(chunk)
        assert log.flush()
    finally:
        log.stop()
    counts = {s.labels["outcome"]: s.value for s in log.rows.collect()[0].samples if s.name.endswith("_total")}
    rows = sum(len(ids(chunk)) for chunk in chunks) + sum(len(ids(chunk)) for chunk in replayed(chunks))
    assert counts == {"written": rows, "spooled": 0, "replayed": 0, "dropped": 0}


def write_old(store: Store, chunks: list[Chunk]) -> None:
    for batch in (old_rows(chunks), old_rows(replayed(chunks))):
        with store.write() as connection:
            connection.execute(insert_ignoring_duplicates(predictions, store.dialect), batch)


def raw_rows(store: Store) -> list[tuple]:
    """Every column as the database holds it, with the JSON columns' text parsed: text and
    storage classes for SQLite; the JSON text and whether ``features`` is SQL NULL for
    PostgreSQL."""
    if store.dialect == "sqlite":
        sql = ("SELECT rowid, id, model, version, typeof(version), predicted_at, typeof(predicted_at), predicted_label,"
               " probabilities, typeof(probabilities), features, typeof(features) FROM predictions ORDER BY rowid")
        json_columns = (8, 10)
    else:
        sql = ("SELECT id, model, version, predicted_at, predicted_label, probabilities::text, features::text,"
               " features IS NULL, json_typeof(features) FROM predictions ORDER BY id")
        json_columns = (5, 6)
    with store.read() as connection:
        rows = [list(row) for row in connection.exec_driver_sql(sql)]
    for row in rows:
        for column in json_columns:
            row[column] = None if row[column] is None else json.loads(row[column])  # text, and valid JSON (None if SQL NULL)
    return [tuple(row) for row in rows]


def test_writer_stores_what_sqlalchemy_core_stored(two_stores, tmp_path):
    new, old = two_stores
    chunks = sample_chunks()
    write_new(new, chunks, tmp_path / "spool", batch_rows=7)  # several batches per segment
    write_old(old, chunks)

    with new.read() as a, old.read() as b:
        query = select(predictions).order_by(predictions.c.id)
        stored, expected = a.execute(query).all(), b.execute(query).all()
    assert stored == expected
    assert len(stored) == sum(len(ids(chunk)) for chunk in chunks)  # the replay added nothing
    by_id = {row.id: row for row in stored}
    assert by_id["a-1"].predicted_label == "gold"  # not the replay's "changed"
    assert by_id["a-1"].features is None and by_id["a-4"].features["region"] == "Zürich"
    assert raw_rows(new) == raw_rows(old)

    # The SQL readers: the feedback join's columns and the labelled_predictions view.
    for store in (new, old):
        with store.write() as connection:
            connection.execute(labels.insert(), [
                {"prediction_id": row.id, "model": row.model, "version": row.version, "label": "gold",
                 "received_at": datetime(2024, 1, 1, tzinfo=UTC)} for row in expected[::2]
            ])
    view = text("SELECT * FROM labelled_predictions ORDER BY prediction_id")
    with new.read() as a, old.read() as b:
        assert a.execute(view).all() == b.execute(view).all()
        assert len(a.execute(view).all()) == len(expected[::2])


def test_timestamps_are_sqlalchemy_sqlite_datetime_text():
    dialect = sqlite_dialect.dialect()
    bind = predictions.c.predicted_at.type.dialect_impl(dialect).bind_processor(dialect)
    rng = random.Random(5)
    times = [0.0, 1e-7, 5e-7, 1.5e-6, 0.9999995, 0.9999996, -0.1, -1e-7, 1_700_000_000.0, 253_402_300_799.0, 253_402_300_799.5]
    for _ in range(20_000):
        whole = rng.randint(0, 4_000_000_000)
        times += [whole + rng.random(), whole + (rng.randrange(1_000_000) + 0.5) / 1e6, whole + 0.9999995 + rng.random() * 1e-6]
    timestamps = PredictionTimestamps()
    for t in [*times, *sorted(times)]:  # out of order and in order (the cached second)
        assert timestamps(t) == bind(datetime.fromtimestamp(t, UTC)), t


def counting_writer(store: Store, spool: Path, retry_seconds: float = 2.0) -> tuple[SegmentWriter, dict[str, int]]:
    """A writer of the journal prefix "p" in ``spool``, in this process, and what it reported."""
    spool.mkdir(parents=True, exist_ok=True)
    reports: dict[str, int] = {}

    def report(event: str, n: int) -> None:
        reports[event] = n if event == "pending" else reports.get(event, 0) + n

    return SegmentWriter(store, spool, "p", batch_rows=2000, retry_seconds=retry_seconds, report=report), reports


def test_segments_of_an_earlier_version_are_written(tmp_path):
    """Lines of earlier journal formats (objects, then one array per request with its ids
    listed) are read, and a cut-short line is skipped."""
    url = str(tmp_path / "store.db")
    store = open_store(url)
    try:
        writer, reports = counting_writer(store, tmp_path / "spool")
        lines = [
            {"m": "shop", "v": 2, "t": 1_700_000_000.5, "ids": ["o-1", "o-2"], "y": ["gold", 3],
             "p": [[0.5, 0.5], [2.5e-05, 0.999975]], "f": None},
            {"m": "shop", "v": 2, "t": 1_700_000_001.0, "ids": ["o-3"], "y": ["x"], "p": [[1.0, 0.0]], "f": [{"a": 1}]},
        ]
        lines.append(["shop", 2, 1_700_000_001.5, ["o-4"], ["y"], [[0.0, 1.0]], None])  # one request per array line
        segment = tmp_path / "spool" / "p-000000007.jsonl"
        segment.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines) + b'["shop",2,1700000002.0,"o",5')
        writer.write_sealed(final=True)
        assert not segment.exists()
        assert reports == {"pending": 0, "written": 4}
        with sqlite3.connect(tmp_path / "store.db") as connection:
            stored = connection.execute("SELECT id, version, predicted_at, predicted_label, probabilities, features FROM predictions ORDER BY id").fetchall()
        stored = [(*row[:4], json.loads(row[4]), json.loads(row[5])) for row in stored]
        assert stored == [
            ("o-1", 2, "2023-11-14 22:13:20.500000", "gold", [0.5, 0.5], None),
            ("o-2", 2, "2023-11-14 22:13:20.500000", "3", [2.5e-05, 0.999975], None),
            ("o-3", 2, "2023-11-14 22:13:21.000000", "x", [1.0, 0.0], {"a": 1}),
            ("o-4", 2, "2023-11-14 22:13:21.500000", "y", [0.0, 1.0], None),
        ]
    finally:
        close_store(url)


def test_store_failure_spools_then_replays(tmp_path):
    """An insert that fails leaves the segment on disk (``spooled``); the next try writes it
    (``replayed``)."""
    url = str(tmp_path / "store.db")
    store = open_store(url)
    try:
        writer, reports = counting_writer(store, tmp_path / "spool", retry_seconds=0.01)
        with store.write() as connection:
            connection.exec_driver_sql("ALTER TABLE predictions RENAME TO predictions_away")
        line = orjson.dumps(["shop", 1, 1_700_000_000.0, "s", 1, ["a", "b"], [[0.5, 0.5], [0.1, 0.9]], None])
        (tmp_path / "spool" / "p-000000001.jsonl").write_bytes(line + b"\n")
        writer.write_sealed(final=True)
        assert len(writer.sealed_segments()) == 1
        with store.write() as connection:
            connection.exec_driver_sql("ALTER TABLE predictions_away RENAME TO predictions")
        writer.write_sealed(final=True)
        assert writer.sealed_segments() == []
        assert reports == {"pending": 0, "spooled": 2, "replayed": 2}
        with store.read() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM predictions").scalar() == 2
    finally:
        close_store(url)


def outcome_counts(log: PredictionLog) -> dict[str, float]:
    return {s.labels["outcome"]: s.value for s in log.rows.collect()[0].samples if s.name.endswith("_total")}


def test_a_killed_writer_process_is_started_again_and_nothing_is_lost(tmp_path):
    url = str(tmp_path / "store.db")
    store = open_store(url)
    try:
        log = PredictionLog(store, PredictionLogSettings(retry_seconds=0.05), tmp_path / "spool", CollectorRegistry())
        log.start()
        chunks = sample_chunks()
        for chunk in chunks[:20]:
            log.submit(chunk)
        assert log.flush()
        first = log._writer
        first.kill()
        first.wait()
        for chunk in chunks[20:]:
            log.submit(chunk)
        assert log.flush()  # written by the writer started in its place
        assert log._writer is not None and log._writer.pid != first.pid
        log.stop()
        assert outcome_counts(log) == {"written": sum(len(c.labels) for c in chunks), "spooled": 0, "replayed": 0, "dropped": 0}
        with store.read() as connection:
            assert connection.exec_driver_sql("SELECT count(*) FROM predictions").scalar() == sum(len(c.labels) for c in chunks)
    finally:
        close_store(url)


def test_the_writer_process_exits_when_its_parent_is_gone(tmp_path):
    """End of file on its stdin (the server died, even by SIGKILL) ends the writer at once;
    what is left on disk is for the next server to adopt."""
    url = str(tmp_path / "store.db")
    store = open_store(url)
    log = PredictionLog(store, PredictionLogSettings(), tmp_path / "spool", CollectorRegistry())
    try:
        log.start()
        log._stop.set()  # the sealing thread would start a new writer
        log._thread.join()
        writer = log._writer
        writer.stdin.close()  # what the kernel does when the parent dies
        # A writer that ignored end of file would still be waiting on its next batch: it
        # must end on its own, cleanly (a bound, not a timing: the suite asserts no speed).
        assert writer.wait(10) == 0
    finally:
        log.stop()
        close_store(url)


#: Floats whose text differs between notations: ``repr`` writes ``1e-05`` and ``1.5e-07``
#: where orjson writes ``0.00001`` and ``1.5e-7``, and SQLite 3.40 would keep 15 digits.
AWKWARD_FLOATS = [21.5, -0.0, 1e-300, 1e16, 1e-05, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, 3.0, -123456789.12345679,
                  1.5e-07]


def regression_chunks() -> list[Chunk]:
    """A regressor's lines (no probabilities), of one to seven rows as batching makes them,
    as ``ModelRuntime`` journals them: values as numbers (several float notations), or all
    as text (``repr``) when one is not finite; features on some lines."""
    rng = np.random.default_rng(5)
    chunks = [Chunk("price", 2, 1_700_000_000.25, "r", 1, [repr(v) for v in (21.5, -0.0, 1e16, float("nan"), float("-inf"))], None, None),
              Chunk("price", 2, 1_700_000_000.9999996, "r", 6, [3.0], None, [{"city": "Zürich", "m2": 71.5}]),
              Chunk("price", 2, 1_700_000_000.9999997, "r", 7, AWKWARD_FLOATS, None, None)]
    t = 1_700_000_001.0
    for i in range(60):
        n = int(rng.integers(1, 8))
        t += float(rng.uniform(0, 0.01))
        features = [{"x": float(v)} for v in rng.normal(size=n)] if i % 9 == 0 else None
        chunks.append(Chunk("price", 3, t, "s", 10 * i, (rng.normal(size=n) * 10.0 ** rng.integers(-8, 20)).tolist(), None, features))
    return chunks


def test_a_regressors_lines_store_what_sqlalchemy_core_stored(two_stores, tmp_path):
    """SQLite inserts a line at a time (``sqlite_line``), PostgreSQL a batch's JSON: either
    way a regressor's rows read back as SQLAlchemy Core's, and a replay adds nothing."""
    new, old = two_stores
    chunks = regression_chunks()
    write_new(new, chunks, tmp_path / "spool", batch_rows=11)
    write_old(old, chunks)
    with new.read() as a, old.read() as b:
        query = select(predictions).order_by(predictions.c.id)
        stored, expected = a.execute(query).all(), b.execute(query).all()
    assert stored == expected and len(stored) == sum(len(c.labels) for c in chunks)
    by_id = {row.id: row for row in stored}
    assert [by_id[f"r-{i}"].predicted_label for i in range(1, 6)] == ["21.5", "-0.0", "1e+16", "nan", "-inf"]
    # Values journaled as numbers are stored as the text repr gave before (issue 18): each
    # reads back as the same float, which the feedback join subtracts the label from.
    assert by_id["r-6"].predicted_label == "3.0"
    texts = [by_id[f"r-{7 + i}"].predicted_label for i in range(len(AWKWARD_FLOATS))]
    assert texts == [repr(v) for v in AWKWARD_FLOATS] and [float(t) for t in texts] == AWKWARD_FLOATS
    assert texts[3:5] == ["1e+16", "1e-05"] and texts[7] == "0.30000000000000004"
    for chunk in chunks[3:]:
        assert [by_id[i].predicted_label for i in ids(chunk)] == [repr(v) for v in chunk.labels]
    assert by_id["r-6"].features == {"city": "Zürich", "m2": 71.5} and by_id["r-1"].features is None
    assert all(row.probabilities is None for row in stored)


def test_sqlite_lines_store_what_the_batch_statement_stored(tmp_path):
    """The writer's SQLite path (one execution per line) against the statement it replaced
    (one per batch, the database taking each line apart, given the labels as text, as the
    journal held them before issue 18), column by column as SQLite holds them, on a
    regressor's and a classifier's lines, with a replay."""
    from modelmon.store.predictions import _SQLITE_INSERT

    chunks = [*regression_chunks(), *sample_chunks()]
    new, old = open_store(str(tmp_path / "new.db")), open_store(str(tmp_path / "old.db"))
    try:
        write_new(new, chunks, tmp_path / "spool", batch_rows=50)
        timestamps = PredictionTimestamps()
        for group in (chunks, replayed(chunks)):
            entries = [
                b'["' + timestamps(c.predicted_at).encode() + b'",' + orjson.dumps(
                    [c.model, c.version, c.predicted_at, c.id_prefix, c.first_id, [str(v) for v in c.labels],
                     c.probabilities, c.features],
                    option=orjson.OPT_SERIALIZE_NUMPY) + b"]"
                for c in group
            ]
            with old.write() as connection:
                connection.exec_driver_sql(_SQLITE_INSERT, ((b"[" + b",".join(entries) + b"]").decode(),))
        assert raw_rows(new) == raw_rows(old)
        assert len(raw_rows(new)) == sum(len(c.labels) for c in chunks)
    finally:
        close_store(str(tmp_path / "new.db"))
        close_store(str(tmp_path / "old.db"))
