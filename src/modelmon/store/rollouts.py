"""Tables of safe rollouts: the plan every replica follows, and the decisions taken on it.

A rollout moves unversioned traffic of one model from its primary version to a candidate,
in steps (the candidate's share, in percent), and ends promoted, rolled back or aborted.
The row is the plan: every replica reads it on a timer, so a restarted replica resumes it
and the replicas of a fleet on one PostgreSQL store follow one plan.

A change of step or state is a compare-and-set on ``revision``: the write succeeds only if
the row is still at the revision its writer read, so when two replicas decide at once one
decision is applied and the other finds the plan already moved (``apply``). The decision is
inserted in the same transaction as the change it made, with its evidence, or not at all.
At most one rollout of a model runs at a time (a partial unique index on running rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError

from modelmon.store.engine import Store
from modelmon.store.schema import metadata

MODES = ("shadow", "canary")
RUNNING = "running"
#: Every state; a rollout leaves ``running`` once and for good.
STATES = (RUNNING, "promoted", "rolled_back", "aborted")
#: What a decision did to the plan.
ACTIONS = ("start", "advance", "promote", "roll_back", "abort")

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model", String(64), nullable=False),
    Column("primary_version", Integer, nullable=False),
    Column("candidate_version", Integer, nullable=False),
    Column("mode", String(16), nullable=False),
    Column("steps", JSON, nullable=False),  # candidate shares in percent, increasing, the last 100
    Column("step", Integer, nullable=False),  # index into steps
    Column("state", String(16), nullable=False),
    Column("gates", JSON, nullable=False),  # {"names": [...], "margins": {...}}
    Column("alpha", Float, nullable=False),
    Column("min_requests", Integer, nullable=False),
    Column("sticky_header", String(64)),
    Column("sticky_feature", Text),  # revision 0005
    Column("revision", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_rollouts_running_model", "model", unique=True,
          sqlite_where=text("state = 'running'"), postgresql_where=text("state = 'running'")),
)

rollout_decisions = Table(
    "rollout_decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("rollout_id", Integer, ForeignKey("rollouts.id"), nullable=False, index=True),
    Column("decided_at", DateTime(timezone=True), nullable=False),
    Column("action", String(16), nullable=False),
    Column("from_step", Integer, nullable=False),
    Column("to_step", Integer, nullable=False),
    Column("state", String(16), nullable=False),  # the rollout's state after the decision
    Column("decided_by", String(128), nullable=False),  # "cli", "http", or a replica's id
    Column("evidence", JSON, nullable=False),
)


class RolloutConflict(Exception):
    """The plan changed since it was read (another replica or command moved it first), or
    another rollout of the model is running."""


@dataclass(frozen=True, slots=True)
class Rollout:
    id: int
    model: str
    primary_version: int
    candidate_version: int
    mode: str
    steps: list[float]
    step: int
    state: str
    gates: list[str]
    margins: dict[str, float]
    alpha: float
    min_requests: int
    sticky_header: str | None
    revision: int
    created_at: datetime
    updated_at: datetime
    #: A canary's feature whose value decides each row's version (docs/rollout.md).
    sticky_feature: str | None = None

    @property
    def share(self) -> float:
        """The candidate's share of the model's unversioned traffic now (0 to 1): the step's
        while running, all once promoted, none once rolled back or aborted."""
        if self.state == RUNNING:
            return self.steps[self.step] / 100.0
        return 1.0 if self.state == "promoted" else 0.0

    @property
    def serving_version(self) -> int:
        """The version that answers the model's unversioned requests once it has ended."""
        return self.candidate_version if self.state == "promoted" else self.primary_version

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "model": self.model, "primary": self.primary_version,
            "candidate": self.candidate_version, "mode": self.mode, "steps": self.steps,
            "step": self.step, "share": self.share, "state": self.state, "gates": self.gates,
            "margins": self.margins, "alpha": self.alpha, "min_requests": self.min_requests,
            "sticky_header": self.sticky_header, "sticky_feature": self.sticky_feature, "revision": self.revision,
            "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
        }


def _now() -> datetime:
    return datetime.now(UTC)


def _rollout(row: Any) -> Rollout:
    m = row._mapping
    return Rollout(
        id=m["id"], model=m["model"], primary_version=m["primary_version"],
        candidate_version=m["candidate_version"], mode=m["mode"], steps=[float(s) for s in m["steps"]],
        step=m["step"], state=m["state"], gates=list(m["gates"]["names"]),
        margins={k: float(v) for k, v in m["gates"]["margins"].items()}, alpha=m["alpha"],
        min_requests=m["min_requests"], sticky_header=m["sticky_header"], sticky_feature=m["sticky_feature"],
        revision=m["revision"],
        created_at=_aware(m["created_at"]), updated_at=_aware(m["updated_at"]),
    )


def _aware(value: datetime) -> datetime:
    # SQLite hands back naive datetimes (every time written here is UTC); PostgreSQL aware
    # ones in the session's time zone, which need not be UTC.
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def create(
    store: Store,
    *,
    model: str,
    primary_version: int,
    candidate_version: int,
    mode: str,
    steps: list[float],
    gates: list[str],
    margins: dict[str, float],
    alpha: float,
    min_requests: int,
    sticky_header: str | None,
    decided_by: str,
    sticky_feature: str | None = None,
) -> Rollout:
    """A new running rollout at its first step (the caller checked every value). Raises
    RolloutConflict when a rollout of ``model`` is running already."""
    now = _now()
    try:
        with store.write() as connection:
            if _running_id(connection, model) is not None:
                raise RolloutConflict(f"a rollout of {model!r} is running already: promote or abort it first")
            result = connection.execute(rollouts.insert().values(
                model=model, primary_version=primary_version, candidate_version=candidate_version,
                mode=mode, steps=steps, step=0, state=RUNNING, gates={"names": gates, "margins": margins},
                alpha=alpha, min_requests=min_requests, sticky_header=sticky_header, sticky_feature=sticky_feature, revision=1,
                created_at=now, updated_at=now,
            ))
            rollout_id = int(result.inserted_primary_key[0])  # type: ignore[index]
            _insert_decision(connection, rollout_id, "start", 0, 0, RUNNING, decided_by, {}, now)
    except IntegrityError:  # the unique index: another writer started one in between
        raise RolloutConflict(f"a rollout of {model!r} is running already: promote or abort it first") from None
    found = get(store, rollout_id)
    assert found is not None
    return found


def _running_id(connection: Connection, model: str) -> int | None:
    return connection.execute(
        select(rollouts.c.id).where(rollouts.c.model == model, rollouts.c.state == RUNNING)
    ).scalar()


def get(store: Store, rollout_id: int) -> Rollout | None:
    with store.read() as connection:
        row = connection.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
    return None if row is None else _rollout(row)


def latest(store: Store, model: str) -> Rollout | None:
    """The model's newest rollout, whatever its state (None if it never had one)."""
    with store.read() as connection:
        row = connection.execute(
            select(rollouts).where(rollouts.c.model == model).order_by(rollouts.c.id.desc()).limit(1)
        ).first()
    return None if row is None else _rollout(row)


def latest_of_every_model(store: Store) -> dict[str, Rollout]:
    """Each model's newest rollout: what the model's unversioned traffic follows. (The
    table holds a row per rollout ever started, a few per model: read whole.)"""
    with store.read() as connection:
        rows = connection.execute(select(rollouts).order_by(rollouts.c.id)).all()
    found: dict[str, Rollout] = {}
    for row in rows:  # ascending ids: each model's newest is written last
        found[row._mapping["model"]] = _rollout(row)
    return found


def decisions(store: Store, rollout_id: int) -> list[dict[str, Any]]:
    with store.read() as connection:
        rows = connection.execute(
            select(rollout_decisions).where(rollout_decisions.c.rollout_id == rollout_id).order_by(rollout_decisions.c.id)
        ).all()
    return [
        {"action": r.action, "from_step": r.from_step, "to_step": r.to_step, "state": r.state,
         "decided_by": r.decided_by, "decided_at": _aware(r.decided_at).isoformat(), "evidence": r.evidence}
        for r in rows
    ]


def apply(
    store: Store,
    read: Rollout,
    action: str,
    *,
    decided_by: str,
    evidence: dict[str, Any],
) -> Rollout:
    """Apply ``action`` to the rollout as it was ``read``: ``advance`` one step (the last
    step promotes), ``promote`` to the end, ``roll_back`` or ``abort``. A compare-and-set on
    the revision: raises RolloutConflict, changing nothing, when the plan moved since it was
    read or the rollout has ended."""
    if read.state != RUNNING:
        raise RolloutConflict(f"the rollout of {read.model!r} has ended ({read.state})")
    to_step, state = read.step, RUNNING
    last = len(read.steps) - 1
    if action == "advance" and read.mode == "canary":
        # A canary's last step (all traffic) leaves nothing to compare: reaching it promotes.
        to_step = read.step + 1
        state = "promoted" if to_step == last else RUNNING
    elif action == "advance":
        # A shadow compares at every step, the last one (a copy of all traffic) included.
        to_step = min(read.step + 1, last)
        state = "promoted" if read.step == last else RUNNING
    elif action == "promote":
        to_step, state = last, "promoted"
    elif action == "roll_back":
        state = "rolled_back"
    elif action == "abort":
        state = "aborted"
    else:
        raise ValueError(f"unknown rollout action {action!r}")
    now = _now()
    with store.write() as connection:
        changed = connection.execute(
            update(rollouts)
            .where(rollouts.c.id == read.id, rollouts.c.revision == read.revision, rollouts.c.state == RUNNING)
            .values(step=to_step, state=state, revision=read.revision + 1, updated_at=now)
        ).rowcount
        if changed != 1:
            raise RolloutConflict(f"the rollout of {read.model!r} changed since it was read; read it again")
        _insert_decision(connection, read.id, action, read.step, to_step, state, decided_by, evidence, now)
    found = get(store, read.id)
    assert found is not None
    return found


def _insert_decision(
    connection: Connection, rollout_id: int, action: str, from_step: int, to_step: int, state: str,
    decided_by: str, evidence: dict[str, Any], now: datetime,
) -> None:
    connection.execute(rollout_decisions.insert().values(
        rollout_id=rollout_id, decided_at=now, action=action, from_step=from_step, to_step=to_step,
        state=state, decided_by=decided_by[:128], evidence=evidence,
    ))
