"""Prediction log and ground-truth labels, and the labelled_predictions view.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

#: One row per labelled prediction, dated by prediction time: realized quality over time is
#: `avg(correct)` grouped by a time bucket of `predicted_at`, not of label arrival.
LABELLED_PREDICTIONS = """
    SELECT p.model AS model, p.version AS version, p.id AS prediction_id,
           p.predicted_at AS predicted_at, l.received_at AS labelled_at,
           p.predicted_label AS predicted_label, l.label AS actual_label,
           CASE WHEN p.predicted_label = l.label THEN 1 ELSE 0 END AS correct
    FROM predictions p
    JOIN labels l ON l.prediction_id = p.id
"""


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("predicted_label", sa.Text, nullable=False),
        sa.Column("probabilities", sa.JSON, nullable=False),
        sa.Column("features", sa.JSON),
        sa.PrimaryKeyConstraint("id", name="pk_predictions"),
    )
    op.create_index(
        "ix_predictions_model_version_predicted_at", "predictions", ["model", "version", "predicted_at"]
    )
    op.create_table(
        "labels",
        sa.Column("prediction_id", sa.String(64), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("prediction_id", name="pk_labels"),
    )
    op.execute(f"CREATE VIEW labelled_predictions AS {LABELLED_PREDICTIONS}")


def downgrade() -> None:
    op.execute("DROP VIEW labelled_predictions")
    op.drop_table("labels")
    op.drop_index("ix_predictions_model_version_predicted_at", "predictions")
    op.drop_table("predictions")
