"""The ``labelled_predictions`` view for regressors: ``correct`` is NULL for a regressor's
rows (revision 0002 compared its predicted and true values as text: always 0), and a new
column ``error`` is the predicted minus the true value (NULL for a classifier's rows).

A row is a regressor's when its ``probabilities`` are NULL (revision 0003), or the JSON
``null`` that revision 0003's downgrade writes in their place (a store taken down to 0002
and up again keeps it). A classifier's rows always have probabilities: every runtime makes
a classifier's output from them (``ModelOutput.from_probabilities``), and a classifier's
output without them is refused (``serving/outputs.py``, ``monitoring/tasks.py``).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import importlib

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_REGRESSOR = "(p.probabilities IS NULL OR CAST(p.probabilities AS TEXT) = 'null')"

#: One row per labelled prediction, dated by prediction time. A regressor's values are
#: stored as ``repr`` text; one that is not finite (``nan``, ``inf``, ``-inf``) has no
#: ``error``: SQLite 3.40 reads ``'nan'`` and ``'inf'`` as the REAL 0.0, where PostgreSQL
#: reads NaN and Infinity, so NULL is what both can agree on. ``DOUBLE PRECISION`` is a
#: float8 on PostgreSQL and a REAL (by its affinity rules) on SQLite.
LABELLED_PREDICTIONS = f"""
    SELECT p.model AS model, p.version AS version, p.id AS prediction_id,
           p.predicted_at AS predicted_at, l.received_at AS labelled_at,
           p.predicted_label AS predicted_label, l.label AS actual_label,
           CASE WHEN {_REGRESSOR} THEN NULL
                WHEN p.predicted_label = l.label THEN 1 ELSE 0 END AS correct,
           CASE WHEN {_REGRESSOR} AND p.predicted_label NOT IN ('nan', 'inf', '-inf')
                THEN CAST(p.predicted_label AS DOUBLE PRECISION) - CAST(l.label AS DOUBLE PRECISION)
           END AS error
    FROM predictions p
    JOIN labels l ON l.prediction_id = p.id
"""


def _previous() -> str:
    module = importlib.import_module("modelmon.store.migrations.versions.0002_prediction_log")
    return str(module.LABELLED_PREDICTIONS)


def upgrade() -> None:
    op.execute("DROP VIEW labelled_predictions")
    op.execute(f"CREATE VIEW labelled_predictions AS {LABELLED_PREDICTIONS}")


def downgrade() -> None:
    op.execute("DROP VIEW labelled_predictions")
    op.execute(f"CREATE VIEW labelled_predictions AS {_previous()}")
