"""Smoke run of the many-models benchmark: ``--quick`` measures the cost per version and the
scrapes under load for two servers, with numbers for each and no errors."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed (apt-get install wrk)")
def test_many_models_quick(tmp_path):
    out = tmp_path / "many_models.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "many_models.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    table = {(r["models"], r["features"]): r for r in data["cost_table"]}
    assert set(table) == {(1, 30), (2, 30)}
    for row in table.values():
        assert row["series"] > 500 and 0 < row["gzip_bytes"] < row["plain_bytes"] / 4
        assert row["rss_mib"] > 10 and row["first_scrape_ms"] > 0 and row["first_gzip_scrape_ms"] > 0
    assert table[(2, 30)]["series"] > table[(1, 30)]["series"]
    summary = data["load"]["2"]["summary"]
    assert set(summary) == {"incremental", "full"}
    for key, entry in summary.items():
        for mode in ("quiet", "scraped"):
            x = entry[mode]
            assert x["requests_per_second"] > 0 and 0 < x["p50_ms"] <= x["p99_ms"], (key, mode)
            assert x["errors"] == 0, (key, mode)  # every answer was a 200
        assert entry["scraped"]["scrapes"] >= 1 and entry["scraped"]["scrape_bytes"] > 0
        assert entry["ratio"]["requests_per_second"] > 0 and entry["ratio"]["p99"] > 0
    assert all(isinstance(t["met"], bool) for t in data["targets"].values())
    profile = data["scrape_profile"]  # where a scrape's CPU goes: every part measured
    assert profile["versions"] == 2 and profile["one active version"]["counting_on_the_loop_ms"] > 0
    for state in ("idle", "one active version"):
        parts = profile[state]["parts_ms"]
        assert set(parts) == {"series", "drift reports", "process and prediction log collectors", "gzip"}
        assert all(ms > 0 for ms in parts.values()), parts
        # Each part is timed inside its scrape on the same thread clock: the remainder is never negative.
        assert profile[state]["unattributed_ms"] >= 0
    assert "| 2 | incremental, " in result.stdout and "(shipped) |" in result.stdout
    # A quick run writes only where --out says: its tables never land in the committed README.
    assert "`python benchmarks/many_models.py --quick`" in result.stdout
    assert "`python benchmarks/many_models.py --quick`" not in (BENCHMARKS / "README.md").read_text()
