"""Alembic's entry point, run by ``modelmon.store.migrate.upgrade`` on a connection it opened.

Migrations are serialised across processes, so that two training processes opening a new
store at once do not both create its tables: on SQLite the transaction is ``BEGIN
IMMEDIATE`` (see ``modelmon.store.engine``), on PostgreSQL it takes an advisory lock first.
Alembic then reads the version inside that transaction and finds nothing left to do.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from modelmon.store.engine import WRITE_OPTION

#: Any fixed number, shared by every process migrating the same PostgreSQL database.
ADVISORY_LOCK_KEY = 0x6D6F64656C6D6F6E  # "modelmon"


def run_migrations(connection: Connection) -> None:
    connection = connection.execution_options(**{WRITE_OPTION: True})
    with connection.begin():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({ADVISORY_LOCK_KEY})")
        context.configure(connection=connection, transactional_ddl=True)
        context.run_migrations()


run_migrations(context.config.attributes["connection"])
