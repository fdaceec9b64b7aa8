"""Start, promote, abort and read a rollout: the one implementation behind ``modelmon
rollout`` and the server's rollout endpoints. They act on the store only; every server
serving the model picks the change up on its next check."""

from __future__ import annotations

from typing import Any

from modelmon.errors import RolloutConflictError
from modelmon.registry.store import Registry
from modelmon.serving.rollout_spec import parse_start
from modelmon.store import Store, rollouts
from modelmon.store.rollouts import Rollout, RolloutConflict

#: Operator actions besides start, and the action each writes.
OPERATOR_ACTIONS = {"promote": "promote", "abort": "abort"}


def start(store: Store, registry: Registry, model: str, payload: Any, by: str) -> Rollout:
    """Check ``payload`` (``rollout_spec.parse_start``) and start the rollout."""
    spec = parse_start(model, payload, registry, rollouts.latest(store, model))
    try:
        return rollouts.create(
            store, model=spec.model, primary_version=spec.primary_version, candidate_version=spec.candidate_version,
            mode=spec.mode, steps=spec.steps, gates=spec.gates, margins=spec.margins, alpha=spec.alpha,
            min_requests=spec.min_requests, sticky_header=spec.sticky_header, decided_by=by,
            sticky_feature=spec.sticky_feature,
        )
    except RolloutConflict as exc:
        raise RolloutConflictError(str(exc)) from None


def act(store: Store, model: str, action: str, by: str) -> Rollout:
    """An operator's ``promote`` (the candidate takes all traffic now) or ``abort`` (back
    to the primary) of the model's running rollout."""
    running = rollouts.latest(store, model)
    if running is None or running.state != rollouts.RUNNING:
        state = "none was ever started" if running is None else f"the last one {running.state.replace('_', ' ')}"
        raise RolloutConflictError(f"no rollout of {model!r} is running ({state})")
    try:
        return rollouts.apply(store, running, OPERATOR_ACTIONS[action], decided_by=by, evidence={"operator": action})
    except RolloutConflict as exc:
        raise RolloutConflictError(str(exc)) from None


def status(store: Store, model: str) -> dict[str, Any] | None:
    """The model's newest rollout and its decisions; None if it never had one."""
    found = rollouts.latest(store, model)
    if found is None:
        return None
    return {**found.as_dict(), "decisions": rollouts.decisions(store, found.id)}
