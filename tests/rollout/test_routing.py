"""Routing of a model's unversioned requests by its rollout plan (serving/rollout.py),
without a server: weights, sticky headers, shadow copies (and their shedding), ended
rollouts, and the rollout metrics a replica exports."""

from __future__ import annotations

import asyncio
import hashlib
import random
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from scipy import stats

from modelmon.monitoring.array_metrics import GaugeChild
from modelmon.monitoring.tasks import RegressionCounts
from modelmon.serving.rollout import Evidence, RolloutCollector, RolloutController, sticky_share
from modelmon.serving.rollout_gates import GATES, GateResult, watch_exceedances
from modelmon.store.rollouts import Rollout
from modelmon.types import FeatureBatch, ModelOutput, Task


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


def _runtime(name: str, task: Task, inflight: list[float]) -> Any:
    """A served version as the shadow sees it: its name, task, and the model's in-flight gauge."""
    calls: list[Any] = []

    async def predict(batch: Any) -> Any:
        calls.append(batch)
        return SimpleNamespace(output=ModelOutput(predicted=np.array([0])))

    return SimpleNamespace(name=name, calls=calls, predict=predict,
                           batcher=SimpleNamespace(inline_below=1.0, max_batch_size=256),
                           metrics=SimpleNamespace(inflight=GaugeChild(inflight, 0), observe_request=lambda *a: None),
                           card=SimpleNamespace(signature=SimpleNamespace(task=task)))


def test_a_shadow_copy_is_shed_while_the_model_serves_more_than_one_request():
    made = controller(plan(mode="shadow"))
    inflight = [1.0]  # the request being answered: the model is otherwise idle
    candidate = _runtime("m", Task.BINARY, inflight)
    answered = ModelOutput(predicted=np.array([0]))
    rows = FeatureBatch(np.zeros((1, 1)), np.empty((1, 0), dtype=object))
    made.mirror(candidate, rows, answered)
    assert made.queue.qsize() == 1 and made.shadow == {}
    inflight[0] = 2.0  # another request of the model in flight: shed, not queued
    made.mirror(candidate, rows, answered)
    assert made.queue.qsize() == 1 and made.shadow == {("m", "shed"): 1.0}

    async def send_while_busy() -> None:
        # The model became busy while the queued copy waited: the worker sheds it too.
        worker = asyncio.create_task(made._send_copies())
        async with asyncio.timeout(10):  # the worker lingers, then sheds
            while made.shadow.get(("m", "shed")) != 2.0:
                await asyncio.sleep(0.001)
        worker.cancel()

    asyncio.run(send_while_busy())
    assert made.shadow == {("m", "shed"): 2.0} and candidate.calls == []

    async def send_when_idle() -> None:
        inflight[0] = 0.0
        made.mirror(candidate, rows, answered)
        worker = asyncio.create_task(made._send_copies())
        async with asyncio.timeout(10):
            while ("m", "answered") not in made.shadow:
                await asyncio.sleep(0.001)
        worker.cancel()

    asyncio.run(send_when_idle())
    assert candidate.calls == [rows] and made.shadow == {("m", "shed"): 2.0, ("m", "answered"): 1.0}
    assert made.shadow_rows == {("m", "agree"): 1.0, ("m", "disagree"): 0.0}


def test_a_shadows_comparison_counters_start_at_zero_and_gate_bounds_outlive_the_rollout():
    made = controller(plan(mode="shadow"))
    registry = CollectorRegistry()
    registry.register(RolloutCollector(made))
    made.served.runtimes["m"]["2"] = _runtime("m", Task.BINARY, [0.0])
    made.start_shadow_counters(made.plans["m"])
    for outcome in ("agree", "disagree"):
        assert registry.get_sample_value("modelmon_rollout_shadow_rows_total", {"model": "m", "outcome": outcome}) == 0.0
    assert registry.get_sample_value("modelmon_rollout_shadow_absolute_difference_total", {"model": "m"}) is None
    regressor = controller(plan(mode="shadow"))
    regressor.served.runtimes["m"]["2"] = _runtime("m", Task.REGRESSION, [0.0])
    regressor.start_shadow_counters(regressor.plans["m"])
    assert (regressor.shadow_rows, regressor.shadow_difference) == ({("m", "compared"): 0.0}, {"m": 0.0})
    # A rolled-back rollout still shows the bounds its decision was made on.
    made.plans["m"] = plan(mode="shadow", state="rolled_back")
    result = GateResult("errors", "fail", 0.2, 0.6, 0.01, (9.0, 20.0), (0.0, 20.0), {})
    made.evidence[1] = Evidence({}, 0, 0.0, results={"errors": result})
    bound = {"model": "m", "gate": "errors"}
    assert registry.get_sample_value("modelmon_rollout_gate_bound", {**bound, "bound": "low"}) == 0.2
    assert registry.get_sample_value("modelmon_rollout_gate_bound", {**bound, "bound": "high"}) == 0.6


def test_the_estimated_error_gate_counts_rows_above_the_primarys_validation_mae():
    class Estimate:
        reference = (2.0, 5.0)  # the primary's validation MAE and mean squared error

        def expected_errors(self, features: Any, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return predicted.copy(), predicted**2  # each row's expected |error|: its prediction here

    def version(task: Any) -> Any:
        return SimpleNamespace(monitor=SimpleNamespace(task=task))

    primary = version(RegressionCounts.__new__(RegressionCounts))
    candidate = version(RegressionCounts.__new__(RegressionCounts))
    primary.monitor.task.estimator, candidate.monitor.task.estimator = Estimate(), Estimate()
    watch_exceedances(primary, candidate)
    watch_exceedances(primary, candidate)  # seen again: the same counters go on
    # 3.0 and 2.5 exceed 2.0; 2.0 itself does not; the NaN row is not estimated (the monitor skips it too).
    candidate.monitor.task.estimator.expected_errors(None, np.array([3.0, 2.0, 2.5, np.nan]))
    primary.monitor.task.estimator.expected_errors(None, np.array([1.0, 2.0]))
    assert GATES["estimated_error"].read(candidate).tolist() == [2.0, 3.0]
    assert GATES["estimated_error"].read(primary).tolist() == [0.0, 2.0]


def test_a_sticky_features_value_is_hashed_in_one_canonical_spelling():
    from modelmon.serving.rollout import feature_key

    assert feature_key(1) == feature_key(1.0) == feature_key(True) == feature_key(np.float64(1.0)) == "1"
    assert feature_key(-0.0) == "0" and feature_key(0.5) == "0.5" and feature_key(1e20) == "100000000000000000000"
    assert feature_key("gold") == "gold"
    assert feature_key(None) is None and feature_key(float("nan")) is None  # missing: a random draw, as no header
    # An unversioned request of a canary sticky by a feature goes to the primary, which
    # validates it; its rows are routed once decoded (RolloutController.sticky).
    sticky = controller(plan(step=1))
    sticky.plans["m"] = Rollout(**{**{f: getattr(plan(step=1), f) for f in Rollout.__dataclass_fields__},
                                   "sticky_feature": "customer"})
    assert {sticky.route("m", {}) for _ in range(50)} == {"1"}
