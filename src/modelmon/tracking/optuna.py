"""An Optuna callback that records each finished trial as a run of an experiment.

Each trial becomes one run with the trial's parameters, its objective value(s) as
metrics, and its intermediate values (``trial.report(value, step)``) as the metric's curve,
so a study is compared with ``modelmon runs compare`` or in Grafana like any runs. The run
is written when the trial ends; to watch a trial live as well, open a ``start_run``
inside the objective instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from modelmon.store import Store, open_store
from modelmon.tracking import records
from modelmon.tracking.run import VALIDATION, head_commit


class OptunaCallback:
    """``study.optimize(objective, n_trials=..., callbacks=[OptunaCallback("tuning")])``.

    The objective is logged as metric ``metric`` of split ``split``; a multi-objective
    study logs ``<metric>_0``, ``<metric>_1``, .... Pruned trials are finished runs tagged
    ``optuna_state=PRUNED``; failed trials are failed runs.
    """

    def __init__(
        self,
        experiment: str,
        *,
        store: Store | str | Path | None = None,
        metric: str = "objective",
        split: str = VALIDATION,
        tags: Mapping[str, str] | None = None,
    ) -> None:
        self.experiment = experiment
        self.store = open_store(store)
        self.metric = metric
        self.split = split
        self.tags = dict(tags or {})
        self.git_commit = head_commit()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> int:
        """Record ``trial``; returns the id of its run."""
        failed = trial.state == TrialState.FAIL
        started = _utc(trial.datetime_start) or datetime.now(UTC)
        run_id = records.create_run(
            self.store, experiment=self.experiment, name=f"{study.study_name}-trial-{trial.number}",
            params=trial.params, git_commit=self.git_commit, started_at=started,
            tags={**self.tags, "optuna_study": study.study_name,
                  "optuna_trial": str(trial.number), "optuna_state": trial.state.name},
            status="failed" if failed else "finished",
            ended_at=_utc(trial.datetime_complete) or datetime.now(UTC),
            error=_fail_reason(trial) if failed else None,
        )
        records.insert_metric_values(self.store, self._rows(run_id, trial))
        return run_id

    def _rows(self, run_id: int, trial: FrozenTrial) -> list[dict[str, object]]:
        now = datetime.now(UTC)
        points: list[tuple[str, int, float]] = [
            (self.metric, int(step), float(value))
            for step, value in sorted(trial.intermediate_values.items())
        ]
        if trial.values is not None:
            last = trial.last_step if trial.last_step is not None else 0
            names = (
                [self.metric] if len(trial.values) == 1
                else [f"{self.metric}_{i}" for i in range(len(trial.values))]
            )
            points += [(name, last, float(v)) for name, v in zip(names, trial.values, strict=True)]
        rows = []
        for name, step, value in points:
            stored, flag = records.flag_value(value)
            rows.append({"run_id": run_id, "split": self.split, "name": name, "step": step,
                         "value": stored, "non_finite": flag, "logged_at": now})
        return rows


def _fail_reason(trial: FrozenTrial) -> str:
    # Optuna before 5 kept the exception's text; Optuna 5 only logs it.
    reason = trial.system_attrs.get("fail_reason")
    return (
        str(reason) if reason else f"trial {trial.number} failed (its exception is in Optuna's log)"
    )


def _utc(value: datetime | None) -> datetime | None:
    """Optuna's datetimes are naive local time."""
    return None if value is None else value.astimezone(UTC)
