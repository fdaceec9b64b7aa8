"""``modelmon runs ...`` on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from modelmon.cli import app
from modelmon.tracking import start_run

COMMANDS = ("list", "show", "compare", "export", "plot")


@pytest.fixture
def two_runs(store_url: str) -> tuple[int, int]:
    ids = []
    for lr, accuracies in ((0.1, [0.6, 0.8, 0.7]), (0.01, [0.5, 0.55, 0.65])):
        with start_run("tuning", name=f"lr-{lr}", params={"lr": lr, "optimizer": "adam"},
                       store=store_url) as run:
            for epoch, accuracy in enumerate(accuracies, start=1):
                run.log_metrics({"loss": 1 - accuracy, "accuracy": accuracy + 0.05,
                                 "f1": accuracy}, step=epoch)
                run.log_metrics({"loss": 1.1 - accuracy, "accuracy": accuracy, "f1": accuracy - 0.05},
                                step=epoch, split="validation")
        ids.append(run.id)
    with start_run("other", store=store_url) as run:
        run.log_metrics({"loss": float("inf")}, step=1)
    return ids[0], ids[1]


def runs(store_url: str, *args: str, columns: int = 200) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["runs", *args, "--store", store_url], env={"COLUMNS": str(columns)})
    return result.exit_code, result.stdout, result.stderr


def test_list(store_url: str, two_runs: tuple[int, int]) -> None:
    code, out, _ = runs(store_url, "list")
    assert code == 0
    first, _ = two_runs
    rows = [line for line in out.splitlines() if "tuning" in line]
    assert len(rows) == 2
    assert f"{first} " in rows[0] and "lr-0.1" in rows[0] and "finished" in rows[0]
    assert (
        "0.4" in rows[0] and "0.7" in rows[0] and "0.65" in rows[0]
    )  # final val loss, accuracy, F1
    code, out, _ = runs(store_url, "list", "--experiment", "other")
    assert code == 0 and "other" in out and "tuning" not in out


def test_show(store_url: str, two_runs: tuple[int, int]) -> None:
    code, out, _ = runs(store_url, "show", str(two_runs[0]))
    assert code == 0
    assert "lr=0.1" in out and "optimizer=adam" in out and "finished" in out
    epoch_rows = {
        line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") > 3
    }
    assert set(epoch_rows) == {"1", "2", "3"}
    # loss, accuracy and F1, training then validation, per epoch.
    assert [c.strip() for c in epoch_rows["2"].split("│")[2:5]] == [
        "0.2 / 0.3",
        "0.85 / 0.8",
        "0.8 / 0.75",
    ]


def test_show_flags_non_finite_values(store_url: str, two_runs: tuple[int, int]) -> None:
    code, out, _ = runs(store_url, "show", str(two_runs[1] + 1))
    assert code == 0 and "inf" in out


def test_compare(store_url: str, two_runs: tuple[int, int]) -> None:
    code, out, _ = runs(store_url, "compare", *map(str, two_runs))
    assert code == 0
    lines = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:4]]
             for line in out.splitlines() if line.count("│") == 4}
    assert lines["param lr"] == ["0.1", "0.01"]
    assert lines["param optimizer"] == ["adam", "adam"]
    # Final value, and the best one with its epoch when it was not the last.
    assert lines["val accuracy"] == ["0.7 (best 0.8 @2)", "0.65"]
    assert lines["val loss"] == ["0.4 (best 0.3 @2)", "0.45"]


def test_export_csv_and_json(store_url: str, two_runs: tuple[int, int], tmp_path: Path) -> None:
    code, out, _ = runs(store_url, "export", "--format", "csv")
    assert code == 0
    frame = pd.read_csv(io.StringIO(out), keep_default_na=False)
    assert len(frame) == 2 * 3 * 2 * 3 + 1
    row = frame[(frame.run_id == two_runs[1]) & (frame.split == "validation")
                & (frame.metric == "accuracy") & (frame.step == 3)]
    assert row[["experiment", "run_name", "run_status"]].values.tolist() == [
        ["tuning", "lr-0.01", "finished"]
    ]
    assert float(row["value"].iloc[0]) == 0.65
    flagged = frame[frame.experiment == "other"]
    assert flagged[["value", "non_finite"]].values.tolist() == [[math.inf, "inf"]]

    out_file = tmp_path / "runs.json"
    code, _, err = runs(
        store_url, "export", "--format", "json", "--run", str(two_runs[0]), "--out", str(out_file)
    )
    assert code == 0 and "wrote 18 values of 1 runs" in err
    records = json.loads(out_file.read_text())
    assert {r["run_id"] for r in records} == {two_runs[0]} and len(records) == 18


def test_plot(store_url: str, two_runs: tuple[int, int], tmp_path: Path) -> None:
    out_file = tmp_path / "curves.png"
    code, _, err = runs(store_url, "plot", *map(str, two_runs), "--out", str(out_file))
    assert code == 0, err
    data = out_file.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width > 1000 and height > 300


def test_unknown_run_is_named(store_url: str, two_runs: tuple[int, int]) -> None:
    for command in ("show", "compare", "plot"):
        code, _, err = runs(store_url, command, "999")
        assert code == 2 and "no run 999" in err


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str) -> None:
    result = CliRunner().invoke(app, ["runs", command, "--help"])
    assert result.exit_code == 0 and "--store" in result.stdout


# --- Output at 80 columns in a pipe, and --format csv|json (issue 15, item 3) ---------------

LONG_EXPERIMENT = "churn-tuning-very-long-experiment-name"
LONG_NAME = "trial-with-a-rather-long-run-name-0001"
LONG_OPTIMIZER = "adam-with-decoupled-weight-decay-and-warmup"


@pytest.fixture
def long_runs(store_url: str) -> tuple[int, int]:
    """Two runs with long names and values that do not fit 80 columns."""
    ids = []
    for n, base in enumerate((0.123456789, 0.2)):
        with start_run(LONG_EXPERIMENT, name=f"{LONG_NAME}-{n}", params={"optimizer": LONG_OPTIMIZER, "layers": [64, n]},
                       tags={"data": "churn[2024-q1]"}, store=store_url) as run:
            for epoch in (1, 2):
                run.log_metrics({"loss": base * epoch, "accuracy": 1 - base / epoch, "f1": 0.987654321,
                                 "precision": 0.5, "recall": 0.25}, step=epoch, split="validation")
                run.log_metrics({"loss": base * epoch / 2, "accuracy": 1 - base / epoch / 2,
                                 "precision": 0.75, "recall": 0.125}, step=epoch)
        ids.append(run.id)
    return ids[0], ids[1]


def assert_whole(out: str, *values: str) -> None:
    """Every value on one line of ``out`` (not cut with "…", not folded), no line cut."""
    assert "…" not in out, out
    for value in values:
        assert value in out, f"{value!r} not whole in:\n{out}"


def csv_and_json_rows(store_url: str, *args: str) -> list[dict]:
    """The rows of a listing as --format csv and --format json print them, checked equal."""
    code, csv_out, err = runs(store_url, *args, "--format", "csv", columns=80)
    assert code == 0, err
    code, json_out, err = runs(store_url, *args, "--format", "json", columns=80)
    assert code == 0, err
    from_csv = list(csv.DictReader(io.StringIO(csv_out)))
    from_json = json.loads(json_out)
    assert len(from_csv) == len(from_json) and from_json
    for text_row, row in zip(from_csv, from_json, strict=True):
        assert list(text_row) == list(row)  # same columns, in the same order
        for key, value in row.items():
            if value is None:
                assert text_row[key] == ""
            elif isinstance(value, bool | str):
                assert text_row[key] == (json.dumps(value) if isinstance(value, bool) else value)
            elif isinstance(value, int | float):
                assert float(text_row[key]) == value, key
            else:
                assert json.loads(text_row[key]) == value, key
    return from_json


def test_list_at_80_columns_cuts_nothing(store_url: str, long_runs: tuple[int, int]) -> None:
    code, out, _ = runs(store_url, "list", columns=80)
    assert code == 0
    assert_whole(out, LONG_EXPERIMENT, f"{LONG_NAME}-0", f"{LONG_NAME}-1", "finished",
                 "0.2469", "0.9383", "0.9877", "val accuracy")


def test_show_at_80_columns_cuts_nothing(store_url: str, long_runs: tuple[int, int]) -> None:
    code, out, _ = runs(store_url, "show", str(long_runs[0]), columns=80)
    assert code == 0
    assert_whole(out, LONG_EXPERIMENT, f"({LONG_NAME}-0)", f"optimizer={LONG_OPTIMIZER}", "finished",
                 "data=churn[2024-q1]", "0.06173 / 0.1235", "0.9691 / 0.9383", "0.75 / 0.5",
                 "0.125 / 0.25", "0.9877")


def test_compare_at_80_columns_cuts_nothing(store_url: str, long_runs: tuple[int, int]) -> None:
    code, out, _ = runs(store_url, "compare", *map(str, long_runs), columns=80)
    assert code == 0
    assert_whole(out, f"{long_runs[0]} {LONG_NAME}-0", f"{long_runs[1]} {LONG_NAME}-1", LONG_EXPERIMENT,
                 LONG_OPTIMIZER, "finished", "[64, 0]", "0.2469 (best 0.1235 @1)",
                 "0.9383")


def test_list_in_a_real_pipe_at_80_columns(sqlite_url: str) -> None:
    with start_run(LONG_EXPERIMENT, name=LONG_NAME, store=sqlite_url) as run:
        run.log_metrics({"loss": 0.123456789}, step=1, split="validation")
    env = {**os.environ, "COLUMNS": "80"}
    result = subprocess.run([sys.executable, "-m", "modelmon.cli", "runs", "list", "--store", sqlite_url],
                            capture_output=True, text=True, env=env, check=True)
    assert_whole(result.stdout, LONG_EXPERIMENT, LONG_NAME, "finished", "0.1235")


def test_list_as_csv_and_json(store_url: str, long_runs: tuple[int, int]) -> None:
    rows = csv_and_json_rows(store_url, "list")
    by_id = {row["id"]: row for row in rows}
    assert set(by_id) == set(long_runs)
    first = by_id[long_runs[0]]
    assert first["experiment"] == LONG_EXPERIMENT and first["name"] == f"{LONG_NAME}-0"
    assert first["status"] == "finished" and first["epochs"] == 2 and first["model"] is None
    # Full values, not the table's four digits: the final validation loss, accuracy and F1.
    assert (first["val_loss"], first["val_accuracy"], first["val_f1"]) == (0.246913578, 1 - 0.123456789 / 2, 0.987654321)
    assert first["started"].startswith("20") and first["duration_seconds"] >= 0
    code, out, _ = runs(store_url, "list", "--experiment", "nothing-here", "--format", "json")
    assert code == 0 and json.loads(out) == []


def test_show_as_csv_and_json(store_url: str, long_runs: tuple[int, int]) -> None:
    rows = csv_and_json_rows(store_url, "show", str(long_runs[0]))
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[1] == {"epoch": 2, "train_loss": 0.123456789, "validation_loss": 0.246913578,
                       "train_accuracy": 1 - 0.123456789 / 4, "validation_accuracy": 1 - 0.123456789 / 2,
                       "train_precision": 0.75, "validation_precision": 0.5, "train_recall": 0.125,
                       "validation_recall": 0.25, "validation_f1": 0.987654321}


def test_compare_as_csv_and_json(store_url: str, long_runs: tuple[int, int]) -> None:
    rows = csv_and_json_rows(store_url, "compare", *map(str, long_runs))
    assert [row["id"] for row in rows] == list(long_runs)
    first = rows[0]
    assert first["name"] == f"{LONG_NAME}-0" and first["experiment"] == LONG_EXPERIMENT
    assert first["param_optimizer"] == LONG_OPTIMIZER and first["param_layers"] == [64, 0]
    assert (first["validation_loss"], first["validation_loss_best"], first["validation_loss_best_epoch"]) == (
        0.246913578, 0.123456789, 1)
