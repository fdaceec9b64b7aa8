"""``modelmon demo --task regression`` end to end, as a user runs it, its printed error
checked against scikit-learn on the labelled rows that the run left in its store."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from modelmon.dashboards import catalog
from modelmon.demo.regression import TARGET, spend_customers
from modelmon.demo.rollout import MAX_REQUESTS, ROWS_PER_REQUEST
from modelmon.registry import Registry
from modelmon.stack.processes import free_port
from modelmon.stack.prometheus import prometheus_binary
from tests.integration.test_demo import phase_answers, printed_scores, rolled_back_on

NUMBER = r"([-+]?[0-9][0-9,]*\.?[0-9]*)"


def table_row(out: str, name: str) -> list[float]:
    """The numbers of one row of the printed error table (rich draws cells between │)."""
    line = next(line for line in out.splitlines() if line.strip("│ ").startswith(name))
    cells = [c.strip() for c in line.strip().strip("│").split("│")[1:]]
    return [float(c.replace(",", "")) if c else float("nan") for c in cells]


def figure(out: str, name: str) -> float:
    match = re.search(rf"^  {re.escape(name)}\s+{NUMBER}$", out, re.MULTILINE)
    assert match, f"no {name!r} figure in:\n{out}"
    return float(match.group(1))


@pytest.mark.slow
def test_regression_demo_prints_the_error_scikit_learn_computes_on_its_labelled_rows(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "demo", "--task", "regression",
         "--port", str(free_port()), "--requests", "200"],
        env={**os.environ, "MODELMON_HOME": str(home), "COLUMNS": "140"},
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert Registry(home / "registry").versions("spend") == [1, 2]
    card = Registry(home / "registry").card("spend", 1)
    assert card.baseline is not None

    with sqlite3.connect(home / "modelmon.db") as db:
        rows = db.execute(
            "SELECT p.predicted_label, l.label FROM predictions p JOIN labels l ON l.prediction_id = p.id "
            "WHERE p.model = 'spend'"
        ).fetchall()
        epochs = dict(db.execute(
            "SELECT step, value FROM metric_values WHERE split = 'validation' AND name = 'mae'"
        ).fetchall())
    predicted = np.array([float(p) for p, _ in rows])
    truth = np.array([float(y) for _, y in rows])
    # Eight epochs in the run store; the last one's validation MAE is the registered baseline's
    # (the same model on the same rows, by the run API and by register_model).
    assert sorted(epochs) == list(range(1, 9))
    assert epochs[8] == pytest.approx(card.baseline["mae"], rel=1e-9)

    # The whole run's realized error, from the server's /metrics: scikit-learn's on the
    # labelled rows in the store (printed to 3 decimals).
    labelled, mae, est_mae, rmse, est_rmse, bias = table_row(out, "whole run")
    assert labelled == len(rows) > 200
    assert mae == pytest.approx(mean_absolute_error(truth, predicted), abs=6e-4)
    assert rmse == pytest.approx(np.sqrt(mean_squared_error(truth, predicted)), abs=6e-4)
    assert bias == pytest.approx(np.mean(predicted - truth), abs=6e-4)
    # The baseline row is the card's.
    baseline = table_row(out, "baseline")
    assert baseline[1] == pytest.approx(card.baseline["mae"], abs=6e-4)
    assert baseline[3] == pytest.approx(card.baseline["rmse"], abs=6e-4)
    # The drifted traffic holds more month-to-month customers, whose spend is noisier: the
    # realized error grows, and the label-free estimate (fitted on validation rows) follows.
    before, after = table_row(out, "before drift"), table_row(out, "after drift")
    assert after[1] > before[1] and after[2] > before[2]
    assert est_mae == pytest.approx(mae, rel=0.15)
    assert "predicted spend against the validation predictions: JS" in out

    if prometheus_binary() is not None:
        assert "partial" not in out
        assert figure(out, "MAE") == pytest.approx(mae, abs=1e-3)
        assert figure(out, "RMSE") == pytest.approx(rmse, abs=1e-3)
        assert figure(out, "estimated MAE") == pytest.approx(est_mae, abs=1e-3)
        assert figure(out, "estimated RMSE") == pytest.approx(est_rmse, abs=1e-3)
        assert figure(out, "R²") == pytest.approx(r2_score(truth, predicted), abs=6e-4)
        assert "live        Prometheus scraped the run at epoch 8" in out

    # The rollout phase: version 2, worse, rolled back by its label-free error estimate
    # (estimated_error) before any label of its traffic arrived: the store's plan and decision.
    rollout, evidence = rolled_back_on(home, "spend")
    assert rollout.gates == ["errors", "latency", "estimated_error"]
    assert evidence["failed"] == ["estimated_error"] and evidence["gates"]["estimated_error"]["low"] > 0
    assert "on estimated_error: its interval" in out and "with no label sent" in out
    # ...and truly worse: each version's MAE on the true spend of the rows it answered, from
    # the prediction log and scikit-learn, is the printed one, and version 2's is higher.
    answers = phase_answers(home, rollout)
    spend = spend_customers(ROWS_PER_REQUEST * MAX_REQUESTS, seed=14, shift=True)[TARGET].to_numpy()
    printed = printed_scores(out)
    for version in (1, 2):
        rows = [(spend[i], float(answer)) for i, (v, answer) in enumerate(answers) if v == version]
        assert printed[version] == (pytest.approx(mean_absolute_error(*zip(*rows, strict=True)), abs=6e-4), len(rows))
    assert printed[2][0] > printed[1][0]
    # The HTML report, as the classifier demo writes it: the regression panels with data, not
    # the classifier's, and the rollback with the evidence the store holds.
    if prometheus_binary() is not None:
        report = (home / "report.html").read_text()
        assert "report for readers without Grafana" in out
        # The quality row, the training run's regressor curves (defect 9 of the user's report),
        # and the rollout's Prometheus panels, written after their series were scraped (defect 8).
        training = next(row for row in catalog.training().rows if row.task == "regression")
        regressor_loss = "Regressor loss"  # the demo's scikit-learn run logs no loss: left out
        rollout_panels = ("Candidate share", "Gate intervals against their margins", "Rollout decisions")
        titles = [p.title for p in (*catalog.regression().panels, *training.panels) if p.title != regressor_loss]
        for title in (*titles, *rollout_panels):
            body = re.search(rf"<h4>{re.escape(title)}</h4><p class='desc'>[^<]*</p>(.*?)<details>", report, re.DOTALL)
            assert body is not None, title
            assert "No data" not in body.group(1) and "Error:" not in body.group(1), title
        assert f"<h4>{regressor_loss}</h4>" not in report and "<h4>Accuracy</h4>" not in report
        assert "<h4>Confusion matrix</h4>" not in report and "<h4>Realized accuracy against baseline</h4>" not in report
        gate = evidence["gates"]["estimated_error"]
        assert f"estimated_error fail: interval [{gate['low']:.4f}, {gate['high']:.4f}]" in report
        assert "<td>roll_back</td><td>50% → 0%</td>" in report


class _Scrapes:
    """Prometheus's answer to the demo's count_over_time query: the scrapes each series has."""

    def __init__(self, counts: dict[str, list[float | None]]) -> None:
        self.counts = counts

    def scalar(self, promql: str) -> float | None:
        name = re.search(r"count_over_time\((\w+)\{", promql).group(1)  # type: ignore[union-attr]
        values = self.counts[name]
        return values.pop(0) if len(values) > 1 else values[0]


def test_the_report_waits_for_three_scrapes_of_each_rollout_series(monkeypatch) -> None:
    from io import StringIO

    from rich.console import Console

    from modelmon.demo import rollout

    console = Console(file=StringIO(), width=200)
    share, bound, decisions = rollout.ROLLOUT_SERIES
    arriving = _Scrapes({share: [None, 1.0, 2.0, 3.0], bound: [2.0, 3.0], decisions: [3.0]})
    assert rollout.wait_for_rollout_series(arriving, console, "price", 1.0)  # type: ignore[arg-type]
    assert arriving.counts == {share: [3.0], bound: [3.0], decisions: [3.0]}  # every answer read
    assert console.file.getvalue() == ""
    # A series Prometheus never scrapes: the wait ends at the timeout and names it.
    missing = _Scrapes({share: [5.0], bound: [None], decisions: [5.0]})
    assert not rollout.wait_for_rollout_series(missing, console, "price", 1.0)  # type: ignore[arg-type]
    assert "0 of 3 scrapes of modelmon_rollout_gate_bound after 1 s" in console.file.getvalue()
