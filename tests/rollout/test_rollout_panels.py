"""The rollout's surface against a real Prometheus scraping a real server: every panel of the
serving dashboard's Rollout row returns data (the shared dashboard stack runs no rollout, see
tests/dashboards/test_panels_live.py), its figures are the server's own, the report draws the
row, and the built-in ModelmonRolloutRolledBack fires for the model rolled back and no other.

One server serves two models, each with a primary (version 1) and a candidate (version 2):
``shadowed`` runs a shadow rollout of the same model that cannot advance (its step minimum
is out of reach), so its gates, share and agreement are exported while it runs; ``inverted``
is a canary of a model trained on inverted labels, rolled back on estimated quality.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from modelmon.dashboards import catalog
from modelmon.dashboards.catalog import SERVING_UID, all_dashboards
from modelmon.dashboards.queries import Source, resolve_variables, run_query
from modelmon.dashboards.report import write_report
from modelmon.dashboards.templating import Expansion, TimeRange
from modelmon.registry import register_model
from modelmon.stack.processes import stop_process
from modelmon.stack.prometheus import Prometheus
from tests.conftest import ServerProcess, start_server
from tests.rollout.test_rollout import MARGINS, SERVER_ARGS, drive, metric, start, status

pytestmark = pytest.mark.slow
SERVING = next(d for d in all_dashboards() if d.uid == SERVING_UID)
PANELS = {p.title: p for p in catalog.rollout().panels}
ALERT = "ModelmonRolloutRolledBack"


@dataclass
class Surface:
    server: ServerProcess
    prometheus: Prometheus
    started: datetime


@pytest.fixture(scope="module")
def surface(tmp_path_factory, cancer_frame: pd.DataFrame, cancer_model: LogisticRegression) -> Iterator[Surface]:
    from modelmon.alerting.config import AlertingConfig
    from modelmon.alerting.export import export

    tmp = tmp_path_factory.mktemp("rollout-surface")
    X, y = cancer_frame.drop(columns="target"), cancer_frame["target"]
    inverted = LogisticRegression(max_iter=10000).fit(X, 1 - y)
    for name, candidate in (("shadowed", cancer_model), ("inverted", inverted)):
        for model in (cancer_model, candidate):
            register_model(model, name=name, reference=cancer_frame, target="target", validation=cancer_frame,
                           registry=tmp / "registry", convert_to_onnx=False)
    export(AlertingConfig(), tmp / "alerts", alertmanager_files=False)
    started = datetime.now(UTC)
    server = start_server(tmp / "registry", tmp, *SERVER_ARGS, home=tmp / "home")
    prometheus = None
    try:
        prometheus = Prometheus.start(tmp / "prometheus", [f"127.0.0.1:{server.port}"],
                                      rule_files=[tmp / "alerts" / "prometheus" / "modelmon-alerts.rules.yml"])
        assert prometheus.wait_for('count(up{job="modelmon"} == 1)', 1, timeout=30) == 1
        instances = X.to_dict("records")
        # A shadow that cannot leave its first step: a million candidate requests needed. Not
        # judged on latency: a shadow copy's latency is its batch's call (docs/rollout.md), and
        # a burst's batched copies rolled this shadow back on it in 2 of 13 runs (26 of 61
        # copies above 5 ms against 1 of 120 requests).
        assert start(server.url, "shadowed", candidate=2, mode="shadow", steps=[50, 100], gates=SHADOW_GATES,
                     margins={gate: MARGINS[gate] for gate in SHADOW_GATES}, min_requests=1_000_000).status_code == 200
        # Traffic over a few scrapes: the agreement is a ratio of rates, which needs a counter
        # to grow between two scrapes (its series is born with the first rows it counts). Each
        # burst waits for a scrape that holds it: 0.65-0.93 s, where a fixed 1.5 s sleep was.
        agreed = {"model": "shadowed", "outcome": "agree"}
        for burst in range(4):
            drive(server.url, "shadowed", instances, rows=5, until=set(), most=30, seed=burst)
            rows = settled_shadow_count(server.url, agreed)
            assert rows > 0
            assert prometheus.wait_for('sum(modelmon_rollout_shadow_rows_total{model="shadowed", outcome="agree"})', rows) == rows
        assert start(server.url, "inverted", candidate=2, steps=[10, 50, 100], margins=MARGINS, min_requests=30).status_code == 200
        found, _ = drive(server.url, "inverted", instances, rows=20, until={"promoted", "rolled_back"}, most=3000)
        assert found["state"] == "rolled_back", found
        # Prometheus has scraped everything once it holds the server's final counts.
        agree = metric(server.url, "modelmon_rollout_shadow_rows_total", {"model": "shadowed", "outcome": "agree"})
        assert agree is not None and agree > 0
        assert prometheus.wait_for('sum(modelmon_rollout_shadow_rows_total{model="shadowed", outcome="agree"})', agree) == agree
        assert prometheus.wait_for('sum(modelmon_rollout_decisions_total{model="inverted", action="roll_back"})', 1) == 1
        time.sleep(2)  # a few more scrapes, so rate windows after the traffic hold samples
        yield Surface(server, prometheus, started)
    finally:
        if prometheus is not None:
            prometheus.stop()
        stop_process(server.process)


SHADOW_GATES = ["errors", "estimated_quality", "drift"]


def settled_shadow_count(url: str, labels: dict[str, str], pause: float = 0.1, timeout: float = 10.0) -> float:
    """The server's shadow row count once two reads ``pause`` apart agree: copies are counted
    after the shadow worker's linger (20 ms) and its model call, after the callers' answers."""
    last = metric(url, "modelmon_rollout_shadow_rows_total", labels)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(pause)
        now = metric(url, "modelmon_rollout_shadow_rows_total", labels)
        if now is not None and now == last:
            return now
        last = now
    raise AssertionError(f"the shadow count of {labels} kept changing for {timeout} s (last {last})")


def _context(surface: Surface, model: str) -> tuple[Source, Expansion]:
    source = Source(prometheus_url=surface.prometheus.url, scrape_interval=1.0)
    context = Expansion(TimeRange(surface.started - timedelta(seconds=10), datetime.now(UTC)), min_interval=1.0)
    resolve_variables(SERVING, source, context, {"model": model})
    return source, context


def _last(results) -> dict[str, float]:
    """Each series' last finite value, by its legend-free label set."""
    out = {}
    for series in results.series:
        finite = [v for v in series.values if math.isfinite(v)]
        if finite:
            out[",".join(f"{k}={v}" for k, v in sorted(series.labels.items()))] = finite[-1]
    return out


def test_every_rollout_panel_shows_the_servers_own_figures(surface):
    source, context = _context(surface, "shadowed")
    for title, panel in PANELS.items():
        for query in panel.queries:
            assert run_query(query, source, context).has_data, f"{title}: No data from {query}"
    # The state, as the server's status endpoint says.
    found = status(surface.server.url, "shadowed")
    table = run_query(PANELS["Rollout state"].queries[0], source, context).table
    assert table is not None
    rows = [dict(zip(table.columns, row, strict=True)) for row in table.rows]
    assert [(r["primary"], r["candidate"], r["mode"], r["state"]) for r in rows] == [("1", "2", "shadow", "running")]
    assert found["state"] == "running" and found["mode"] == "shadow"
    assert list(_last(run_query(PANELS["Candidate share"].queries[0], source, context)).values()) == [0.5]
    # Each gate's interval, and its margin, are this replica's evidence.
    bounds = _last(run_query(PANELS["Gate intervals against their margins"].queries[0], source, context))
    margins = _last(run_query(PANELS["Gate intervals against their margins"].queries[1], source, context))
    gates = found["evidence"]["gates"]
    assert set(gates) == set(SHADOW_GATES)
    instance = f"127.0.0.1:{surface.server.port}"
    for gate, result in gates.items():
        for bound in ("low", "high"):
            assert bounds[f"bound={bound},gate={gate},instance={instance}"] == pytest.approx(result[bound], rel=1e-9, abs=1e-12)
        assert margins[f"gate={gate}"] == pytest.approx(MARGINS[gate])
    # The same model twice: the shadow agrees with the primary on every row it answered.
    agreement = _last(run_query(PANELS["Shadow agreement"].queries[0], source, context))
    assert list(agreement.values()) == [1.0]
    assert metric(surface.server.url, "modelmon_rollout_shadow_rows_total", {"model": "shadowed", "outcome": "disagree"}) == 0.0
    outcomes = _last(run_query(PANELS["Shadow copies by outcome"].queries[0], source, context))
    assert "outcome=answered" in outcomes


def test_the_rolled_back_canary_shows_its_decision(surface):
    source, context = _context(surface, "inverted")
    table = run_query(PANELS["Rollout state"].queries[0], source, context).table
    assert table is not None
    assert [row[table.columns.index("state")] for row in table.rows] == ["rolled_back"]
    decisions = _last(run_query(PANELS["Rollout decisions"].queries[0], source, context))
    assert decisions["action=roll_back"] == 1.0
    assert list(_last(run_query(PANELS["Candidate share"].queries[0], source, context)).values()) == [0.0]


def test_the_rollback_alert_fires_for_the_rolled_back_model_only(surface):
    deadline = time.monotonic() + 30
    firing: list[dict] = []
    while time.monotonic() < deadline:
        alerts = httpx.get(f"{surface.prometheus.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        firing = [a for a in alerts if a["labels"]["alertname"] == ALERT and a["state"] == "firing"]
        if firing:
            break
        time.sleep(0.5)
    assert [a["labels"]["model"] for a in firing] == ["inverted"]
    assert firing[0]["labels"]["severity"] == "warning"
    assert firing[0]["annotations"]["candidate"] == "version 2"
    assert firing[0]["annotations"]["value"] == "1"


def test_the_report_draws_the_rollout_row_of_a_model_that_had_one(surface, tmp_path):
    seconds = (datetime.now(UTC) - surface.started).total_seconds() + 10
    summary = write_report(tmp_path / "report.html", surface.prometheus.url, None, range_seconds=seconds,
                           scrape_interval=1.0, model="shadowed")
    drawn = {p.title: p.has_data for p in summary.panels if p.dashboard == SERVING.title}
    assert {title: drawn.get(title) for title in PANELS} == dict.fromkeys(PANELS, True)
    assert "<h3>Rollout</h3>" in Path(tmp_path / "report.html").read_text()
