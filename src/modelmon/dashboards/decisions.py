"""The report's table of rollout decisions, read from the store (``store.rollouts``).

Prometheus keeps how many decisions each replica applied (``modelmon_rollout_decisions_total``);
the store keeps the decisions themselves: when, which action, the step before and after,
who decided (a replica, or an operator through the CLI or HTTP) and the gate evidence it
decided on. Grafana's Rollout row draws the counters, and its "Rollout decisions (store)" row
a SQL table of the decisions (``catalog.rollout_decisions``); the report draws this table in
that panel's place, with the evidence in words: one row per decision of the model's rollouts
in the report's time range.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, select

from modelmon.dashboards.catalog import DECISIONS_TITLE
from modelmon.store import Store, rollouts
from modelmon.store.rollouts import Rollout

#: The newest rollouts of a model shown (a model has a few; the table stays readable).
MAX_ROLLOUTS = 5
#: The title of Grafana's table of the same decisions (catalog.rollout_decisions), whose
#: place this table takes in the report.
TITLE = DECISIONS_TITLE
DESCRIPTION = ("Every decision on the model's rollouts in the time range, from the store (rollout_decisions): when, the "
               "action, the candidate's share before and after, who decided (a replica on its gates' evidence, or an "
               "operator), and the evidence: a roll_back's failed gates, each with its interval of the candidate's bad "
               "share minus the primary's (above 0: worse; for the drift gate, of the versions' prediction drift, above the "
               "margin: worse) and its margin; an advance's gates, each interval's top at or below its margin.")
COLUMNS = ("time (UTC)", "rollout", "action", "share before → after", "decided by", "evidence")
#: Inserted after the time when the table holds decisions of more than one model.
MODEL_COLUMN = "model"


@dataclass(frozen=True)
class Decision:
    rollout: Rollout
    decided_at: datetime
    action: str
    from_step: int
    to_step: int
    state: str
    decided_by: str
    evidence: dict[str, Any]

    @property
    def by_operator(self) -> bool:
        # A replica writes its id into its evidence (serving.rollout); start, promote and
        # abort come from `modelmon rollout` ("cli") or the HTTP endpoints ("http").
        return "replica" not in self.evidence

    def shares(self) -> str:
        steps = self.rollout.steps
        if self.action == "start":
            return f"{steps[0]:g}%"
        after = {"rolled_back": "0%", "aborted": "0%", "promoted": "100%"}.get(self.state, f"{steps[self.to_step]:g}%")
        return f"{steps[self.from_step]:g}% → {after}"


def model_rollouts(store: Store, model: str, start: datetime, end: datetime) -> list[Rollout]:
    """The model's rollouts that ran at some time in [start, end], newest first (at most
    MAX_ROLLOUTS). (``store.rollouts`` reads one rollout or the newest; this reads a range.)"""
    table = rollouts.rollouts
    with store.read() as connection:
        ids = connection.execute(
            select(table.c.id)
            # A running rollout ran until now, whenever it last changed.
            .where(table.c.model == model, table.c.created_at <= _utc(end),
                   or_(table.c.updated_at >= _utc(start), table.c.state == "running"))
            .order_by(table.c.id.desc()).limit(MAX_ROLLOUTS)
        ).scalars().all()
    found = [rollouts.get(store, int(i)) for i in ids]
    return [r for r in found if r is not None]


def _utc(moment: datetime) -> datetime:
    """``moment`` in UTC, as the store writes times (SQLite keeps a time's wall clock and
    drops its zone, so another zone's would compare wrong); a naive one is taken as UTC."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def model_decisions(store: Store, model: str, start: datetime, end: datetime) -> list[Decision]:
    """Every decision of the model's rollouts in [start, end], oldest first."""
    out = []
    for rollout in reversed(model_rollouts(store, model, start, end)):
        for d in rollouts.decisions(store, rollout.id):
            out.append(Decision(rollout, datetime.fromisoformat(d["decided_at"]), d["action"], d["from_step"],
                                d["to_step"], d["state"], d["decided_by"], d["evidence"] or {}))
    return out


def _gate_text(name: str, gate: dict[str, Any]) -> str:
    low, high, margin = gate.get("low"), gate.get("high"), gate.get("margin")
    counts = ""
    if "candidate_drift" in gate and isinstance(gate.get("candidate"), dict) and isinstance(gate.get("primary"), dict):
        # The drift gate's (bad, count) is (observed drift x rows, rows): show the drift.
        c, p = gate["candidate"], gate["primary"]
        counts = (f" (drift: candidate {c.get('bad', 0) / max(c.get('count', 0), 1):.3f} over {c.get('count', 0):.0f} rows, "
                  f"primary {p.get('bad', 0) / max(p.get('count', 0), 1):.3f} over {p.get('count', 0):.0f})")
    elif isinstance(gate.get("candidate"), dict) and isinstance(gate.get("primary"), dict):
        counts = (f" (candidate {gate['candidate'].get('bad', 0):.4g} of {gate['candidate'].get('count', 0):.0f}, "
                  f"primary {gate['primary'].get('bad', 0):.4g} of {gate['primary'].get('count', 0):.0f})")
    if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not isinstance(margin, (int, float)):
        return f"{name}: {gate.get('verdict', '?')}"
    return f"{name} {gate.get('verdict', '?')}: interval [{low:.4f}, {high:.4f}], margin {margin:g}{counts}"


def evidence_text(decision: Decision) -> str:
    """What the decision was taken on, in words."""
    evidence = decision.evidence
    if decision.action == "start":
        r = decision.rollout
        steps = ", ".join(f"{s:g}%" for s in r.steps)
        return f"{r.mode} of version {r.candidate_version} against {r.primary_version}; steps {steps}; gates {', '.join(r.gates)}"
    if decision.by_operator:
        return f"operator's {evidence.get('operator', decision.action)}: no gate decided it"
    gates: dict[str, dict[str, Any]] = evidence.get("gates") or {}
    failed = [g for g in evidence.get("failed") or [] if g in gates]
    shown = failed if decision.action == "roll_back" and failed else list(gates)
    text = "; ".join(_gate_text(g, gates[g]) for g in shown)
    requests = evidence.get("step_requests")
    if isinstance(requests, (int, float)):
        text += f"; {requests:.0f} candidate requests in the step"
    return text


def decisions_html(decisions: list[Decision]) -> str | None:
    """The decisions as an HTML table (None without any). Decisions of several models get a
    ``model`` column (after the time), since rollout ids and versions alone do not say
    whose they are."""
    if not decisions:
        return None
    several = len({d.rollout.model for d in decisions}) > 1
    rows = []
    for d in decisions:
        who = f"operator ({d.decided_by})" if d.by_operator else f"replica {d.decided_by}"
        cells = [d.decided_at.strftime("%Y-%m-%d %H:%M:%S"), f"{d.rollout.id}: version {d.rollout.candidate_version}",
                 d.action, d.shares(), who, evidence_text(d)]
        if several:
            cells.insert(1, d.rollout.model)
        rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    columns = (COLUMNS[0], MODEL_COLUMN, *COLUMNS[1:]) if several else COLUMNS
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    return f"<div class='scroll'><table class='decisions'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
