"""Tables of the prediction log and of ground-truth labels.

A prediction is written once, by the replica that made it; a label is written once, by
whichever replica received it. Both are keyed by the prediction id, so replaying a spooled
batch or receiving a label twice changes nothing (the insert is ``ON CONFLICT DO NOTHING``).
The ``labelled_predictions`` view (migrations ``0002``, ``0006``) joins them for SQL readers such as
Grafana, one row per labelled prediction, dated by when the prediction was made.

The prediction log's writer process writes many rows a second on the server's machine, where
every microsecond of its CPU is taken from serving. So the database makes the rows from the
journal's lines (one per model call): PostgreSQL from a batch's lines as one JSON parameter
(``insert_journal_lines``, ``json_array_elements``), SQLite from each line's parts taken
apart once by orjson (``insert_sqlite_lines``, ``json_each`` over its labels): no Python per row.
What it stores reads back through SQLAlchemy as ``insert_ignoring_duplicates(predictions,
...)`` would have stored it (tests compare the two):

- ``predicted_at``: the text SQLAlchemy's SQLite ``DATETIME`` stores, ``YYYY-MM-DD
  HH:MM:SS.ffffff`` in UTC (``PredictionTimestamps``); PostgreSQL reads it as UTC into its
  ``timestamptz``.
- ``probabilities`` and ``features``: the JSON text the journal holds (orjson's compact
  form, which parses to the same values as ``json.dumps``'s); absent features are the JSON
  ``null``, as the ``JSON`` type stores ``None``, not SQL ``NULL``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import JSON, Column, Connection, DateTime, Index, Integer, String, Table, Text
from sqlalchemy.dialects import postgresql, sqlite

from modelmon.store.schema import metadata

predictions = Table(
    "predictions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("predicted_at", DateTime(timezone=True), nullable=False),
    Column("predicted_label", Text, nullable=False),
    Column("probabilities", JSON),  # NULL for a regressor (migration 0003)
    Column("features", JSON),
    Index(None, "model", "version", "predicted_at"),
)

labels = Table(
    "labels",
    metadata,
    Column("prediction_id", String(64), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("label", Text, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
)


def insert_ignoring_duplicates(table: Table, dialect: str) -> Any:
    """``INSERT ... ON CONFLICT DO NOTHING`` on the primary key, for SQLite and PostgreSQL."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return insert(table).on_conflict_do_nothing()


# -- the prediction log's fast path ----------------------------------------------------

#: SQLite's statement before ``_SQLITE_INSERT_LINE`` (which costs less), kept as the tests'
#: reference for what that one stores: a batch of journal lines in one statement, its one
#: parameter the JSON array of entries
#: ``[predicted_at text, journal line]`` or, for a line of an earlier format that lists its
#: ids, ``[predicted_at text, line, ids]``. The database makes the rows: one per label of
#: the line, its id ``<prefix>-<first + index>``, and its probabilities and features the
#: line's own JSON text of that row. Each line's parts are taken apart once, in a
#: materialized CTE: taking them from the line for every row parsed it again each time
#: (four times the CPU on SQLite).
_SQLITE_INSERT = (
    "WITH l AS MATERIALIZED (SELECT e.value->>0 AS at, e.value->2 AS ids, e.value->>'$[1][0]' AS model, "
    "e.value->>'$[1][1]' AS version, e.value->>'$[1][3]' AS prefix, e.value->>'$[1][4]' AS first, "
    "e.value->'$[1][5]' AS labels, e.value->'$[1][6]' AS probabilities, nullif(e.value->'$[1][7]', 'null') AS features "
    "FROM json_each(?) AS e) "
    "INSERT INTO predictions (id, model, version, predicted_at, predicted_label, probabilities, features) "
    "SELECT coalesce(l.ids->>r.key, l.prefix || '-' || (l.first + r.key)), l.model, l.version, l.at, r.value, "
    "l.probabilities->r.key, CASE WHEN l.features IS NULL THEN 'null' ELSE l.features->r.key END "
    "FROM l, json_each(l.labels) AS r "
    "WHERE true "  # `WHERE true`: SQLite's upsert after SELECT needs it
    "ON CONFLICT DO NOTHING"
)
#: ``json`` (not ``jsonb``) keeps its input text, so ``->`` gives each row's text as journaled.
_POSTGRESQL_INSERT = (
    "WITH l AS MATERIALIZED (SELECT e->>0 AS at, e->2 AS ids, e->1->>0 AS model, (e->1->>1)::integer AS version, "
    "e->1->>3 AS prefix, (e->1->>4)::bigint AS first, e->1->5 AS labels, e->1->6 AS probabilities, e->1->7 AS features "
    "FROM json_array_elements(%s::json) AS e) "
    "INSERT INTO predictions (id, model, version, predicted_at, predicted_label, probabilities, features) "
    "SELECT coalesce(l.ids->>(r.i::integer - 1), l.prefix || '-' || (l.first + r.i - 1)), l.model, l.version, "
    "l.at::timestamp AT TIME ZONE 'UTC', r.label, l.probabilities->(r.i::integer - 1), "
    "coalesce(l.features->(r.i::integer - 1), 'null'::json) "
    "FROM l, json_array_elements_text(l.labels) WITH ORDINALITY AS r(label, i) "
    "ON CONFLICT DO NOTHING"
)


#: SQLite, one execution per journal line (``executemany``): its parameters are the line's
#: parts, taken apart by ``sqlite_line`` (orjson), and the database makes one row per label.
#: Writer CPU per row on one-row regression requests, lines of 7 rows as at concurrency 8
#: (benchmarks/request_phases.py --regression): 3.2 µs with ``_SQLITE_INSERT`` over a batch's
#: JSON (SQLite 3.40 parses a line's text again for each part it takes out), 2.8 µs this way.
_SQLITE_INSERT_LINE = (
    "INSERT INTO predictions (id, model, version, predicted_at, predicted_label, probabilities, features) "
    "SELECT coalesce(?9 ->> r.key, ?1 || '-' || (?2 + r.key)), ?3, ?4, ?5, r.value, ?7 -> r.key, "
    "CASE WHEN ?8 IS NULL THEN 'null' ELSE ?8 -> r.key END "
    "FROM json_each(?6) AS r "
    "WHERE true "  # `WHERE true`: SQLite's upsert after SELECT needs it
    "ON CONFLICT DO NOTHING"
)


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def label_texts(labels: list[Any]) -> list[str]:
    """A journal line's labels as ``predicted_label`` stores them: text as it is, a number
    (a regressor's value, journaled as a JSON number since issue 18) as ``str``, which for a
    float is its ``repr``, the text the event loop journaled before. The databases would
    not make that text: SQLite 3.40 turns a JSON number into a REAL and that into 15
    significant digits (it would not read back as the same float), PostgreSQL keeps the
    JSON's text (``0.00001`` and ``1e-6``, not ``1e-05`` and ``1e-06``). Classifiers' lines
    pass through unchanged. The text costs the writer what ``repr`` cost the event loop,
    about 0.3 µs per value on a busy 2-core machine: the same CPU, off the thread that
    limits a saturated server's throughput."""
    for label in labels:
        if type(label) is not str:
            return list(map(str, labels))
    return labels


def sqlite_line(at: str, line: list[Any], ids: list[str] | None = None) -> tuple[Any, ...]:
    """``insert_sqlite_lines``'s parameters for a journal line (parsed; ``ids``: those an
    earlier version's line lists): id prefix, first id counter, model, version,
    ``predicted_at``, and the JSON text of the labels (as text, ``label_texts``),
    probabilities, features (or NULL) and ids (NULL unless listed)."""
    model, version, _, prefix, first, labels, probabilities, features = line
    return (prefix, first, model, version, at, orjson.dumps(label_texts(labels)).decode(), _json_text(probabilities),
            _json_text(features), _json_text(ids))


def insert_sqlite_lines(connection: Connection, lines: list[tuple[Any, ...]]) -> None:
    """Insert the predictions of journal lines (``sqlite_line``) into SQLite, ignoring ids
    already stored, within ``connection``'s transaction."""
    if lines:
        connection.exec_driver_sql(_SQLITE_INSERT_LINE, lines)


def insert_journal_lines(connection: Connection, entries: list[bytes]) -> None:
    """Insert the predictions of journal entries (each the JSON text of ``[predicted_at,
    line]`` or ``[predicted_at, line, ids]``, see ``PredictionLog``), ignoring ids already
    stored, within ``connection``'s transaction. On PostgreSQL a line's labels must be JSON
    text (``label_texts``: the writer makes them so), which is stored as it is."""
    if not entries:
        return
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql(_POSTGRESQL_INSERT, ((b"[" + b",".join(entries) + b"]").decode(),))
    else:
        parsed = (orjson.loads(entry) for entry in entries)
        insert_sqlite_lines(connection, [sqlite_line(at, line, ids[0] if ids else None) for at, line, *ids in parsed])


class PredictionTimestamps:
    """The ``predicted_at`` value to bind for a Unix time ``t``: the text SQLAlchemy's SQLite
    ``DATETIME`` stores for ``datetime.fromtimestamp(t, UTC)``, ``YYYY-MM-DD HH:MM:SS.ffffff``.

    Building and formatting a datetime per row costs several microseconds; the journal's
    times come in order, so the text of the whole second is kept and only the microseconds
    are formatted. They are rounded as ``datetime.fromtimestamp`` rounds (CPython's
    ``_PyTime_DoubleToDenominator``: the fractional part times 10**6, half to even, carried
    into the seconds), which the tests check against SQLAlchemy's own bind processor.
    """

    __slots__ = ("_second",)

    def __init__(self) -> None:
        # (whole seconds, their text): one attribute, so that a reader in another thread
        # (``stop`` after a writer that would not end) never pairs one with the other's text.
        self._second: tuple[float, str] = (-1.5, "")  # no Unix time's whole seconds

    def __call__(self, t: float, _modf: Callable[[float], tuple[float, float]] = math.modf) -> str:
        fraction, whole = _modf(t)
        microsecond = round(fraction * 1e6)
        cached, text = self._second
        if whole != cached or not 0 <= microsecond < 1_000_000:
            return self._another_second(whole, microsecond)
        return text + str(microsecond).zfill(6)

    def _another_second(self, whole: float, microsecond: int) -> str:
        if microsecond >= 1_000_000:
            microsecond -= 1_000_000
            whole += 1.0
        elif microsecond < 0:
            microsecond += 1_000_000
            whole -= 1.0
        # The seconds part as SQLAlchemy formats it: the UTC wall time, "+00:00" dropped.
        text = datetime.fromtimestamp(int(whole), UTC).isoformat(" ")[:-6] + "."
        self._second = (whole, text)
        return text + str(microsecond).zfill(6)

