"""The run API: outcome, params and tags, non-finite values, batching, baseline, misuse."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

import modelmon
from modelmon.store import open_store
from modelmon.tracking import (
    TrackingError,
    link_model_version,
    records,
    run_baseline,
    start_run,
)


def test_a_run_records_params_tags_metrics_and_finishes(store_url: str) -> None:
    params = {"lr": np.float32(0.5), "layers": [64, 32], "optimizer": "adam", "decay": float("nan")}
    with modelmon.start_run("churn", name="baseline", params=params, tags={"team": "risk"},
                            store=store_url, git_commit="abc123") as run:
        assert records.get_run(run.store, run.id).status == "running"
        for epoch in (1, 2):
            run.log_metrics({"loss": 1 / epoch, "accuracy": 0.5 + epoch / 10}, step=epoch)
        run.log_metrics({"roc_auc": 0.9}, split="validation")  # no step: the latest, 2
        assert run.step == 2
    record = records.get_run(open_store(store_url), run.id)
    assert (record.status, record.error, record.name, record.experiment) == (
        "finished",
        None,
        "baseline",
        "churn",
    )
    assert record.params == {"lr": 0.5, "layers": [64, 32], "optimizer": "adam", "decay": "nan"}
    assert record.tags == {"team": "risk"}
    assert record.git_commit == "abc123"
    assert record.started_at <= record.ended_at
    frame = records.metric_frame(open_store(store_url), [run.id])
    got = {(r.split, r.metric, r.step): r.value for r in frame.itertuples()}
    assert got == {("train", "loss", 1): 1.0, ("train", "accuracy", 1): 0.6,
                   ("train", "loss", 2): 0.5, ("train", "accuracy", 2): 0.7,
                   ("validation", "roc_auc", 2): 0.9}


def test_an_exception_fails_the_run_with_its_message(store_url: str) -> None:
    with pytest.raises(ValueError, match="diverged"):
        with start_run("churn", store=store_url) as run:
            run.log_metrics({"loss": 3.0}, step=1)
            raise ValueError("loss diverged")
    record = records.get_run(open_store(store_url), run.id)
    assert (record.status, record.error) == ("failed", "ValueError: loss diverged")
    assert records.metric_frame(open_store(store_url), [run.id])["value"].tolist() == [3.0]
    with pytest.raises(TrackingError, match=f"run {run.id} has ended \\(failed\\)"):
        run.log_metrics({"loss": 1.0})


def test_non_finite_values_are_recorded_and_flagged(store_url: str, caplog) -> None:
    with start_run("churn", store=store_url) as run:
        run.log_metrics({"loss": float("nan"), "grad_norm": float("inf")}, step=1)
        run.log_metrics({"loss": float("nan"), "grad_norm": -np.inf}, step=2)
        run.log_metrics({"loss": 0.4, "grad_norm": 2.0}, step=3)
    store = open_store(store_url)
    frame = records.metric_frame(store, [run.id]).set_index(["metric", "step"])
    assert (
        math.isnan(frame.loc[("loss", 1), "value"])
        and frame.loc[("loss", 1), "non_finite"] == "nan"
    )
    assert frame.loc[("grad_norm", 1), "value"] == math.inf
    assert frame.loc[("grad_norm", 2), "value"] == -math.inf
    assert frame.loc[("grad_norm", 2), "non_finite"] == "-inf"
    assert frame.loc[("loss", 3), "value"] == 0.4 and pd.isna(frame.loc[("loss", 3), "non_finite"])
    warnings = [r.getMessage() for r in caplog.records if r.name == "modelmon.tracking"]
    assert warnings == [  # once per metric, not per value
        f"run {run.id}: train loss is nan at step 1 (recorded and flagged)",
        f"run {run.id}: train grad_norm is inf at step 1 (recorded and flagged)",
    ]
    assert records.get_run(store, run.id).status == "finished"


def test_log_classification_records_what_sklearn_computes(store_url: str) -> None:
    y_true = np.array([0, 1, 1, 0, 1, 0, 1, 1])
    proba = np.array([0.2, 0.9, 0.4, 0.3, 0.8, 0.6, 0.7, 0.45])
    y_pred = (proba > 0.5).astype(int)
    with start_run("churn", store=store_url) as run:
        returned = run.log_classification("validation", y_true, y_pred, proba, loss=0.41, step=3)
    frame = records.metric_frame(open_store(store_url), [run.id], split="validation")
    stored = dict(zip(frame["metric"], frame["value"], strict=True))
    assert stored == returned
    assert set(frame["step"]) == {3}
    assert stored["f1"] == pytest.approx(skm.f1_score(y_true, y_pred))
    assert stored["log_loss"] == pytest.approx(skm.log_loss(y_true, proba))
    assert stored["loss"] == 0.41


def test_lengths_that_differ_are_an_error_and_log_nothing(store_url: str) -> None:
    with start_run("churn", store=store_url) as run:
        with pytest.raises(TrackingError, match="y_true has 3 rows but y_pred has 4"):
            run.log_classification("validation", [0, 1, 1], [0, 1, 1, 0], step=1)
    assert records.metric_frame(open_store(store_url), [run.id]).empty


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda run: run.log_metrics({"loss": "low"}),
            "metric 'loss' must be a number, got str 'low'",
        ),
        (
            lambda run: run.log_metrics({"loss": None}),
            "metric 'loss' must be a number, got NoneType",
        ),
        (lambda run: run.log_metrics({"loss": 1.0}, step=-1), "step must be 0 or more, got -1"),
        (lambda run: run.log_metrics({"loss": 1.0}, step=1.5), "step must be an integer, got 1.5"),
        (lambda run: run.log_metrics({"": 1.0}), "metric name must be a non-empty string"),
        (lambda run: run.log_metrics({"loss": 1.0}, split=""), "split must be a non-empty string"),
    ],
)
def test_misuse_is_named(sqlite_url: str, call, message: str) -> None:
    with start_run("misuse", store=sqlite_url) as run:
        with pytest.raises(TrackingError, match=message):
            call(run)


def test_values_reach_the_store_in_batches_while_the_run_goes(sqlite_url: str) -> None:
    with start_run("batched", store=sqlite_url, flush_seconds=0.5) as run:
        for step in range(50):
            run.log_metrics({"loss": 1 / (step + 1)}, step=step)
        store = open_store(sqlite_url)
        # Not one transaction per call: nothing is written until the writer's next tick...
        assert len(records.metric_frame(store, [run.id])) < 50
        deadline = time.monotonic() + 5
        while len(records.metric_frame(store, [run.id])) < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        # ...and then all of it, without the run ending or flushing.
        assert len(records.metric_frame(store, [run.id])) == 50
        assert records.get_run(store, run.id).status == "running"


def test_a_run_the_program_never_ended_is_failed_at_exit_with_its_values(sqlite_url: str) -> None:
    script = textwrap.dedent(f"""
        from modelmon.tracking import start_run
        run = start_run("abandoned", store={sqlite_url!r}, flush_seconds=60)
        run.log_metrics({{"loss": 0.5}}, step=1)
        print(run.id)
    """)  # the run is neither ended nor flushed when the interpreter exits
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60, check=True)
    run_id = int(result.stdout.strip())
    store = open_store(sqlite_url)
    record = records.get_run(store, run_id)
    assert (record.status, record.error) == (
        "failed",
        "the process exited while the run was active",
    )
    assert records.metric_frame(store, [run_id])["value"].tolist() == [0.5]


def test_the_final_validation_metrics_are_the_baseline(store_url: str) -> None:
    with start_run("churn", store=store_url) as run:
        run.log_metrics(
            {"accuracy": 0.7, "f1_macro": 0.6, "log_loss": 0.5}, step=1, split="validation"
        )
        run.log_metrics({"accuracy": 0.8, "f1_macro": 0.75}, step=2, split="validation")
        run.log_metrics({"accuracy": 0.99}, step=2, split="train")
        run.log_metrics({"log_loss": float("nan")}, step=3, split="validation")
        # Registered from inside the block: values not yet written are included.
        assert run_baseline(run) == {"accuracy": 0.8, "f1_macro": 0.75}
        link_model_version(run, "churn", 3)
    assert run_baseline(run.id, store=store_url) == {"accuracy": 0.8, "f1_macro": 0.75}
    record = records.get_run(open_store(store_url), run.id)
    assert (record.model_name, record.model_version) == ("churn", 3)


def test_runs_without_a_baseline_are_refused(sqlite_url: str) -> None:
    with start_run("churn", store=sqlite_url) as run:
        run.log_metrics({"loss": 0.3}, step=1)
    with pytest.raises(TrackingError, match=f"run {run.id} logged no 'validation' metrics"):
        run_baseline(run)
    with pytest.raises(ValueError), start_run("churn", store=sqlite_url) as failed:
        failed.log_metrics({"accuracy": 0.9}, step=1, split="validation")
        raise ValueError("nope")
    with pytest.raises(TrackingError, match=f"run {failed.id} failed \\(ValueError: nope\\)"):
        run_baseline(failed)
    with pytest.raises(TrackingError, match="no run 999"):
        link_model_version(999, "churn", 1, store=sqlite_url)
