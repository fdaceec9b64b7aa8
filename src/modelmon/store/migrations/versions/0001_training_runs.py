"""Training runs: experiments, runs, parameters, tags, metric values, and Grafana views.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

STATUSES = "('running', 'finished', 'failed')"

VIEWS = {
    # The latest value per run, split, metric and step: one row per point of a curve.
    "training_metrics": """
        SELECT e.name AS experiment, r.id AS run_id, r.name AS run_name, r.status AS run_status,
               m.split AS split, m.name AS metric, m.step AS step, m.value AS value,
               m.non_finite AS non_finite, m.logged_at AS logged_at
        FROM (
            SELECT run_id, split, name, step, value, non_finite, logged_at,
                   ROW_NUMBER() OVER (PARTITION BY run_id, split, name, step ORDER BY id DESC) AS rn
            FROM metric_values
        ) m
        JOIN runs r ON r.id = m.run_id
        JOIN experiments e ON e.id = r.experiment_id
        WHERE m.rn = 1
    """,
    # One row per run, split and metric: the final value and the extremes, to compare runs.
    "training_final_metrics": """
        SELECT t.experiment AS experiment, t.run_id AS run_id, t.run_name AS run_name,
               t.run_status AS run_status, t.split AS split, t.metric AS metric,
               t.step AS final_step, t.value AS final_value, t.non_finite AS final_non_finite,
               s.min_value AS min_value, s.max_value AS max_value, s.steps AS steps
        FROM (
            SELECT experiment, run_id, run_name, run_status, split, metric, step, value, non_finite,
                   ROW_NUMBER() OVER (PARTITION BY run_id, split, metric ORDER BY step DESC) AS rn
            FROM training_metrics
        ) t
        JOIN (
            SELECT run_id, split, metric, MIN(value) AS min_value, MAX(value) AS max_value,
                   COUNT(*) AS steps
            FROM training_metrics
            GROUP BY run_id, split, metric
        ) s ON s.run_id = t.run_id AND s.split = t.split AND s.metric = t.metric
        WHERE t.rn = 1
    """,
    # One row per run.
    "training_runs": """
        SELECT r.id AS run_id, e.name AS experiment, r.name AS run_name, r.status AS status,
               r.started_at AS started_at, r.ended_at AS ended_at, r.git_commit AS git_commit,
               r.model_name AS model_name, r.model_version AS model_version, r.error AS error,
               (SELECT MAX(m.step) FROM metric_values m WHERE m.run_id = r.id) AS last_step
        FROM runs r
        JOIN experiments e ON e.id = r.experiment_id
    """,
}


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
        sa.UniqueConstraint("name", name="uq_experiments_name"),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("experiment_id", sa.Integer, nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True)),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("git_commit", sa.String(64)),
        sa.Column("error", sa.Text),
        sa.Column("model_name", sa.String(200)),
        sa.Column("model_version", sa.Integer),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(
            ["experiment_id"], ["experiments.id"], name="fk_runs_experiment_id_experiments"
        ),
        sa.CheckConstraint(f"status IN {STATUSES}", name="ck_runs_status"),
    )
    op.create_index("ix_runs_experiment_id", "runs", ["experiment_id"])
    for name in ("run_params", "run_tags"):
        op.create_table(
            name,
            sa.Column("run_id", sa.Integer, nullable=False),
            sa.Column("key", sa.String(200), nullable=False),
            sa.Column("value", sa.Text, nullable=False),
            sa.PrimaryKeyConstraint("run_id", "key", name=f"pk_{name}"),
            sa.ForeignKeyConstraint(
                ["run_id"], ["runs.id"], name=f"fk_{name}_run_id_runs", ondelete="CASCADE"
            ),
        )
    op.create_table(
        "metric_values",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("split", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("value", sa.Double),
        sa.Column("non_finite", sa.String(8)),
        sa.Column("logged_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_metric_values"),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name="fk_metric_values_run_id_runs", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_metric_values_run_id_split_name_step",
        "metric_values",
        ["run_id", "split", "name", "step"],
    )
    for name, select in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {select}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW {name}")
    op.drop_table("metric_values")
    op.drop_table("run_tags")
    op.drop_table("run_params")
    op.drop_table("runs")
    op.drop_table("experiments")
