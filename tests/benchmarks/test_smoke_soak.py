"""Smoke run of the soak benchmark: a short run produces numbers and no errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "soak.py"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk (Debian package) is not installed")
def test_soak_quick(tmp_path):
    out = tmp_path / "soak.json"
    # 8 s of soak after two 2 s probes, not --quick's 20 s after 5 s ones: still 5 memory samples
    # or more (one a second) and the writer's catching up, in 18 s less of load.
    result = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--seconds", "8", "--probe-seconds", "2",
                             "--out", str(out)], capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr
    numbers = json.loads(out.read_text())
    assert numbers["achieved_requests_per_second"] > 0 and len(numbers["rss_mib"]) >= 5
    assert numbers["http_errors"] == 0 and numbers["socket_errors"] == 0 and numbers["server_counted_errors"] == 0
    log = numbers["prediction_log_after"]  # the writer process stored every prediction served
    assert log["served"] > 0 and log["written"] + log["replayed"] >= log["served"] and log["dropped"] == 0
