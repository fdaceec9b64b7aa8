"""Alembic environment and revisions of the store, shipped inside the package."""
