"""Run stores for the tracking tests: a SQLite file, and a PostgreSQL schema of its own.

Every test that takes ``store_url`` runs on both databases. The PostgreSQL server is the
one this machine runs at 127.0.0.1:5432 (database ``test``, trust auth); each test gets a
fresh schema there (the URL sets ``search_path``), dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from modelmon.store import close_store, open_store

POSTGRES_DSN = os.environ.get("MODELMON_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A store URL whose tables land in a new, empty schema; the schema is dropped after."""
    schema = f"mm_tracking_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f"CREATE SCHEMA {schema}")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_DSN} is needed for these tests: {exc}")
    url = POSTGRES_DSN.replace("postgresql://", "postgresql+psycopg://", 1)
    url += f"?options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        close_store(url)
        with psycopg.connect(POSTGRES_DSN, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    url = str(tmp_path / "store.db")
    yield url
    close_store(url)


@pytest.fixture
def store(store_url: str):
    return open_store(store_url)
