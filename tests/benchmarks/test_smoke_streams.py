"""Smoke run of the event publisher benchmark: 500 events into each running broker, every one
read back in order."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.mark.slow
def test_streams_quick(tmp_path):
    out = tmp_path / "streams.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "streams.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert results, "no broker was running"
    for row in results:
        assert row["published"] == row["received"] == 500 and row["in_order_once"], row
