"""The report's table of rollout decisions (dashboards/decisions.py), read from a real store
(SQLite and PostgreSQL): every action with its time, shares before and after, who decided
and the gate evidence; the time range picks the rollouts; the evidence shown is the one
the store holds, computed here by the gates themselves (serving.rollout_gates)."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from modelmon.dashboards.decisions import decisions_html, evidence_text, model_decisions
from modelmon.serving.rollout_gates import GATES
from modelmon.store import open_store, rollouts

ALPHA = 0.05
MARGINS = {"errors": 0.01, "estimated_quality": 0.02}


def new_rollout(store, model: str = "churn", steps=(10.0, 50.0, 100.0)) -> rollouts.Rollout:
    return rollouts.create(
        store, model=model, primary_version=1, candidate_version=2, mode="canary", steps=list(steps),
        gates=list(MARGINS), margins=MARGINS, alpha=ALPHA, min_requests=10, sticky_header=None, decided_by="cli",
    )


def replica_evidence(counts: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[dict, dict]:
    """A replica's evidence record as serving.rollout writes it, from the gates' own results."""
    alpha = ALPHA / len(counts)
    results = {g: GATES[g].compare(c, p, alpha, MARGINS[g], g) for g, (c, p) in counts.items()}
    record = {"replica": "host-1:8080", "alpha_per_gate": alpha, "step_requests": 120,
              "failed": [g for g, r in results.items() if r.verdict == "fail"],
              "gates": {g: r.as_dict() for g, r in results.items()}}
    return record, results


def test_the_table_shows_every_decision_with_its_evidence(store_url: str) -> None:
    store = open_store(store_url)
    started = datetime.now(UTC) - timedelta(seconds=1)
    # Rollout 1: advanced once on passing gates, then rolled back on estimated quality.
    plan = new_rollout(store)
    same = (np.array([0.0, 5000.0]), np.array([0.0, 5000.0]))
    advance, passed = replica_evidence({"errors": same, "estimated_quality": (np.array([100.0, 5000.0]), np.array([100.0, 5000.0]))})
    assert [r.verdict for r in passed.values()] == ["pass", "pass"]
    plan = rollouts.apply(store, plan, "advance", decided_by="host-1:8080", evidence=advance)
    back, failed = replica_evidence({"errors": same, "estimated_quality": (np.array([300.0, 1000.0]), np.array([100.0, 1000.0]))})
    assert [r.verdict for r in failed.values()] == ["pass", "fail"]
    rollouts.apply(store, plan, "roll_back", decided_by="host-1:8080", evidence=back)
    # Rollout 2: promoted by an operator over HTTP.
    second = new_rollout(store)
    rollouts.apply(store, second, "promote", decided_by="http", evidence={"operator": "promote"})
    # Another model's rollout is not this model's.
    rollouts.apply(store, new_rollout(store, model="other"), "abort", decided_by="cli", evidence={"operator": "abort"})

    found = model_decisions(store, "churn", started, datetime.now(UTC) + timedelta(seconds=1))
    assert [(d.rollout.id, d.action, d.shares(), d.by_operator) for d in found] == [
        (plan.id, "start", "10%", True),
        (plan.id, "advance", "10% → 50%", False),
        (plan.id, "roll_back", "50% → 0%", False),
        (second.id, "start", "10%", True),
        (second.id, "promote", "10% → 100%", True),
    ]
    assert all(started <= d.decided_at <= datetime.now(UTC) for d in found)
    # The roll_back names its failed gate only, with the interval and margin the gate computed.
    gate = failed["estimated_quality"]
    text = evidence_text(found[2])
    assert text.startswith("estimated_quality fail: ") and "errors" not in text
    low, high = (float(x) for x in re.search(r"interval \[([-0-9.]+), ([-0-9.]+)\]", text).groups())
    assert (low, high) == (pytest.approx(gate.low, abs=5e-5), pytest.approx(gate.high, abs=5e-5))
    assert low > 0 and "margin 0.02" in text and "candidate 300 of 1000, primary 100 of 1000" in text
    # The advance shows every gate, each interval's top at or below its margin.
    shown = evidence_text(found[1])
    tops = [float(x) for x in re.findall(r"interval \[[-0-9.]+, ([-0-9.]+)\]", shown)]
    assert tops == [pytest.approx(passed[g].high, abs=5e-5) for g in ("errors", "estimated_quality")]
    assert all(top <= MARGINS[g] for top, g in zip(tops, MARGINS, strict=True))
    assert "120 candidate requests in the step" in shown
    assert evidence_text(found[4]) == "operator's promote: no gate decided it"
    assert evidence_text(found[0]) == "canary of version 2 against 1; steps 10%, 50%, 100%; gates errors, estimated_quality"

    page = decisions_html(found)
    assert page is not None
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    assert len(rows) == 1 + len(found)  # the header and one row a decision
    cells = re.findall(r"<td>(.*?)</td>", rows[3])
    assert cells[2:5] == ["roll_back", "50% → 0%", "replica host-1:8080"]
    assert re.findall(r"<td>(.*?)</td>", rows[5])[4] == "operator (http)"


def test_the_time_range_picks_the_rollouts(store_url: str) -> None:
    store = open_store(store_url)
    plan = new_rollout(store)
    rollouts.apply(store, plan, "abort", decided_by="cli", evidence={"operator": "abort"})
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert model_decisions(store, "churn", after, after + timedelta(hours=1)) == []
    assert model_decisions(store, "churn", after - timedelta(hours=1), plan.created_at - timedelta(seconds=1)) == []
    assert [d.action for d in model_decisions(store, "churn", after - timedelta(hours=1), after)] == ["start", "abort"]
    assert decisions_html([]) is None


def test_a_range_in_another_time_zone_and_a_running_rollout(store_url: str) -> None:
    """A range given in UTC+05:30 picks what the same instants in UTC pick (SQLite keeps wall
    clocks without zones); times come back in UTC; a rollout still running shows in a later
    range although it last changed before it; the drift gate's evidence reads as drift."""
    store = open_store(store_url)
    india = timezone(timedelta(hours=5, minutes=30))
    plan = new_rollout(store)
    now = datetime.now(UTC)
    found = model_decisions(store, "churn", (now - timedelta(minutes=5)).astimezone(india), (now + timedelta(seconds=5)).astimezone(india))
    assert [d.action for d in found] == ["start"]
    assert found[0].decided_at.utcoffset() == timedelta(0)
    assert model_decisions(store, "churn", (now + timedelta(seconds=5)).astimezone(india), (now + timedelta(hours=1)).astimezone(india))[0].rollout.id == plan.id
    shares = (np.array([0.5, 0.5]), 5000.0)
    drift = GATES["drift"].compare(np.array([4500.0, 500.0]), np.array([2500.0, 2500.0]), ALPHA, 0.2, "drift", (shares, shares))
    assert drift.verdict == "fail"
    text = evidence_text(replace(found[0], action="roll_back", evidence={"replica": "r", "failed": ["drift"], "gates": {"drift": drift.as_dict()}}))
    assert "drift: candidate 0.400 over 5000 rows, primary 0.000 over 5000" in text
