"""Sticky canaries by a feature value: ``rollouts.sticky_feature``, the feature whose value
decides each row's version (NULL: none; the header, if any, decides).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A nullable column is added in place on SQLite and PostgreSQL alike: no table rebuild.
    op.add_column("rollouts", sa.Column("sticky_feature", sa.Text))


def downgrade() -> None:
    # ALTER TABLE ... DROP COLUMN in place (SQLite 3.35+): a batch rebuild of the table
    # would drop it, which rollout_decisions' foreign key forbids.
    op.drop_column("rollouts", "sticky_feature")
