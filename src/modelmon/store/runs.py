"""Tables of training runs: experiments, runs, their parameters and tags, metric values.

The columns are the contract that migration ``0001`` creates; the views it adds on top
(``training_metrics``, ``training_final_metrics``, ``training_runs``) are for readers that
speak only SQL, such as Grafana, and are documented in docs/tracking.md.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    column,
    table,
)

from modelmon.store.schema import metadata

RUN_STATUSES = ("running", "finished", "failed")

experiments = Table(
    "experiments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("experiment_id", ForeignKey("experiments.id"), nullable=False, index=True),
    Column("name", String(200)),
    Column("status", String(16), nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    Column("params", JSON, nullable=False),
    Column("git_commit", String(64)),
    Column("error", Text),
    Column("model_name", String(200)),
    Column("model_version", Integer),
    CheckConstraint(f"status IN {RUN_STATUSES!r}", name="status"),
)

#: One row per parameter, its value as text: the form SQL filters and Grafana variables use.
#: ``runs.params`` keeps the typed originals.
run_params = Table(
    "run_params",
    metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(200), primary_key=True),
    Column("value", Text, nullable=False),
)

#: Append-only: logging the same (run, split, name, step) twice keeps both rows and the
#: views take the later one, so writers never conflict. A value that is not a finite number
#: is stored as NULL (SQLite cannot store NaN, and a chart should show a gap) with
#: ``non_finite`` set to "nan", "inf" or "-inf".
metric_values = Table(
    "metric_values",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("run_id", ForeignKey("runs.id", ondelete="CASCADE"), nullable=False),
    Column("split", String(32), nullable=False),
    Column("name", String(200), nullable=False),
    Column("step", Integer, nullable=False),
    Column("value", Double),
    Column("non_finite", String(8)),
    Column("logged_at", DateTime(timezone=True), nullable=False),
    Index(None, "run_id", "split", "name", "step"),
)

#: The ``training_metrics`` view: the latest value per run, split, metric and step.
training_metrics = table(
    "training_metrics",
    column("experiment", String),
    column("run_id", Integer),
    column("run_name", String),
    column("run_status", String),
    column("split", String),
    column("metric", String),
    column("step", Integer),
    column("value", Double),
    column("non_finite", String),
    column("logged_at", DateTime(timezone=True)),
)
