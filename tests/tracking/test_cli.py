"""``modelmon runs ...`` on SQLite and PostgreSQL."""

from __future__ import annotations

import io
import json
import math
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


def runs(store_url: str, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["runs", *args, "--store", store_url], env={"COLUMNS": "200"})
    return result.exit_code, result.stdout, result.stderr


def test_list(store_url: str, two_runs: tuple[int, int]) -> None:
    code, out, _ = runs(store_url, "list")
    assert code == 0
    first, second = two_runs
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
