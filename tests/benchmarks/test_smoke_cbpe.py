"""Smoke run of the CBPE benchmark: the generated cases through a real server, in seconds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
METRICS = ("accuracy", "f1_macro")


@pytest.mark.slow
def test_cbpe_quick(tmp_path):
    out = tmp_path / "cbpe.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "cbpe.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert "| generated binary | 0 |" in result.stdout and "| generated 3-class | 3 |" in result.stdout
    with_nannyml = report["versions"]["nannyml"] is not None
    for name in ("gen-binary", "gen-3class"):
        case = report["cases"][name]
        rows = case["per_window"]
        assert [r["window"] for r in rows] == [0, 1, 2, 3] and all(r["rows"] == 1000 for r in rows)
        for r in rows:
            # Every row was counted once, and the counters are the card's calibration applied to
            # the probabilities the server returned.
            assert abs(r["cells_sum_minus_rows"]) < 1e-6
            assert r["server_vs_offline_max_abs"] < 1e-6
            for metric in METRICS:
                assert 0.0 < r["modelmon"][metric] < 1.0
                # Loose: 1,000-row windows have a sampling error of about 0.015 on their own.
                assert abs(r["modelmon"][metric] - r["realized"][metric]) < 0.1, (name, r["window"], metric)
            assert ("nannyml" in r) == with_nannyml
        for metric in METRICS:
            assert case["mae"][metric]["modelmon_mae"] < 0.06
        # The planted shift lowers accuracy, and the label-free estimate follows it down.
        assert rows[-1]["realized"]["accuracy"] < rows[0]["realized"]["accuracy"] - 0.05
        assert rows[-1]["modelmon"]["accuracy"] < rows[0]["modelmon"]["accuracy"] - 0.03
