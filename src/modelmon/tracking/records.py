"""Reading and writing training runs in the store, with SQLAlchemy Core.

Each write is one short transaction that only writes, or that (on SQLite) holds the write
lock from its start, so runs in several processes can log at once on either database.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, overload

import numpy as np
import pandas as pd
from sqlalchemy import CursorResult, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from modelmon.store import Store
from modelmon.store.runs import (
    experiments,
    metric_values,
    run_params,
    run_tags,
    runs,
    training_metrics,
)
from modelmon.tracking.errors import TrackingError

#: Columns of ``metric_frame``, the long format every reader (CLI, export, plot) shares.
METRIC_COLUMNS = ["run_id", "split", "metric", "step", "value", "non_finite", "logged_at"]


@dataclass
class RunRecord:
    id: int
    experiment: str
    name: str | None
    status: str
    started_at: datetime
    ended_at: datetime | None
    params: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    error: str | None = None
    model_name: str | None = None
    model_version: int | None = None
    last_step: int | None = None

    @property
    def label(self) -> str:
        """How tables and charts name the run (rows written by other tools may lack a name)."""
        return self.name or default_run_name(self.id)


def default_run_name(run_id: int) -> str:
    return f"run-{run_id}"


@overload
def utc(value: datetime) -> datetime: ...
@overload
def utc(value: None) -> None: ...
def utc(value: datetime | None) -> datetime | None:
    """SQLite returns naive datetimes; the store only ever holds UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def jsonable(value: Any) -> Any:
    """``value`` in a form every JSON column takes (PostgreSQL refuses NaN, numpy types)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return str(value)


def param_text(value: Any) -> str:
    """A parameter as the text of ``run_params.value``: strings as they are, others as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def ensure_experiment(store: Store, name: str) -> int:
    """The id of experiment ``name``, created on first use."""
    query = select(experiments.c.id).where(experiments.c.name == name)
    try:
        with store.write() as connection:
            found = connection.execute(query).scalar()
            if found is not None:
                return int(found)
            result = connection.execute(
                insert(experiments).values(name=name, created_at=datetime.now(UTC))
            )
            return _inserted_id(result)
    except IntegrityError:  # another process created it since our read (PostgreSQL)
        with store.read() as connection:
            return int(connection.execute(query).scalar_one())


def _inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the one row a single-row INSERT wrote (SQLAlchemy types it
    optional: it is None only for other statements)."""
    key = result.inserted_primary_key
    assert key is not None, "a single-row INSERT has a primary key"
    return int(key[0])


def create_run(
    store: Store,
    *,
    experiment: str,
    name: str | None,
    params: Mapping[str, Any],
    tags: Mapping[str, str],
    git_commit: str | None,
    started_at: datetime,
    status: str = "running",
    ended_at: datetime | None = None,
    error: str | None = None,
) -> int:
    experiment_id = ensure_experiment(store, experiment)
    params = {str(k): jsonable(v) for k, v in params.items()}
    with store.write() as connection:
        result = connection.execute(
            insert(runs).values(
                experiment_id=experiment_id, name=name, status=status, started_at=started_at,
                ended_at=ended_at, params=params, git_commit=git_commit, error=error,
            )
        )
        run_id = _inserted_id(result)
        if name is None:  # every run has a name, for charts and tables that label by it
            connection.execute(
                update(runs).where(runs.c.id == run_id).values(name=default_run_name(run_id))
            )
        if params:
            connection.execute(
                insert(run_params),
                [{"run_id": run_id, "key": k, "value": param_text(v)} for k, v in params.items()],
            )
        if tags:
            connection.execute(
                insert(run_tags),
                [{"run_id": run_id, "key": str(k), "value": str(v)} for k, v in tags.items()],
            )
    return run_id


def insert_metric_values(store: Store, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write a batch of ``metric_values`` rows in one transaction."""
    if rows:
        with store.write() as connection:
            connection.execute(insert(metric_values), list(rows))


def end_run(store: Store, run_id: int, status: str, error: str | None) -> None:
    with store.write() as connection:
        connection.execute(
            update(runs)
            .where(runs.c.id == run_id)
            .values(status=status, error=error, ended_at=datetime.now(UTC))
        )


def set_run_model(store: Store, run_id: int, name: str, version: int) -> None:
    get_run(store, run_id)
    with store.write() as connection:
        connection.execute(
            update(runs).where(runs.c.id == run_id).values(model_name=name, model_version=version)
        )


def _run_query() -> Any:
    last_step = (
        select(func.max(metric_values.c.step))
        .where(metric_values.c.run_id == runs.c.id)
        .scalar_subquery()
    )
    return select(runs, experiments.c.name.label("experiment"), last_step.label("last_step")).join(
        experiments, experiments.c.id == runs.c.experiment_id
    )


def _record(row: Any, tags: dict[str, str]) -> RunRecord:
    return RunRecord(
        id=row.id, experiment=row.experiment, name=row.name, status=row.status,
        started_at=utc(row.started_at), ended_at=utc(row.ended_at), params=dict(row.params),
        tags=tags, git_commit=row.git_commit, error=row.error, model_name=row.model_name,
        model_version=row.model_version, last_step=row.last_step,
    )


def _tags(connection: Any, run_ids: list[int]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {i: {} for i in run_ids}
    if run_ids:
        query = select(run_tags).where(run_tags.c.run_id.in_(run_ids)).order_by(run_tags.c.key)
        for row in connection.execute(query):
            out[row.run_id][row.key] = row.value
    return out


def get_run(store: Store, run_id: int) -> RunRecord:
    with store.read() as connection:
        row = connection.execute(_run_query().where(runs.c.id == run_id)).first()
        if row is None:
            raise TrackingError(f"no run {run_id} in the store {store.display_url}")
        return _record(row, _tags(connection, [run_id])[run_id])


def get_runs(store: Store, run_ids: Sequence[int]) -> list[RunRecord]:
    """The runs in the order asked, each checked to exist."""
    return [get_run(store, run_id) for run_id in run_ids]


def list_runs(store: Store, experiment: str | None = None) -> list[RunRecord]:
    query = _run_query().order_by(runs.c.id)
    if experiment is not None:
        query = query.where(experiments.c.name == experiment)
    with store.read() as connection:
        rows = connection.execute(query).all()
        tags = _tags(connection, [row.id for row in rows])
    return [_record(row, tags[row.id]) for row in rows]


def metric_frame(
    store: Store,
    run_ids: Sequence[int] | None = None,
    split: str | None = None,
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Metric values in long format from the ``training_metrics`` view (the latest value
    per run, split, metric and step), optionally only of some runs, a split, some metrics."""
    view = training_metrics.c
    query = select(
        view.run_id, view.split, view.metric, view.step, view.value, view.non_finite,
        view.logged_at,
    ).order_by(view.run_id, view.split, view.metric, view.step)
    if run_ids is not None:
        query = query.where(view.run_id.in_(list(run_ids)))
    if split is not None:
        query = query.where(view.split == split)
    if metrics is not None:
        query = query.where(view.metric.in_(list(metrics)))
    with store.read() as connection:
        rows = connection.execute(query).all()
    return pd.DataFrame(
        [
            (r.run_id, r.split, r.metric, r.step, restore_value(r.value, r.non_finite),
             r.non_finite, utc(r.logged_at))
            for r in rows
        ],
        columns=METRIC_COLUMNS,
    ).astype({"value": float})


def flag_value(value: float) -> tuple[float | None, str | None]:
    """A value as stored: finite numbers as they are, others as NULL plus a flag."""
    if math.isfinite(value):
        return value, None
    if math.isnan(value):
        return None, "nan"
    return None, "inf" if value > 0 else "-inf"


def restore_value(value: float | None, flag: str | None) -> float:
    if flag is None:
        return float("nan") if value is None else float(value)
    return float(flag)
