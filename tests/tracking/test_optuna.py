"""The Optuna callback: each trial a run, with its params, objective and curve."""

from __future__ import annotations

import optuna
import pytest

from modelmon.store import open_store
from modelmon.tracking import records
from modelmon.tracking.optuna import OptunaCallback


def objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -4, 4)
    kind = trial.suggest_categorical("kind", ["a", "b"])
    if trial.number == 2:
        raise RuntimeError("out of memory")
    for step in range(1, 4):
        trial.report((x - 1) ** 2 + 1 / step, step)
        if trial.number == 3:
            raise optuna.TrialPruned()
    return (x - 1) ** 2 + (0.5 if kind == "b" else 0.0)


def test_each_trial_is_a_run_of_the_experiment(store_url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="tune", sampler=optuna.samplers.RandomSampler(seed=0))
    callback = OptunaCallback("tuning", store=store_url, tags={"owner": "ml"})
    study.optimize(objective, n_trials=5, callbacks=[callback], catch=(RuntimeError,))

    store = open_store(store_url)
    runs = records.list_runs(store, "tuning")
    assert [r.name for r in runs] == [f"tune-trial-{i}" for i in range(5)]
    for trial, run in zip(study.trials, runs, strict=True):
        assert run.params == trial.params
        assert run.tags == {"owner": "ml", "optuna_study": "tune",
                            "optuna_trial": str(trial.number), "optuna_state": trial.state.name}
        assert run.started_at <= run.ended_at
        frame = records.metric_frame(store, [run.id], split="validation")
        curve = dict(zip(frame["step"], frame["value"], strict=True))
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert run.status == "finished"
            # The intermediate values form the curve; the objective is its last point.
            assert curve == {1: trial.intermediate_values[1], 2: trial.intermediate_values[2],
                             3: trial.value}
        elif trial.state == optuna.trial.TrialState.PRUNED:
            assert run.status == "finished"
            assert curve == {1: trial.intermediate_values[1]}
        else:
            assert (run.status, curve) == ("failed", {})
            assert run.error.startswith("trial 2 failed") or "out of memory" in run.error
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.FAIL in states and optuna.trial.TrialState.PRUNED in states


def test_a_multi_objective_study_logs_each_objective(sqlite_url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(lambda t: (t.suggest_float("x", 0, 1), t.suggest_float("y", 0, 1)),
                   n_trials=2, callbacks=[OptunaCallback("multi", store=sqlite_url, metric="score")])
    store = open_store(sqlite_url)
    for trial, run in zip(study.trials, records.list_runs(store, "multi"), strict=True):
        frame = records.metric_frame(store, [run.id])
        assert dict(zip(frame["metric"], frame["value"], strict=True)) == pytest.approx(
            {"score_0": trial.values[0], "score_1": trial.values[1]}
        )
