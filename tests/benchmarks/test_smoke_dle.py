"""Smoke run of the DLE benchmark: the generated case through a real server, in seconds.

Without NannyML (``--no-nannyml``): its import and fit took over three of the four minutes
of the run with it on this machine; the full run (benchmarks/results/dle.json) covers it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.mark.slow
def test_dle_quick(tmp_path):
    out = tmp_path / "dle.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "dle.py"), "--quick", "--no-nannyml", "--out", str(out)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "| generated shift | 3 |" in result.stdout
    assert report["versions"]["nannyml"] is None and report["target_met"] is None
    case = report["cases"]["gen-shift"]
    rows = case["per_window"]
    assert [r["window"] for r in rows] == [0, 1, 2, 3] and all(r["rows"] == 1000 for r in rows)
    for r in rows:
        # Every row was counted once, and the counters are the registered estimator applied to
        # the served predictions.
        assert r["counted_rows"] == 1000
        assert r["server_vs_offline_max_relative"] < 1e-9
        for metric in ("mae", "rmse"):
            assert r["modelmon"][metric] > 0
            # Loose: the reference error is about 1.4 (MAE) and 1.9 (RMSE).
            assert abs(r["modelmon"][metric] - r["realized"][metric]) < 0.4, (r["window"], metric)
        assert "nannyml" not in r
    for metric in ("mae", "rmse"):
        # Far better than the constant reference error under the planted shift.
        assert case["mae"][metric]["modelmon_mae"] < 0.5 * case["mae"][metric]["naive_mae"]
    # The shift raises the error, and the label-free estimate follows it up.
    assert rows[-1]["realized"]["mae"] > rows[0]["realized"]["mae"] + 0.4
    assert rows[-1]["modelmon"]["mae"] > rows[0]["modelmon"]["mae"] + 0.3
