"""Smoke run of the drift benchmark: ``--quick`` (10,000 rows) produces timings, verdicts and
the exporter's numbers.

Evidently, NannyML and alibi-detect take part only when their venvs under benchmarks/.peers/
are already built; on a fresh machine (CI) the run is modelmon and scipy and builds nothing.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
from peers import venvs  # noqa: E402


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_drift_quick(tmp_path):
    out = tmp_path / "drift.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "drift.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    summary = data["summary"]

    expected = {"modelmon", "scipy"} | {t for t, v in (("evidently", "evidently"), ("nannyml", "nannyml"),
                                                         ("alibi-detect", "alibi-detect")) if venvs.installed(v)}
    assert expected <= set(summary)
    for tool, entry in summary.items():
        step = entry["steps"]["account_and_score" if tool == "modelmon" else "detect"]
        assert step["seconds"] > 0 and step["peak_rss_mib"] > 0, tool
        assert set(entry["flagged"]) == set(data["features"]), tool
    assert summary["modelmon"]["steps"]["profile"]["seconds"] > 0

    # The data is seeded, so modelmon's verdicts are fixed: every strong shift flagged,
    # nothing else, and the subtle ones reported with their scores and a reason.
    assessment = data["assessment"]
    assert assessment["every_strong_shift_flagged"]["met"], assessment
    assert assessment["no_unshifted_feature_flagged"]["met"], assessment
    for feature, verdict in data["modelmon_verdicts"].items():
        assert verdict["reason"] and verdict["verdict_score"] >= 0, feature

    exporter = data["exporter"]
    assert exporter["series"] > 6 * 50 * 10  # bins alone: 2 models x 3 versions x 50 features x 10 bins
    assert exporter["render_ms_median"] > 0
    for model in data["accounting"]["models"].values():
        for x in model["per_batch"].values():
            assert x["count_us_per_row_per_feature"] > 0 and x["monitoring_hook_us_per_batch"] > 0
    assert "| num_00 | strong" in result.stdout
    # A quick run writes only where --out says: its table never lands in the committed README.
    assert "`python benchmarks/drift.py --quick`" in result.stdout
    assert "`python benchmarks/drift.py --quick`" not in (BENCHMARKS / "README.md").read_text()
