"""Smoke run of the serving benchmark's shadow case (``serving.py --shadow-only --quick``):
both servers measured at every level, the shadow one really following a shadow rollout (its
copies counted), and the shadow / none ratios computed."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)"
)
def test_serving_shadow_quick(tmp_path):
    out = tmp_path / "rollout_shadow.json"
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "rollout_shadow.py"),
            "--quick",
            "--duration",
            "1",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    assert set(data["summary"]) == {"modelmon_shadow", "modelmon"}
    for key, entry in data["summary"].items():
        assert set(entry["levels"]) == {"1", "8", "32"}, key
        assert all(
            x["requests_per_second"] > 0 and x["errors"] == 0 for x in entry["levels"].values()
        ), key
    ratios = data["ratios"]["modelmon_shadow/modelmon"]
    assert all(
        ratios[c]["p50_ratio"] > 0
        and ratios[c]["p99_ratio"] > 0
        and ratios[c]["throughput_ratio"] > 0
        for c in ("1", "8", "32")
    )
    copies = data["shadow_copies_last_round"]
    assert set(copies) == {"answered", "failed", "timed_out", "dropped", "shed"}
    assert copies["answered"] + copies["shed"] > 0  # the shadow server followed the rollout
    assert "| shadow / none | c=1 | c=8 | c=32 |" in result.stdout
    # A quick run writes only where --out says: its table never lands in the committed README.
    assert "`python benchmarks/serving.py --quick --shadow-only" in result.stdout
    assert "`python benchmarks/serving.py --quick --shadow-only" not in (BENCHMARKS / "README.md").read_text()
