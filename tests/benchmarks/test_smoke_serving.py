"""Smoke run of the serving benchmark: ``--quick`` produces numbers for every server it ran.

Peers (MLServer, BentoML) take part only when their venvs under benchmarks/.peers/ are already
built; on a fresh machine (CI) the run is modelmon only and builds nothing.
"""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from peers import venvs  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_serving_quick(tmp_path):
    # Which peers take part is decided when the run starts (a venv may finish building meanwhile).
    expected = {"modelmon", "modelmon_nomon", "ceiling", "batch64_on", "batch64_off", "ceiling64"}
    if venvs.installed("mlserver"):
        expected |= {"mlserver_pw0", "mlserver_default"}
    if venvs.installed("bentoml"):
        expected.add("bentoml")
    out = tmp_path / "serving.json"
    # 1 s per level (wrk's shortest) instead of --quick's 2 s: every server, level, tree framework
    # and the batching study still run end to end, in about 25 s less of load.
    command = ["--quick", "--duration", "1", "--batch-duration", "1"]
    result = subprocess.run([sys.executable, str(BENCHMARKS / "serving.py"), *command, "--out", str(out)],
                            capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    summary = data["summary"]
    assert expected <= set(summary)
    for key, entry in summary.items():
        assert 0 < entry["ready_seconds"] < 120, key
        assert entry["loaded_rss_mib"] > 10, key
        for level, x in entry["levels"].items():
            assert x["requests_per_second"] > 0, (key, level)
            assert 0 < x["p50_ms"] <= x["p99_ms"], (key, level)
            assert x["errors"] == 0, (key, level)  # every answer was a 200
            assert x["server_cpu_us_per_request"] > 0, (key, level)
    # Ratios and target verdicts are computed (whatever they say on a noisy machine).
    assert data["ratios"]["modelmon/modelmon_nomon"]["32"]["throughput_ratio"] > 0
    assert data["ratios"]["modelmon/ceiling"]["1"]["throughput_ratio"] > 0
    assert data["ratios"]["modelmon/ceiling"]["1"]["cpu_per_request_ratio"] > 0
    assert data["ratios"]["batch64_on/ceiling64"]["32"]["throughput_ratio"] > 0  # 64-row requests too
    assert {"monitoring_keeps_90pct", "ready_under_2s", "half_the_ceiling"} <= set(data["targets"])
    assert all(isinstance(t["met"], bool) for t in data["targets"].values())
    assert "| modelmon, everything on | 32 |" in result.stdout
    # A quick run writes only where --out says: its table never lands in the committed README.
    assert f"`python benchmarks/serving.py {' '.join(command)}`" in result.stdout
    assert "`python benchmarks/serving.py --quick" not in (BENCHMARKS / "README.md").read_text()
