"""The rollout plan in the store (store/rollouts.py) on SQLite and PostgreSQL: two replicas
that read the same plan and decide at once get one decision applied, the other changes
nothing; one running rollout per model; the migration goes down and up again."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from modelmon.store import open_store, rollouts
from modelmon.store.migrate import HEAD_REVISION, current_revision, downgrade, upgrade
from modelmon.store.rollouts import RolloutConflict


def new_rollout(store, model="m", mode="canary", steps=(10.0, 50.0, 100.0)) -> rollouts.Rollout:
    return rollouts.create(
        store, model=model, primary_version=1, candidate_version=2, mode=mode, steps=list(steps),
        gates=["errors"], margins={"errors": 0.01}, alpha=0.05, min_requests=10, sticky_header=None, decided_by="test",
    )


def test_two_replicas_deciding_at_once_apply_one_decision(store_url: str) -> None:
    store = open_store(store_url)
    plan = new_rollout(store)
    assert (plan.state, plan.step, plan.share, plan.revision) == ("running", 0, 0.1, 1)
    # Both replicas read revision 1; the first to write wins, the second changes nothing.
    seen_by_a = rollouts.latest(store, "m")
    seen_by_b = rollouts.latest(store, "m")
    moved = rollouts.apply(store, seen_by_a, "advance", decided_by="replica-a", evidence={"gates": {"errors": "pass"}})
    assert (moved.step, moved.share, moved.revision) == (1, 0.5, 2)
    with pytest.raises(RolloutConflict):
        rollouts.apply(store, seen_by_b, "roll_back", decided_by="replica-b", evidence={})
    assert rollouts.latest(store, "m") == moved
    # The last advance of a canary promotes: the candidate then answers everything.
    done = rollouts.apply(store, moved, "advance", decided_by="replica-b", evidence={})
    assert (done.state, done.step, done.share, done.serving_version) == ("promoted", 2, 1.0, 2)
    with pytest.raises(RolloutConflict):
        rollouts.apply(store, done, "abort", decided_by="cli", evidence={})
    history = rollouts.decisions(store, plan.id)
    assert [(d["action"], d["from_step"], d["to_step"], d["state"], d["decided_by"]) for d in history] == [
        ("start", 0, 0, "running", "test"),
        ("advance", 0, 1, "running", "replica-a"),
        ("advance", 1, 2, "promoted", "replica-b"),
    ]
    assert history[1]["evidence"] == {"gates": {"errors": "pass"}}


def test_one_running_rollout_per_model_and_a_shadow_promotes_from_its_last_step(store_url: str) -> None:
    store = open_store(store_url)
    shadow = new_rollout(store, mode="shadow", steps=(100.0,))
    with pytest.raises(RolloutConflict):
        new_rollout(store)
    new_rollout(store, model="other")  # another model is independent
    done = rollouts.apply(store, shadow, "advance", decided_by="r", evidence={})
    assert (done.state, done.step) == ("promoted", 0)
    again = new_rollout(store)  # the model's rollout ended: a new one may start
    rolled_back = rollouts.apply(store, again, "roll_back", decided_by="r", evidence={"failed": ["errors"]})
    assert (rolled_back.share, rolled_back.serving_version) == (0.0, 1)
    assert {m: r.id for m, r in rollouts.latest_of_every_model(store).items()} == {"m": again.id, "other": again.id - 1}


def test_the_migration_goes_down_and_up(store_url: str) -> None:
    store = open_store(store_url)
    new_rollout(store)
    assert current_revision(store.engine) == HEAD_REVISION == "0006"
    downgrade(store.engine, "0004")  # the sticky feature's column goes, the rollouts stay
    assert "sticky_feature" not in {c["name"] for c in inspect(store.engine).get_columns("rollouts")}
    upgrade(store.engine)
    assert rollouts.latest(store, "m").sticky_feature is None
    downgrade(store.engine, "0003")
    assert "rollouts" not in inspect(store.engine).get_table_names()
    upgrade(store.engine)
    assert {"rollouts", "rollout_decisions"} <= set(inspect(store.engine).get_table_names())
    assert rollouts.latest(store, "m") is None
