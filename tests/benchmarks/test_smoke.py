"""Smoke runs of the benchmarks: each produces numbers in a few seconds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.mark.slow
def test_drift_thresholds_quick(tmp_path):
    out = tmp_path / "thresholds.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "drift_thresholds.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rates = json.loads(out.read_text())["rates"]
    assert "| stationary | 200 |" in result.stdout
    # The strongest planted shift is caught, and stationary data is not flagged wholesale.
    assert rates["shift 1 sd / 20 pts | 5000"]["numeric_flag_rate"] == 1.0
    assert rates["stationary | 5000"]["numeric_flag_rate"] <= 0.25
