"""``modelmon demo`` end to end, as a user runs it: a real subprocess, server and Prometheus."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelmon.demo.data import TARGET, generate_customers
from modelmon.demo.rollout import MAX_REQUESTS, ROWS_PER_REQUEST
from modelmon.demo.run import run_demo
from modelmon.errors import ModelmonError
from modelmon.registry import Registry
from modelmon.stack.processes import free_port
from modelmon.stack.prometheus import prometheus_binary
from modelmon.store import open_store, rollouts
from modelmon.store.rollouts import Rollout


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (Linux /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(command)
    return found


def rolled_back_on(home: Path, model: str) -> tuple[Rollout, dict[str, Any]]:
    """The demo's rollout as the store holds it: rolled back, by a replica's decision, before
    any label of its traffic arrived. Returns it and that decision's evidence."""
    store = open_store(str(home / "modelmon.db"))
    rollout = rollouts.latest(store, model)
    assert rollout is not None and (rollout.primary_version, rollout.candidate_version) == (1, 2)
    assert rollout.state == "rolled_back" and rollout.serving_version == 1
    decisions = rollouts.decisions(store, rollout.id)
    assert [d["action"] for d in decisions] == ["start", "roll_back"]
    evidence = decisions[-1]["evidence"]
    assert decisions[-1]["decided_by"] == evidence["replica"]  # a replica on its gates, not an operator
    with sqlite3.connect(home / "modelmon.db") as db:
        labelled = db.execute(
            "SELECT count(*) FROM labels l JOIN predictions p ON p.id = l.prediction_id "
            "WHERE p.model = ? AND p.predicted_at >= ?", (model, phase_start(rollout))).fetchone()[0]
    assert labelled == 0
    return rollout, evidence


def phase_start(rollout: Rollout) -> str:
    # The store's SQLite text form of a time (store/predictions.py), to compare as text.
    return rollout.created_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def phase_answers(home: Path, rollout: Rollout) -> list[tuple[int, str]]:
    """(version, prediction) of every row the rollout phase sent, in the order sent: the
    prediction log's rows since the rollout began, whose ids one process numbers in order."""
    with sqlite3.connect(home / "modelmon.db") as db:
        rows = db.execute("SELECT id, version, predicted_label FROM predictions WHERE model = ? AND predicted_at >= ?",
                          (rollout.model, phase_start(rollout))).fetchall()
    rows.sort(key=lambda row: int(row[0].rsplit("-", 1)[1]))
    return [(int(version), str(answer)) for _, version, answer in rows]


def printed_scores(out: str) -> dict[int, tuple[float, int]]:
    """Each version's printed true score and rows, from the phase's last line."""
    line = next(line for line in out.splitlines() if "(never sent):" in line)
    return {int(v): (float(score), int(rows)) for v, score, rows in re.findall(r"version (\d+) ([0-9.]+) on (\d+) rows", line)}


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "demo",
         "--port", str(free_port()), "--requests", "300"],
        env={**os.environ, "MODELMON_HOME": str(home), "COLUMNS": "120"},
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "What the clients saw" in out
    assert "300 in" in out
    assert "Done in" in out
    # The rollout phase: version 2, worse on the drifted customers, rolled back before any
    # label, on estimated quality (CBPE): the store's plan and decision say so.
    assert Registry(home / "registry").versions("churn") == [1, 2]
    rollout, evidence = rolled_back_on(home, "churn")
    assert evidence["failed"] == ["estimated_quality"] and evidence["gates"]["estimated_quality"]["low"] > 0
    assert "7. Rollout" in out and "on estimated_quality: its interval" in out and "with no label sent" in out
    # ...and truly worse: each version's accuracy on the true labels of the rows it answered,
    # from the prediction log, is the printed one, and version 2's is lower.
    answers = phase_answers(home, rollout)
    truth = generate_customers(ROWS_PER_REQUEST * MAX_REQUESTS, seed=13, shift=True)[TARGET].to_numpy()
    printed = printed_scores(out)
    for version in (1, 2):
        hits = [answer == truth[i] for i, (v, answer) in enumerate(answers) if v == version]
        assert printed[version] == (pytest.approx(float(np.mean(hits)), abs=6e-4), len(hits))
    assert printed[1][0] > printed[2][0]
    # The report shows the decision with the evidence the store holds.
    if prometheus_binary() is not None:
        report = (home / "report.html").read_text()
        assert "Rollout decisions and their evidence" in report
        gate = evidence["gates"]["estimated_quality"]
        assert f"estimated_quality fail: interval [{gate['low']:.4f}, {gate['high']:.4f}]" in report
        assert "<td>roll_back</td><td>50% → 0%</td>" in report
    if prometheus_binary() is not None:
        assert "Read back from Prometheus" in out
        assert "partial" not in out
        assert "200: " in out and "400: " in out
    else:
        assert "no Prometheus found" in out
    assert processes_mentioning(str(home)) == []


def test_a_taken_port_fails_at_once_and_says_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ModelmonError, match="--port"):
            run_demo(port=port, requests=10, home=tmp_path)
    assert not (tmp_path / "registry").exists()
