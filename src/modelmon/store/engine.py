"""Which database the store is, and an engine tuned for it.

One code path serves SQLite (the default, a file under ``$MODELMON_HOME``) and PostgreSQL
(production, by URL). The differences are confined to connection setup here: SQLite gets
WAL (readers never block the writer), a busy timeout (two writers wait instead of failing)
and explicit ``BEGIN`` statements so that a write transaction can take the write lock up
front; PostgreSQL gets connection pre-ping, because a training run may sit idle for an hour
between epochs.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from modelmon.config import modelmon_home
from modelmon.errors import ModelmonError

STORE_URL_ENV = "MODELMON_STORE_URL"
STORE_FILE = "modelmon.db"
#: How long a SQLite writer waits for another one before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Execution option that makes a SQLite transaction ``BEGIN IMMEDIATE``.
WRITE_OPTION = "modelmon_write"


class StoreError(ModelmonError):
    """The store's URL is unusable, or its database cannot be reached."""

    status_code = 500
    reason = "store_error"


def resolve_store_url(url: str | URL | Path | None = None) -> URL:
    """The store's URL: ``url``, else ``$MODELMON_STORE_URL``, else ``$MODELMON_HOME/modelmon.db``.

    A value without ``://`` is a SQLite file path; ``postgresql://`` means psycopg 3, the
    driver of the ``postgres`` extra (SQLAlchemy would otherwise pick psycopg2).
    """
    raw = url if url is not None else os.environ.get(STORE_URL_ENV) or None
    if raw is None:
        raw = modelmon_home() / STORE_FILE
    if isinstance(raw, Path) or (isinstance(raw, str) and "://" not in raw):
        return URL.create("sqlite", database=str(Path(raw).expanduser()))
    try:
        parsed = make_url(raw)
    except ArgumentError as exc:
        raise StoreError(f"invalid store URL {raw!r}: {exc}") from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported store {parsed.render_as_string(hide_password=True)!r}: use a SQLite "
            "file or postgresql+psycopg://user@host/database"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise StoreError("the store must be a SQLite file, not an in-memory database")
    return parsed


def create_store_engine(url: URL) -> Engine:
    """An engine for ``url`` with the per-database settings described in the module doc."""
    if url.get_backend_name() == "sqlite":
        Path(url.database or "").parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    try:
        return create_engine(url, pool_pre_ping=True)
    except (ModuleNotFoundError, NoSuchModuleError) as exc:
        raise StoreError(
            f"cannot use {url.render_as_string(hide_password=True)}: {exc}. "
            "Install the driver with: pip install 'modelmon[postgres]'"
        ) from None


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level: SQLAlchemy's "begin" event below then issues BEGIN
    # itself, which makes DDL transactional and lets writers use BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    _enable_wal(cursor)
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _enable_wal(cursor: Any) -> None:
    # Turning a new file to WAL takes an exclusive lock, and when connections race for it
    # SQLite answers "locked" at once instead of waiting in the busy handler (it would risk
    # a deadlock). The mode is then kept in the file, so only a store's creation retries.
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_begin(connection: Connection) -> None:
    # A deferred transaction that reads and then writes fails at once (SQLITE_BUSY, no
    # waiting) when another writer committed in between; IMMEDIATE takes the lock first.
    immediate = connection.get_execution_options().get(WRITE_OPTION, False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Store:
    """A migrated database: an engine plus transactions shaped for how modelmon uses it."""

    def __init__(self, url: URL, engine: Engine) -> None:
        self.url = url
        self.engine = engine

    def __repr__(self) -> str:
        return f"Store({self.display_url!r})"

    @property
    def display_url(self) -> str:
        return self.url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that will write: on SQLite it holds the write lock from the start."""
        with self.engine.connect() as plain:
            connection = plain.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                yield connection

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read-only transaction (one consistent snapshot)."""
        with self.engine.connect() as connection, connection.begin():
            yield connection
