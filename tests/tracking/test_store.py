"""The store: URL resolution, migrations from empty on both databases, the Grafana views."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from modelmon.store import StoreError, open_store, resolve_store_url
from modelmon.store.migrate import (
    HEAD_REVISION,
    current_revision,
    downgrade,
    head_revision,
    upgrade,
)
from modelmon.store.schema import metadata
from modelmon.tracking import start_run

TABLES = {"experiments", "runs", "run_params", "run_tags", "metric_values"}
VIEWS = {"training_metrics", "training_final_metrics", "training_runs"}


def test_default_store_is_a_sqlite_file_under_modelmon_home(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MODELMON_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MODELMON_STORE_URL", raising=False)
    url = resolve_store_url()
    assert url.get_backend_name() == "sqlite"
    assert url.database == str(tmp_path / "home" / "modelmon.db")


def test_store_url_from_the_environment_and_arguments(monkeypatch) -> None:
    monkeypatch.setenv("MODELMON_STORE_URL", "postgresql://u@db.example/runs")
    assert resolve_store_url().drivername == "postgresql+psycopg"
    assert resolve_store_url("other.db").database == "other.db"
    with pytest.raises(StoreError, match="unsupported store 'mysql://u@h/d'"):
        resolve_store_url("mysql://u@h/d")
    with pytest.raises(StoreError, match="not an in-memory database"):
        resolve_store_url("sqlite://")


def test_sqlite_store_uses_wal_and_a_busy_timeout(sqlite_url: str) -> None:
    store = open_store(sqlite_url)
    with store.read() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_unreachable_postgres_is_named() -> None:
    with pytest.raises(
        StoreError, match=re.escape("cannot open the store postgresql+psycopg://nobody@127.0.0.1:1/x")
    ):
        open_store("postgresql://nobody@127.0.0.1:1/x")


def runs_tables_only(obj, name, type_, reflected, compare_to) -> bool:
    """Compare only the tables of training runs; other features' revisions own theirs."""
    table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
    return table in TABLES


def test_migrations_from_empty_match_the_table_definitions(store_url: str) -> None:
    store = open_store(store_url)
    assert current_revision(store.engine) == head_revision()
    inspector = inspect(store.engine)
    assert TABLES <= set(inspector.get_table_names())
    assert VIEWS <= set(inspector.get_view_names())
    with store.engine.connect() as connection:
        # The hand-written revision creates exactly what modelmon.store.runs declares.
        context = MigrationContext.configure(connection, opts={"include_object": runs_tables_only})
        assert compare_metadata(context, metadata) == []

    downgrade(store.engine, "base")
    inspector = inspect(store.engine)
    assert not (TABLES | VIEWS) & set(inspector.get_table_names() + inspector.get_view_names())
    upgrade(store.engine)
    assert current_revision(store.engine) == head_revision()
    with start_run("after-round-trip", store=store) as run:  # the schema works after it
        run.log_metrics({"loss": 0.5}, step=1)
    with store.read() as connection:
        assert connection.execute(text("SELECT COUNT(*) FROM metric_values")).scalar() == 1


def test_head_revision_constant_is_alembics_head(store_url: str) -> None:
    """upgrade() skips Alembic when the store is at HEAD_REVISION: it must be the real head,
    and a store one revision behind must still be migrated."""
    assert HEAD_REVISION == head_revision()
    store = open_store(store_url)
    downgrade(store.engine, "0001")
    assert current_revision(store.engine) == "0001"
    upgrade(store.engine)
    assert current_revision(store.engine) == HEAD_REVISION
    assert "predictions" in inspect(store.engine).get_table_names()


def test_grafana_views(store_url: str) -> None:
    store = open_store(store_url)
    with start_run("views", name="first", params={"lr": 0.1, "optimizer": "adam"},
                   tags={"team": "risk"}, store=store) as run:
        run.log_metrics({"loss": 0.9, "accuracy": 0.6}, step=1, split="validation")
        run.log_metrics({"loss": 0.7, "accuracy": 0.8}, step=2, split="validation")
        run.log_metrics({"loss": 0.8, "accuracy": 0.7}, step=3, split="validation")
        run.log_metrics({"loss": 0.75}, step=3, split="validation")  # re-logged: the later wins
        run.log_metrics({"loss": float("nan")}, step=4, split="train")
    with store.read() as connection:
        curve = connection.execute(text(
            "SELECT step, value FROM training_metrics WHERE run_id = :r AND split = 'validation'"
            " AND metric = 'loss' ORDER BY step"
        ), {"r": run.id}).all()
        assert [tuple(row) for row in curve] == [(1, 0.9), (2, 0.7), (3, 0.75)]
        nan_row = connection.execute(text(
            "SELECT experiment, run_name, run_status, value, non_finite FROM training_metrics"
            " WHERE run_id = :r AND split = 'train'"
        ), {"r": run.id}).one()
        assert tuple(nan_row) == ("views", "first", "finished", None, "nan")

        final = {
            row.metric: row
            for row in connection.execute(text(
                "SELECT * FROM training_final_metrics WHERE run_id = :r AND split = 'validation'"
            ), {"r": run.id})
        }
        assert (final["loss"].final_step, final["loss"].final_value) == (3, 0.75)
        assert (final["loss"].min_value, final["loss"].max_value, final["loss"].steps) == (
            0.7,
            0.9,
            3,
        )
        assert (final["accuracy"].final_value, final["accuracy"].max_value) == (0.7, 0.8)

        summary = connection.execute(
            text("SELECT * FROM training_runs WHERE run_id = :r"), {"r": run.id}
        ).one()
        assert (summary.experiment, summary.status, summary.last_step) == ("views", "finished", 4)
        params = dict(connection.execute(
            text("SELECT key, value FROM run_params WHERE run_id = :r"), {"r": run.id}
        ).all())
        assert params == {"lr": "0.1", "optimizer": "adam"}
