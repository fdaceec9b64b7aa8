"""Regression models in the prediction log: ``predictions.probabilities`` may be NULL (a
regressor has no probabilities; its predicted value is ``predicted_label``, as text).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import importlib

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

#: The view of revision 0002, unchanged: SQLite rebuilds the table to change a column, and
#: a view over it must not exist while the table is renamed into place.
LABELLED_PREDICTIONS = importlib.import_module(
    "modelmon.store.migrations.versions.0002_prediction_log"
).LABELLED_PREDICTIONS


def _alter(nullable: bool) -> None:
    op.execute("DROP VIEW labelled_predictions")
    with op.batch_alter_table("predictions") as batch:
        batch.alter_column("probabilities", existing_type=sa.JSON, nullable=nullable)
    op.execute(f"CREATE VIEW labelled_predictions AS {LABELLED_PREDICTIONS}")


def upgrade() -> None:
    _alter(nullable=True)


def downgrade() -> None:
    # A regressor's rows get the JSON null, which the column held for "none" before.
    op.execute("UPDATE predictions SET probabilities = 'null' WHERE probabilities IS NULL")
    _alter(nullable=False)
