"""``modelmon report`` on the live stack: every panel drawn from the same queries as the
dashboards, into one self-contained HTML file with embedded PNG charts."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelmon.dashboards.catalog import all_dashboards
from modelmon.dashboards.report import write_report

pytestmark = pytest.mark.slow
PNG = re.compile(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in PNG.findall(html)]


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_report_draws_every_panel(stack, tmp_path, dialect):
    seconds = (datetime.now(UTC) - stack.started).total_seconds() + 10
    out = tmp_path / "report.html"
    summary = write_report(out, stack.prometheus.url, stack.store_urls[dialect], range_seconds=seconds, scrape_interval=1.0)
    assert summary.notes == []
    assert summary.empty == [], [f"{p.dashboard} / {p.title}: {p.error or 'No data'}" for p in summary.empty]
    # Every panel of every dashboard, the repeated one once per feature.
    expected = sum(len(d.panels) for d in all_dashboards()) + 3  # bins panel: 4 features, counted once above
    assert len(summary.panels) == expected
    html = out.read_text()
    # Self-contained: no scripts, no style sheets or images from elsewhere.
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"(src|href)=['\"]https?:", html)
    images = _images(html)
    charts = sum(p.kind not in ("stat", "table") for d in all_dashboards() for p in d.panels) + 3
    assert len(images) == charts
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    for title in ("Loss", "Fleet PSI per feature against the threshold", "Accuracy", "Request latency (p50, p95, p99)",
                  "Live against reference shares: amount", "Confusion matrix", "Runs compared"):
        assert f"<h4>{title}</h4>" in html, title
    keep = os.environ.get("MODELMON_KEEP_REPORT")  # a directory: keep the report and its charts to look at
    if keep and dialect == "sqlite":
        keep = Path(keep)
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "report.html").write_text(html)
        for i, image in enumerate(images):
            (keep / f"chart-{i:02d}.png").write_bytes(image)


def test_report_command(stack, tmp_path):
    seconds = int((datetime.now(UTC) - stack.started).total_seconds() + 10)
    out = tmp_path / "r.html"
    result = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "report", "--out", str(out), "--prometheus", stack.prometheus.url,
         "--store", stack.store_urls["sqlite"], "--range", f"{seconds}s", "--scrape-interval", "1s", "--model", "shop"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "without" in result.stderr and ", 0 without" in result.stderr, result.stderr
    assert len(_images(out.read_text())) > 20


def test_report_without_a_store_skips_the_sql_dashboards(stack, tmp_path):
    seconds = (datetime.now(UTC) - stack.started).total_seconds() + 10
    summary = write_report(tmp_path / "r.html", stack.prometheus.url, None, range_seconds=seconds, scrape_interval=1.0)
    assert any("Training" in note and "--store" in note for note in summary.notes)
    assert summary.empty == []
    html = (tmp_path / "r.html").read_text()
    assert "Not drawn: its data source was not given." in html  # the quality dashboard's SQL panels
