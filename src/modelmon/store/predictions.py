"""Tables of the prediction log and of ground-truth labels.

A prediction is written once, by the replica that made it; a label is written once, by
whichever replica received it. Both are keyed by the prediction id, so replaying a spooled
batch or receiving a label twice changes nothing (the insert is ``ON CONFLICT DO NOTHING``).
The ``labelled_predictions`` view (migration ``0002``) joins them for SQL readers such as
Grafana, one row per labelled prediction, dated by when the prediction was made.

The prediction log writes many rows a second from a thread beside the server's event loop,
so ``insert_prediction_rows`` bypasses SQLAlchemy's per-row machinery (execution contexts,
bind processors, a dict per row): rows are plain tuples in ``PREDICTION_COLUMNS`` order, of
text and integers, and a batch goes to the driver in one call. SQLite takes them as they
are (the driver's ``executemany``); PostgreSQL gets the whole batch as one JSON document,
made by orjson, that the server unpacks (psycopg's ``executemany``, or an array parameter
per column, costs over 20 us of Python a row). The stored data is the same as
through ``insert_ignoring_duplicates(predictions, ...)``, byte for byte (tests compare the
two):

- ``predicted_at``: the text SQLAlchemy's SQLite ``DATETIME`` stores, ``YYYY-MM-DD
  HH:MM:SS.ffffff`` in UTC (``PredictionTimestamps``); PostgreSQL reads it as UTC into its
  ``timestamptz``.
- ``probabilities`` and ``features``: the text ``json.dumps`` makes, which is what the
  ``JSON`` type stores on both databases (no ``json_serializer`` is configured, and
  PostgreSQL's ``json`` keeps its input text); ``None`` features are the JSON ``null``, as
  the ``JSON`` type stores them, not SQL ``NULL``.
"""

from __future__ import annotations

import json
import math
import re
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
    Column("probabilities", JSON, nullable=False),
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

PREDICTION_COLUMNS = ("id", "model", "version", "predicted_at", "predicted_label", "probabilities", "features")
_COLUMN_LIST = ", ".join(PREDICTION_COLUMNS)

#: One statement per batch on both databases, its one parameter a JSON array of rows: the
#: driver's executemany releases and retakes the GIL around every row, and beside a busy
#: event loop each retake waits for a thread switch (measured: 106 us of CPU per row,
#: against 11 for this). ``->>`` gives a value's text back unescaped.
_SQLITE_INSERT = (
    f"INSERT INTO predictions ({_COLUMN_LIST}) "
    "SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6 "
    "FROM json_each(?) WHERE true "  # `WHERE true`: SQLite's upsert after SELECT needs it
    "ON CONFLICT DO NOTHING"
)
#: ``json`` input keeps its text as is.
_POSTGRESQL_INSERT = (
    f"INSERT INTO predictions ({_COLUMN_LIST}) "
    "SELECT r->>0, r->>1, (r->>2)::integer, (r->>3)::timestamp AT TIME ZONE 'UTC', r->>4, (r->>5)::json, (r->>6)::json "
    "FROM json_array_elements(%s::json) AS r "
    "ON CONFLICT DO NOTHING"
)

#: The JSON text SQLAlchemy's ``JSON`` type stores for ``None``.
JSON_NULL = "null"


def json_text(value: Any) -> str:
    """The text SQLAlchemy's ``JSON`` type stores for ``value`` (its default serializer)."""
    return json.dumps(value)


# orjson writes floats in shortest round-trip form like ``repr`` does, except for two
# notations: values in [1e-5, 1e-4) in fixed point (``0.000025``, Python ``2.5e-05``), and
# one-digit negative exponents without the leading zero (``1.5e-7``, Python ``1.5e-07``).
# Those tokens (anywhere else orjson agrees with ``repr``) are rewritten by ``repr``.
_NOT_LIKE_REPR = re.compile(r"(?<=[\[,])-?(?:0\.0000\d+|[0-9.]+e-\d(?=[,\]]))")


def _repr_of(match: re.Match[str], _repr: Callable[[float], str] = float.__repr__) -> str:
    return _repr(float(match[0]))


def float_list_json(values: list[Any], _dumps: Callable[[Any], bytes] = orjson.dumps) -> str:
    """``json.dumps(values)`` for a flat list of floats, ints and ``None`` (no NaN or
    infinity: the journal cannot hold them), several times faster: orjson, then
    ``json.dumps``'s separators and float notation."""
    text = _dumps(values).decode()
    if "e" in text or "0.0000" in text:
        text = _NOT_LIKE_REPR.sub(_repr_of, text)
    return text.replace(",", ", ")


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


def insert_prediction_rows(connection: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert prediction rows (tuples in ``PREDICTION_COLUMNS`` order: ``predicted_at`` from
    ``PredictionTimestamps``, JSON columns as text), ignoring ids already stored, within
    ``connection``'s transaction."""
    if not rows:
        return
    statement = _POSTGRESQL_INSERT if connection.dialect.name == "postgresql" else _SQLITE_INSERT
    connection.exec_driver_sql(statement, (orjson.dumps(rows).decode(),))
