"""Grafana's table of rollout decisions (catalog.rollout_decisions), its SQL run on a real store
(SQLite and PostgreSQL) as Grafana would run it: each decision of the model's rollouts in the
time range, newest first, with the shares, who decided and the evidence that the report's own
reader (dashboards/decisions.py, in Python) finds in the same store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import numpy as np

from modelmon.dashboards import catalog
from modelmon.dashboards.decisions import Decision, model_decisions
from modelmon.dashboards.queries import Source, run_query
from modelmon.dashboards.templating import Expansion, Selection, TimeRange
from modelmon.store import open_store, rollouts
from tests.rollout.test_report_decisions import new_rollout, replica_evidence

(PANEL,) = catalog.rollout_decisions().panels


def _rows(store_url: str, model: str, start: datetime, end: datetime) -> list[dict]:
    context = Expansion(TimeRange(start, end), variables={"model": Selection.single(model)})
    result = run_query(PANEL.queries[0], Source(store_url=store_url), context)
    assert result.table is not None
    return [dict(zip(result.table.columns, row, strict=True)) for row in result.table.rows]


def _expected(d: Decision) -> dict:
    """A decision as the table should show it, from the Python reader's figures."""
    shares = [float(s.rstrip("%")) for s in d.shares().split(" → ")]
    before, after = (0.0, shares[0]) if d.action == "start" else shares
    return {"rollout": d.rollout.id, "candidate": d.rollout.candidate_version, "action": d.action,
            "share_before_percent": before, "share_after_percent": after,
            "decided_by": f"operator ({d.decided_by})" if d.by_operator else f"replica {d.decided_by}",
            "failed_gates": d.evidence.get("failed"), "evidence": d.evidence}


def test_the_sql_table_shows_what_the_store_holds(store_url: str) -> None:
    store = open_store(store_url)
    started = datetime.now(UTC) - timedelta(seconds=1)
    plan = new_rollout(store)  # churn, steps 10, 50, 100
    same = (np.array([0.0, 5000.0]), np.array([0.0, 5000.0]))
    advance, _ = replica_evidence({"errors": same, "estimated_quality": (np.array([100.0, 5000.0]), np.array([100.0, 5000.0]))})
    plan = rollouts.apply(store, plan, "advance", decided_by="host-1:8080", evidence=advance)
    back, failed = replica_evidence({"errors": same, "estimated_quality": (np.array([300.0, 1000.0]), np.array([100.0, 1000.0]))})
    assert failed["estimated_quality"].verdict == "fail"
    rollouts.apply(store, plan, "roll_back", decided_by="host-1:8080", evidence=back)
    second = new_rollout(store)
    rollouts.apply(store, second, "promote", decided_by="http", evidence={"operator": "promote"})
    rollouts.apply(store, new_rollout(store, model="other"), "abort", decided_by="cli", evidence={"operator": "abort"})
    end = datetime.now(UTC) + timedelta(seconds=1)

    found = model_decisions(store, "churn", started, end)
    assert [d.action for d in found] == ["start", "advance", "roll_back", "start", "promote"]
    rows = _rows(store_url, "churn", started, end)
    shown = [{k: v for k, v in row.items() if k != "decided_at"} for row in rows]
    for row in shown:
        row["failed_gates"] = None if row["failed_gates"] is None else json.loads(row["failed_gates"])
        row["evidence"] = json.loads(row["evidence"])
        row["share_before_percent"], row["share_after_percent"] = float(row["share_before_percent"]), float(row["share_after_percent"])
    assert shown == [_expected(d) for d in reversed(found)]  # newest first
    assert shown[2]["failed_gates"] == ["estimated_quality"] and shown[2]["share_after_percent"] == 0.0
    # The time range picks the decisions: none after them.
    assert _rows(store_url, "churn", end + timedelta(seconds=1), end + timedelta(hours=1)) == []
