"""What the CLI prints: tables never cut, listings as CSV and JSON, and text with brackets
printed literally, not eaten as rich markup (issue 15, items 3 and 5)."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from modelmon.cli import app
from modelmon.console import Column, OutputFormat, fail, print_listing, say
from modelmon.registry import register_model

LONG_MODEL = "churn-model-with-a-rather-long-name-for-80-columns"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "80"})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- The shared helper ---------------------------------------------------------------------

COLUMNS = [Column("experiment"), Column("status"), Column("note[x]", "note [x]"),
           *(Column(f"metric_{i}", f"metric {i}") for i in range(6))]
ROW = {"experiment": "churn-tuning-very-long-experiment-name", "status": "finished",
       "note[x]": "pip install 'modelmon[postgres]'", **{f"metric_{i}": 0.123456789 for i in range(6)}}


def test_a_table_on_an_80_column_terminal_folds_values_instead_of_cutting_them(monkeypatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("NO_COLOR", "1")
    print_listing(COLUMNS, [ROW], OutputFormat.table, title="runs in [somewhere]")
    lines = ANSI.sub("", terminal.getvalue()).splitlines()
    assert lines[0] == "runs in [somewhere]"
    assert "…" not in "\n".join(lines) and max(map(len, lines)) <= 80
    # Joining each column's pieces over the row's lines gives every value back whole.
    body = [line.split("│")[1:-1] for line in lines if line.startswith("│")]
    header = [line.split("┃")[1:-1] for line in lines if line.startswith("┃")]
    cells = ["".join(piece.strip() for piece in column) for column in zip(*body, strict=True)]
    headers = ["".join(piece.strip() for piece in column) for column in zip(*header, strict=True)]
    assert cells[:3] == [ROW["experiment"], "finished", ROW["note[x]"].replace(" ", "")]
    assert cells[3:] == ["0.123456789"] * 6
    assert headers[2] == "note[x]"


def test_a_table_in_a_pipe_keeps_every_value_on_its_line(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    print_listing(COLUMNS, [ROW], OutputFormat.table)
    out = capsys.readouterr().out
    assert "…" not in out
    row = next(line for line in out.splitlines() if "churn" in line)
    assert [c.strip() for c in row.split("│")[1:-1]] == [*ROW.values()][:3] + ["0.123456789"] * 6


def test_csv_and_json_hold_the_same_rows(capsys) -> None:
    rows = [ROW, {**ROW, "status": None, "metric_0": float("inf"), "metric_1": 3}]
    print_listing(COLUMNS, rows, OutputFormat.csv)
    from_csv = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    print_listing(COLUMNS, rows, OutputFormat.json)
    from_json = json.loads(capsys.readouterr().out)
    assert [list(r) for r in from_csv] == [list(r) for r in from_json] == [[c.key for c in COLUMNS]] * 2
    assert from_json[0] == ROW and from_csv[0] == {k: str(v) for k, v in ROW.items()}
    # Missing values are empty in CSV and null in JSON; non-finite ones "inf" and null, as in `runs export`.
    assert (from_csv[1]["status"], from_csv[1]["metric_0"], from_csv[1]["metric_1"]) == ("", "inf", "3")
    assert (from_json[1]["status"], from_json[1]["metric_0"], from_json[1]["metric_1"]) == (None, None, 3)


def test_messages_are_literal_and_unwrapped(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    message = "cannot use postgresql://db: Install the driver with: pip install 'modelmon[postgres]'"
    say(("note:", "yellow"), " [bold]not markup[/bold] ", message)
    with pytest.raises(typer.Exit) as exit_:
        fail(f"the model expects feature 'income[usd]'; {message}")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"note: [bold]not markup[/bold] {message}",
        f"error: the model expects feature 'income[usd]'; {message}",
    ]
    assert exit_.value.exit_code == 2


# --- modelmon models -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def long_registry(tmp_path_factory, cancer_model) -> Path:
    root = tmp_path_factory.mktemp("registry")
    register_model(cancer_model, name=LONG_MODEL, registry=root, convert_to_onnx=False)
    from sklearn.linear_model import LinearRegression

    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    register_model(LinearRegression().fit(x, [1.0, 2.0, 4.0, 5.0]), name="price", registry=root, convert_to_onnx=False)
    return root


def test_models_at_80_columns_cuts_nothing(long_registry: Path) -> None:
    result = invoke("models", "--registry", str(long_registry))
    assert result.exit_code == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if LONG_MODEL in line)
    assert "…" not in result.stdout
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[0] == LONG_MODEL and cells[1] == "1" and cells[2] == "classification"
    assert cells[5] == "30" and cells[6] == "2"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d", cells[7])
    # A regressor: its task, and no class count (it has no classes; "0" read as a defect).
    row = next(line for line in result.stdout.splitlines() if "price" in line)
    cells = [c.strip() for c in row.split("│")[1:-1]]
    assert cells[0] == "price" and cells[2] == "regression" and cells[5] == "2" and cells[6] == ""


def test_models_as_csv_and_json(long_registry: Path) -> None:
    as_csv = invoke("models", "--registry", str(long_registry), "--format", "csv")
    as_json = invoke("models", "--registry", str(long_registry), "--format", "json")
    assert as_csv.exit_code == 0 and as_json.exit_code == 0
    text_row, text_regressor = sorted(csv.DictReader(io.StringIO(as_csv.stdout)), key=lambda r: r["model"] == "price")
    row, regressor = sorted(json.loads(as_json.stdout), key=lambda r: r["model"] == "price")
    assert (row["task"], text_row["task"]) == ("classification", "classification")
    assert (regressor["task"], regressor["classes"], regressor["features"]) == ("regression", None, 2)
    assert (text_regressor["task"], text_regressor["classes"]) == ("regression", "")
    assert row["model"] == text_row["model"] == LONG_MODEL
    assert row["version"] == int(text_row["version"]) == 1
    assert row["features"] == int(text_row["features"]) == 30 and row["classes"] == 2
    assert row["flavor"] == text_row["flavor"] and row["runtime"] == text_row["runtime"]
    assert row["created"] == text_row["created"] and "T" in row["created"]
    empty = invoke("models", "--registry", str(long_registry / "none"), "--format", "json")
    assert empty.exit_code == 0 and json.loads(empty.stdout) == []


# --- Error messages with brackets ----------------------------------------------------------

def test_a_missing_postgres_driver_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # `import psycopg` fails as if not installed
    result = invoke("runs", "list", "--store", "postgresql://nobody@127.0.0.1:1/no-driver")
    assert result.exit_code == 2
    assert "Install the driver with: pip install 'modelmon[postgres]'" in result.stderr


def test_grpc_port_errors_say_what_to_do(long_registry: Path, monkeypatch) -> None:
    """Before any model loads: the gRPC port must differ from HTTP's, and grpcio must be installed."""
    clash = invoke("serve", "--registry", str(long_registry), "--port", "8123", "--grpc-port", "8123")
    assert clash.exit_code == 2 and "--grpc-port 8123 is --port too: gRPC needs a port of its own" in clash.stderr
    monkeypatch.setitem(sys.modules, "grpc", None)  # `import grpc` fails as if not installed
    missing = invoke("serve", "--registry", str(long_registry), "--port", "8123", "--grpc-port", "8124")
    assert missing.exit_code == 2 and "pip install 'modelmon[grpc]'" in missing.stderr


def test_a_feature_name_with_brackets_stays_literal(tmp_path: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    features = pd.DataFrame({"income[usd]": rng.normal(size=40), "age": rng.normal(size=40)})
    label = (features["age"] > 0).astype(int)
    sio.dump(LogisticRegression().fit(features, label), tmp_path / "model.skops")
    features.rename(columns={"income[usd]": "income"}).assign(label=label).to_csv(tmp_path / "ref.csv", index=False)
    result = invoke("register", "--name", "m", "--model", str(tmp_path / "model.skops"), "--registry",
                    str(tmp_path / "registry"), "--reference", str(tmp_path / "ref.csv"), "--target", "label")
    assert result.exit_code == 2 and "'income[usd]'" in result.stderr, result.stderr


@pytest.mark.parametrize(("args", "literal"), [
    (["serve", "--model", "churn[v2]"], "invalid model name 'churn[v2]'"),
    (["grafana", "export", "out", "--sql", "[mysql]"], "not '[mysql]'"),
    (["rules", "export", "out", "--window", "[hourly]"], "window '[hourly]'"),
])
def test_values_with_brackets_in_errors_stay_literal(tmp_path: Path, monkeypatch, args: list[str], literal: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MODELMON_HOME", str(tmp_path))
    result = invoke(*args)
    assert result.exit_code == 2 and literal in result.stderr, result.stderr


def test_a_label_column_with_brackets_stays_literal(tmp_path: Path) -> None:
    pd.DataFrame({"id": ["a"], "label": [1]}).to_csv(tmp_path / "labels.csv", index=False)
    result = invoke("feedback", str(tmp_path / "labels.csv"), "--model", "m", "--label-column", "label[v2]")
    assert result.exit_code == 2 and "no column ['label[v2]']" in result.stderr, result.stderr


# --- typer's own rendering -----------------------------------------------------------------

def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    if hasattr(command, "commands"):  # a group
        for name, sub in command.commands.items():
            yield from _commands(sub, (*path, name))


def test_typer_help_and_usage_errors_keep_their_brackets() -> None:
    """Every bracketed part of a command's or option's help ("[default: ...]") is shown, and
    typer's usage errors quote bad values literally."""
    checked = 0
    for path, command in _commands(typer.main.get_command(app)):
        texts = [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
        wanted = [m.replace("\\[", "[") for t in texts for m in re.findall(r"\\?\[[^\]]*\]", t)]
        if not wanted:
            continue
        result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "1000"})
        assert result.exit_code == 0, path
        shown = " ".join(result.stdout.split())
        for part in wanted:
            assert " ".join(part.split()) in shown, (path, part)
            checked += 1
    assert checked > 10
    for args, literal in ((["runs", "list", "--format", "[xml]"], "'[xml]' is not one of"),
                          (["runs", "[nope]"], "No such command '[nope]'")):
        result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
        assert result.exit_code == 2 and literal in result.stderr, result.stderr
