"""Routing of a model's unversioned requests by its rollout plan (serving/rollout.py),
without a server: weights, sticky headers, shadow copies and ended rollouts."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from scipy import stats

from modelmon.serving.rollout import RolloutController, sticky_share
from modelmon.store.rollouts import Rollout
from modelmon.types import ModelOutput, Task


class Served:
    def __init__(self, versions: list[str]) -> None:
        self.runtimes: dict[str, dict[str, Any]] = {"m": {v: f"runtime {v}" for v in versions}}

    async def load_version(self, name: str, version: str) -> Any:
        raise AssertionError("not needed here")


def plan(mode: str = "canary", step: int = 0, state: str = "running", sticky: str | None = None) -> Rollout:
    now = datetime.now(UTC)
    return Rollout(id=1, model="m", primary_version=1, candidate_version=2, mode=mode, steps=[10.0, 50.0, 100.0],
                   step=step, state=state, gates=["errors"], margins={"errors": 0.01}, alpha=0.05, min_requests=1,
                   sticky_header=sticky, revision=1, created_at=now, updated_at=now)


def controller(rollout: Rollout | None, versions: tuple[str, ...] = ("1", "2")) -> RolloutController:
    made = RolloutController(Served(list(versions)), None, CollectorRegistry(), replica="test")  # type: ignore[arg-type]
    made.plans = {} if rollout is None else {"m": rollout}
    return made


def test_a_canary_sends_the_steps_share_of_requests_to_the_candidate():
    random.seed(19)
    n = 20_000
    for step, share in ((0, 0.1), (1, 0.5)):
        routed = [controller(plan(step=step)).route("m", {}) for _ in range(n)]
        candidate = routed.count("2")
        assert set(routed) == {"1", "2"}
        # Within the binomial's 99.9% range around the step's share.
        assert stats.binom.ppf(0.0005, n, share) <= candidate <= stats.binom.ppf(0.9995, n, share)


def test_a_sticky_header_keeps_each_caller_on_one_version_as_the_share_grows():
    keys = [f"customer-{i}" for i in range(5000)]
    at = {step: {k: controller(plan(step=step, sticky="x-customer")).route("m", {"x-customer": k}) for k in keys}
          for step in (0, 1)}
    for step in (0, 1):  # the same answer every time for one key
        again = controller(plan(step=step, sticky="x-customer"))
        assert all(again.route("m", {"x-customer": k}) == v for k, v in at[step].items())
    on_candidate = {step: {k for k, v in at[step].items() if v == "2"} for step in (0, 1)}
    assert on_candidate[0] <= on_candidate[1]  # callers on the candidate stay there
    assert stats.binom.ppf(0.0005, 5000, 0.1) <= len(on_candidate[0]) <= stats.binom.ppf(0.9995, 5000, 0.1)
    # The hash is fixed (BLAKE2b), not Python's per-process hash: every replica agrees.
    assert sticky_share("customer-1") == int.from_bytes(hashlib.blake2b(b"customer-1", digest_size=8).digest(), "big") / 2**64


def test_a_shadow_answers_with_the_primary_and_copies_the_steps_share():
    random.seed(7)
    shadow = controller(plan(mode="shadow", step=1))
    assert {shadow.route("m", {}) for _ in range(100)} == {"1"}
    copies = sum(shadow.shadow_target("m", "1") is not None for _ in range(10_000))
    assert stats.binom.ppf(0.0005, 10_000, 0.5) <= copies <= stats.binom.ppf(0.9995, 10_000, 0.5)
    assert shadow.shadow_target("m", "2") is None  # a request the candidate answered is not copied
    assert controller(plan(mode="canary")).shadow_target("m", "1") is None


@pytest.mark.parametrize(("state", "expected"), [("promoted", "2"), ("rolled_back", "1"), ("aborted", "1")])
def test_an_ended_rollout_leaves_the_traffic_with_its_choice(state, expected):
    assert {controller(plan(state=state)).route("m", {}) for _ in range(50)} == {expected}


def test_without_a_plan_or_its_versions_the_default_applies():
    assert controller(None).route("m", {}) is None
    assert controller(plan(), versions=("2",)).route("m", {}) is None  # the primary is not loaded yet
    assert {controller(plan(step=1), versions=("1",)).route("m", {}) for _ in range(50)} == {"1"}  # nor the candidate


def test_a_shadows_answers_are_compared_with_the_primarys_row_by_row():
    made = controller(plan(mode="shadow"))
    classifier = SimpleNamespace(name="m", card=SimpleNamespace(signature=SimpleNamespace(task=Task.BINARY)))
    made.compare(classifier, ModelOutput(predicted=np.array([0, 1, 1, 0])), ModelOutput(predicted=np.array([0, 0, 1, 1])))
    assert made.shadow_rows == {("m", "agree"): 2.0, ("m", "disagree"): 2.0}
    regressor = SimpleNamespace(name="r", card=SimpleNamespace(signature=SimpleNamespace(task=Task.REGRESSION)))
    made.compare(regressor, ModelOutput(predicted=np.array([1.0, 2.0, np.nan])), ModelOutput(predicted=np.array([1.5, 0.0, 3.0])))
    # |1.5 - 1| + |0 - 2|; the NaN row is left out of both the count and the sum.
    assert (made.shadow_rows[("r", "compared")], made.shadow_difference["r"]) == (2.0, 2.5)
