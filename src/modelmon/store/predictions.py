"""Tables of the prediction log and of ground-truth labels.

A prediction is written once, by the replica that made it; a label is written once, by
whichever replica received it. Both are keyed by the prediction id, so replaying a spooled
batch or receiving a label twice changes nothing (the insert is ``ON CONFLICT DO NOTHING``).
The ``labelled_predictions`` view (migration ``0002``) joins them for SQL readers such as
Grafana, one row per labelled prediction, dated by when the prediction was made.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, Integer, String, Table, Text
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
