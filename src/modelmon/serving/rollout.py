"""Rollouts in a running server: routing unversioned requests between a model's primary
and candidate versions, shadow copies, and the evaluator that decides each step.

Every replica reads the plans from the store (``store.rollouts``) every
``check_seconds`` and follows them: a restart resumes a rollout where the store has it, and
replicas on one store route alike. Each replica also evaluates the gates on the traffic it
served since it first saw the rollout, and writes a decision (advance a step, promote, roll
back) with its evidence as a compare-and-set on the plan: when two replicas decide at once
one decision is applied, the other finds the plan moved and evaluates it afresh.

- **canary**: a request goes to the candidate with the step's probability, or, with a
  sticky header, when the header value's hash falls in the step's share (one caller, one
  version, on every replica: the hash is stable).
- **shadow**: the primary answers every request; a copy of the step's share of them goes
  to a bounded queue, and one worker, after the first copy arrives, lingers
  ``shadow_linger_seconds`` and then sends everything queued for a candidate as one batch:
  one model call, one observer pass (ids, journal, monitoring) and one comparison for all
  the copies, so a copy costs a small fraction of a request even when nothing is shed. A
  copy is best effort: it is shed (counted) whenever the model is busy, i.e. more than
  ``SHADOW_SPARE_INFLIGHT`` of its requests are in flight (queued or running), when the copy
  is made and again when it would be sent, so the candidate only uses capacity the primary
  leaves idle. A full queue drops the copy (counted); the candidate's failures and timeouts
  count as its errors, one per copy, and never reach callers (a batch that fails is sent
  again a copy at a time, so one bad copy does not fail the others); while a timed-out call
  still runs no other copy is sent, so a hung candidate holds at most one inference thread,
  and it never runs on the event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from modelmon.errors import ModelmonError
from modelmon.monitoring import families
from modelmon.monitoring.metrics import RequestMetrics
from modelmon.serving.batching import ObserverError
from modelmon.serving.rollout_gates import GATES, GateResult, answered_requests, watch_exceedances
from modelmon.serving.runtime import ModelRuntime, Prediction
from modelmon.store import Store, rollouts
from modelmon.store.rollouts import RUNNING, Rollout, RolloutConflict
from modelmon.types import FeatureBatch, ModelOutput

logger = logging.getLogger("modelmon.serving.rollout")
SHADOW_OUTCOMES = ("answered", "failed", "timed_out", "dropped", "shed")
#: A model with more requests than this in flight (the one being answered included) is busy:
#: its shadow copies are shed. 1 = a copy is made only while the primary serves one request at
#: a time, so at saturation (always several in flight) the candidate gets no model calls and
#: costs the callers nothing; in the gaps it gets the copies of lone requests.
SHADOW_SPARE_INFLIGHT = 1
#: The V2 response parameter of a request whose rows a sticky canary split between the two
#: versions: each row's version, comma-separated, in row order ("1,2,1").
ROW_VERSIONS = "model_versions"
#: A shadow copy: the candidate, the request's rows, and the primary's answer to them.
Copy = tuple[ModelRuntime, FeatureBatch, ModelOutput]


class Served(Protocol):
    """What the controller needs of the server: its loaded versions, and loading one."""

    runtimes: dict[str, dict[str, ModelRuntime]]

    async def load_version(self, name: str, version: str) -> tuple[ModelRuntime, bool]: ...


@dataclass(slots=True)
class Evidence:
    """This replica's evidence on one rollout: the gates' counters when it first saw the
    rollout (subtracted from later reads), and the candidate's answered requests when the
    current step began here."""

    baseline: dict[str, tuple[np.ndarray, np.ndarray]]
    step: int
    step_started_at: float
    results: dict[str, GateResult] = field(default_factory=dict)
    step_requests: float = 0.0


def sticky_share(key: str) -> float:
    """A header or feature value's place in [0, 1): the same on every replica and after restarts."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def feature_key(value: Any) -> str | None:
    """The canonical text of a validated feature value that ``sticky_share`` hashes: a
    category as it is; a number without a fractional part as an integer (1, 1.0 and True
    give "1", so a client's JSON spelling does not change a customer's version, and a header
    "1" lands where the feature value 1 does); any other number as Python's shortest
    round-tripping repr ("0.5"). None for a missing value (null or NaN)."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    number = float(value)
    if number != number:
        return None
    if number.is_integer():
        return str(int(number))
    return repr(number)


@dataclass(slots=True)
class StickyCanary:
    """A canary step that sends each row to the version its sticky feature's value hashes to
    (``RolloutController.sticky``): one customer, one version, whatever the request holds."""

    primary: ModelRuntime
    candidate: ModelRuntime
    feature: str
    share: float

    def places(self, batch: FeatureBatch) -> np.ndarray:
        """Each row's place in [0, 1): its feature value's hash; a random draw for a missing
        value (as a request without the sticky header gets)."""
        signature = self.primary.card.signature
        spec = next(f for f in signature.features if f.name == self.feature)
        if spec.is_categorical:
            column = batch.categorical[:, signature.categorical_features.index(spec)]
        else:
            column = batch.numeric[:, signature.numeric_features.index(spec)]
        keys = [feature_key(v) for v in column.tolist()]
        return np.array([random.random() if k is None else sticky_share(k) for k in keys])

    async def predict(self, batch: FeatureBatch, counted: list[RequestMetrics]) -> tuple[ModelRuntime, Prediction, list[str] | None]:
        """The request answered row by row by each row's version. When every row falls on one
        side, that version answers it whole, exactly as if the request had been routed to it
        (and the request is counted on it); otherwise each version answers its rows in one
        model call each, both at once, and the answers are merged back in row order, with
        the version of each row. A split request is counted on both versions (each answered
        it in part), a failed one on the version(s) that failed. ``counted``: filled with the
        metrics the request is to be counted on, when not the primary's alone."""
        to_candidate = self.places(batch) < self.share
        if not to_candidate.any():
            return self.primary, await self.primary.predict(batch), None
        if to_candidate.all():
            counted[:] = [self.candidate.metrics]
            return self.candidate, await self.candidate.predict(batch), None
        counted[:] = [self.primary.metrics, self.candidate.metrics]
        sides = [(self.primary, np.flatnonzero(~to_candidate)), (self.candidate, np.flatnonzero(to_candidate))]
        calls = [asyncio.ensure_future(r.predict(FeatureBatch(batch.numeric[rows], batch.categorical[rows])))
                 for r, rows in sides]
        await asyncio.wait(calls)
        failed = [(r, call.exception()) for (r, _), call in zip(sides, calls, strict=True)]
        failed = [(r, error) for r, error in failed if error is not None]
        if failed:
            counted[:] = [r.metrics for r, _ in failed]
            error = failed[0][1]
            assert error is not None
            raise error
        answers = [call.result() for call in calls]
        return self.primary, merge(batch.n_rows, [rows for _, rows in sides], answers), [
            self.candidate.version if c else self.primary.version for c in to_candidate.tolist()
        ]


def merge(n_rows: int, rows: list[np.ndarray], parts: list[Prediction]) -> Prediction:
    """Predictions of disjoint row sets put back in the request's row order."""
    ids: list[str] = [""] * n_rows
    predicted = np.empty(n_rows, dtype=np.result_type(*(p.output.predicted for p in parts)))
    probabilities = None
    if parts[0].output.probabilities is not None:
        probabilities = np.empty((n_rows, parts[0].output.probabilities.shape[1]))
    for where, part in zip(rows, parts, strict=True):
        for i, pid in zip(where.tolist(), part.ids, strict=True):
            ids[i] = pid
        predicted[where] = part.output.predicted
        if probabilities is not None:
            probabilities[where] = part.output.probabilities
    return Prediction(ids=ids, output=ModelOutput(predicted, probabilities))


class RolloutController:
    def __init__(
        self,
        served: Served,
        store: Store,
        metrics_registry: CollectorRegistry,
        *,
        replica: str,
        check_seconds: float = 1.0,
        shadow_queue: int = 256,
        shadow_timeout_seconds: float = 10.0,
        shadow_linger_seconds: float = 0.02,
    ) -> None:
        self.served = served
        self.store = store
        self.replica = replica
        self.check_seconds = check_seconds
        self.shadow_timeout = shadow_timeout_seconds
        self.shadow_linger = shadow_linger_seconds
        #: Each served model's newest rollout: what its unversioned requests follow.
        self.plans: dict[str, Rollout] = {}
        self.evidence: dict[int, Evidence] = {}
        self.queue: asyncio.Queue[Copy] = asyncio.Queue(shadow_queue)
        self._tasks: list[asyncio.Task[None]] = []
        #: Counters, by (model, action) and (model, outcome), and commands by (action, code):
        #: written out by ``RolloutCollector``, so a server that never saw a rollout exports
        #: nothing of them.
        self.decisions: dict[tuple[str, str], float] = {}
        self.shadow: dict[tuple[str, str], float] = {}
        #: The shadow's answers against the primary's, row by row: (model, agree|disagree)
        #: rows of a classifier, (model, compared) rows of a regressor and the sum of their
        #: absolute differences by model.
        self.shadow_rows: dict[tuple[str, str], float] = {}
        self.shadow_difference: dict[str, float] = {}
        self.commands: dict[tuple[str, str], float] = {}
        metrics_registry.register(RolloutCollector(self))

    @staticmethod
    def count(counter: dict[tuple[str, str], float], first: str, second: str) -> None:
        counter[first, second] = counter.get((first, second), 0.0) + 1.0

    # -- the request path ---------------------------------------------------------------

    def route(self, name: str, headers: Mapping[str, str]) -> str | None:
        """The version that answers an unversioned request of ``name``; None when no
        rollout concerns it (or its versions are not loaded yet): the default applies."""
        plan = self.plans.get(name)
        if plan is None:
            return None
        loaded = self.served.runtimes.get(name, {})
        primary, candidate = str(plan.primary_version), str(plan.candidate_version)
        if plan.state != RUNNING:
            chosen = str(plan.serving_version)
            return chosen if chosen in loaded else None
        if primary not in loaded:
            return None
        if plan.mode == "shadow" or candidate not in loaded:
            return primary
        if plan.sticky_feature:
            # Decided row by row once the body is decoded (``sticky``); the primary validates it.
            return primary
        key = headers.get(plan.sticky_header) if plan.sticky_header else None
        place = sticky_share(key) if key is not None else random.random()
        return candidate if place < plan.share else primary

    def sticky(self, runtime: ModelRuntime, requested: str | None) -> StickyCanary | None:
        """The canary that decides each row of this request by a feature's value: an
        unversioned request (``requested``: the version asked for, None or "latest") that
        ``route`` gave to the primary of a running canary with a sticky feature, while the
        candidate is loaded. None otherwise: ``runtime`` answers the request as it is."""
        plan = self.plans.get(runtime.name)
        if plan is None or plan.sticky_feature is None or (requested is not None and requested != "latest"):
            return None
        if plan.state != RUNNING or plan.mode != "canary" or runtime.version != str(plan.primary_version):
            return None
        candidate = self.served.runtimes.get(runtime.name, {}).get(str(plan.candidate_version))
        if candidate is None:
            return None
        return StickyCanary(runtime, candidate, plan.sticky_feature, plan.share)

    def shadow_target(self, name: str, version: str) -> ModelRuntime | None:
        """The candidate a copy of this request should go to, if any (shadow mode, the
        primary answering, the step's share drawn)."""
        plan = self.plans.get(name)
        if plan is None or plan.mode != "shadow" or plan.state != RUNNING or version != str(plan.primary_version):
            return None
        if random.random() >= plan.share:
            return None
        return self.served.runtimes.get(name, {}).get(str(plan.candidate_version))

    @staticmethod
    def busy(runtime: ModelRuntime) -> bool:
        """Whether the model is serving more than ``SHADOW_SPARE_INFLIGHT`` requests now (the
        in-flight gauge is the model's, counting every version's requests, not the shadow's
        own calls, which do not pass through the endpoints)."""
        return runtime.metrics.inflight.get() > SHADOW_SPARE_INFLIGHT

    def mirror(self, candidate: ModelRuntime, batch: FeatureBatch, answered: ModelOutput) -> None:
        if self.busy(candidate):
            self.count(self.shadow, candidate.name, "shed")
            return
        try:
            self.queue.put_nowait((candidate, batch, answered))
        except asyncio.QueueFull:
            self.count(self.shadow, candidate.name, "dropped")

    async def _shadow_worker(self) -> None:
        """Send the queued copies to their candidates (``_send_copies``)."""
        while True:
            try:
                await self._send_copies()
            except Exception:  # a bug of ours must not end the shadow for good
                logger.exception("sending shadow copies failed")

    async def _send_copies(self) -> None:
        """Once a copy is queued, linger, then send each candidate everything queued for it
        as one batch (of at most its batcher's ``max_batch_size`` rows, whole copies; a
        larger copy goes alone). Measured in-process (docs/rollout.md, "What a shadow
        costs"): a call costs about 235 µs of CPU (thread handoff, observer, model) and a
        copy 3-4 µs more, so a copy sent alone, as every copy was at one request at a time
        before the linger, cost more than the request it copied (130-200 µs), and one of 60
        copies sent together about 6 µs. The linger bounds the calls to 1 / linger a second."""
        while True:
            queued = [await self.queue.get()]
            if self.shadow_linger > 0:
                await asyncio.sleep(self.shadow_linger)
            while not self.queue.empty():
                queued.append(self.queue.get_nowait())
            # The model may have become busy while the copies waited: shed them then too.
            by_candidate: dict[int, list[Copy]] = {}
            for copy in queued:
                if self.busy(copy[0]):
                    self.count(self.shadow, copy[0].name, "shed")
                else:
                    by_candidate.setdefault(id(copy[0]), []).append(copy)
            for copies in by_candidate.values():
                limit, chunk, rows = copies[0][0].batcher.max_batch_size, [copies[0]], copies[0][1].n_rows
                for copy in copies[1:]:
                    if rows + copy[1].n_rows > limit:
                        await self._send(chunk)
                        chunk, rows = [], 0
                    chunk.append(copy)
                    rows += copy[1].n_rows
                await self._send(chunk)

    async def _send(self, copies: list[Copy]) -> None:
        """One model call on the copies' rows (all of one candidate), each copy counted as a
        request of the candidate with the call's outcome and duration, and the answers
        compared with the primary's row by row. A failed call of several copies is sent
        again a copy at a time: a copy is counted failed only when it fails alone."""
        candidate = copies[0][0]
        candidate.batcher.inline_below = 0.0  # a shadow never runs on the event loop
        started = time.perf_counter()
        calls = [asyncio.ensure_future(candidate.predict(FeatureBatch.concat([batch for _, batch, _ in copies])))]
        done, _ = await asyncio.wait(calls, timeout=self.shadow_timeout)
        if not done:
            await asyncio.wait(calls)  # no other copy while it runs
        call = calls[0]
        seconds = time.perf_counter() - started
        error = call.exception()
        # Only the model's own failure is worth a copy at a time: after an ObserverError the
        # model had answered, and its rows may already be counted.
        if done and error is not None and len(copies) > 1 and not isinstance(error, ObserverError):
            for copy in copies:
                await self._send([copy])
            return
        code, outcome = 200, "answered"
        if not done:
            code, outcome = 500, "timed_out"
        elif error is not None:
            code, outcome = getattr(error, "status_code", 500), "failed"
        for _ in copies:
            if outcome == "timed_out":
                candidate.metrics.count_error("inference_error")
            elif outcome == "failed":
                candidate.metrics.count_error(getattr(error, "reason", "internal_error"))
            candidate.metrics.observe_request("infer", code, seconds)
        self.shadow[candidate.name, outcome] = self.shadow.get((candidate.name, outcome), 0.0) + len(copies)
        if outcome == "answered":
            self.compare(candidate, ModelOutput.concat([answered for _, _, answered in copies]), call.result().output)

    def compare(self, candidate: ModelRuntime, primary: ModelOutput, shadow: ModelOutput) -> None:
        """Count the shadow's answers against the primary's on the same rows: agreement of
        a classifier's labels (the two share their classes, checked at start), the absolute
        differences of a regressor's values."""
        name = candidate.name
        if candidate.card.signature.task.is_classification:
            agree = int(np.count_nonzero(primary.predicted == shadow.predicted))
            self.shadow_rows[name, "agree"] = self.shadow_rows.get((name, "agree"), 0.0) + agree
            self.shadow_rows[name, "disagree"] = self.shadow_rows.get((name, "disagree"), 0.0) + len(primary.predicted) - agree
            return
        difference = np.abs(shadow.predicted.astype(float) - primary.predicted.astype(float))
        finite = np.isfinite(difference)
        self.shadow_rows[name, "compared"] = self.shadow_rows.get((name, "compared"), 0.0) + int(finite.sum())
        self.shadow_difference[name] = self.shadow_difference.get(name, 0.0) + float(difference[finite].sum())

    # -- the evaluator ------------------------------------------------------------------

    async def start(self) -> None:
        """Read the plans (loading the versions they need) before the server is ready,
        then keep checking them."""
        await self.check()
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._shadow_worker())]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.check_seconds)
            try:
                await self.check()
            except Exception:  # the store away, say: keep serving the plans known, retry
                logger.exception("checking the rollouts failed; retrying in %.1f s", self.check_seconds)

    async def check(self) -> None:
        loop = asyncio.get_running_loop()
        plans = await loop.run_in_executor(None, rollouts.latest_of_every_model, self.store)
        await self.follow({m: p for m, p in plans.items() if m in self.served.runtimes})

    async def follow(self, plans: dict[str, Rollout]) -> None:
        """Take ``plans`` as the plans in force, load their versions, and evaluate the
        running ones."""
        self.plans = plans
        for plan in list(plans.values()):
            needed = [plan.primary_version, plan.candidate_version] if plan.state == RUNNING else [plan.serving_version]
            for version in needed:
                if str(version) not in self.served.runtimes.get(plan.model, {}):
                    try:
                        await self.served.load_version(plan.model, str(version))
                    except ModelmonError as exc:
                        logger.error("rollout of %s: cannot load version %s: %s", plan.model, version, exc.message)
            if plan.state == RUNNING and plan.mode == "shadow":
                self.start_shadow_counters(plan)
            if plan.state == RUNNING:
                self.watch(plan)
                await self.evaluate(plan)

    def watch(self, plan: Rollout) -> None:
        """Count what the plan's gates need beyond the monitors' own counters."""
        loaded = self.served.runtimes.get(plan.model, {})
        candidate, primary = loaded.get(str(plan.candidate_version)), loaded.get(str(plan.primary_version))
        if "estimated_error" in plan.gates and candidate is not None and primary is not None:
            watch_exceedances(primary, candidate)

    def start_shadow_counters(self, plan: Rollout) -> None:
        """Export the shadow comparison's counters at 0 from the moment this replica sees
        a shadow rollout (as the decision counters are), so a rate over them has a start
        even when the first copies are compared before the first scrape: agree and
        disagree rows for a classifier, compared rows and their absolute difference for a
        regressor."""
        candidate = self.served.runtimes.get(plan.model, {}).get(str(plan.candidate_version))
        if candidate is None:
            return
        outcomes: tuple[str, ...]
        if candidate.card.signature.task.is_classification:
            outcomes = ("agree", "disagree")
        else:
            outcomes = ("compared",)
            self.shadow_difference.setdefault(plan.model, 0.0)
        for outcome in outcomes:
            self.shadow_rows.setdefault((plan.model, outcome), 0.0)

    async def evaluate(self, plan: Rollout) -> None:
        loaded = self.served.runtimes.get(plan.model, {})
        candidate, primary = loaded.get(str(plan.candidate_version)), loaded.get(str(plan.primary_version))
        if candidate is None or primary is None:
            return
        candidate.monitor.flush()
        primary.monitor.flush()
        evidence = self.evidence.get(plan.id)
        if evidence is not None and any(
            (GATES[g].read(candidate) < base_c).any() or (GATES[g].read(primary) < base_p).any()
            for g, (base_c, base_p) in evidence.baseline.items()
        ):
            # A version was unloaded and loaded again here: its counters began again at
            # zero, so this replica's evidence begins again too.
            evidence = None
        if evidence is None:
            baseline = {g: (GATES[g].read(candidate), GATES[g].read(primary)) for g in plan.gates}
            evidence = self.evidence[plan.id] = Evidence(baseline, plan.step, answered_requests(candidate))
        if evidence.step != plan.step:
            evidence.step, evidence.step_started_at = plan.step, answered_requests(candidate)
        alpha = plan.alpha / len(plan.gates)  # the rollout's false-alarm rate, split among its gates
        evidence.results = {
            g: GATES[g].evaluate(candidate, primary, since, alpha, plan.margins[g]) for g, since in evidence.baseline.items()
        }
        evidence.step_requests = answered_requests(candidate) - evidence.step_started_at
        verdicts = [r.verdict for r in evidence.results.values()]
        if "fail" in verdicts:
            action = "roll_back"
        elif all(v == "pass" for v in verdicts) and evidence.step_requests >= plan.min_requests:
            action = "advance"
        else:
            return
        record = {
            "replica": self.replica, "alpha_per_gate": alpha, "step_requests": evidence.step_requests,
            "failed": [g for g, r in evidence.results.items() if r.verdict == "fail"],
            "gates": {g: r.as_dict() for g, r in evidence.results.items()},
        }
        try:
            moved = await asyncio.get_running_loop().run_in_executor(
                None, lambda: rollouts.apply(self.store, plan, action, decided_by=self.replica, evidence=record)
            )
        except RolloutConflict:
            return  # another replica or an operator moved the plan: the next check reads it
        self.count(self.decisions, plan.model, action)
        logger.info("rollout of %s: %s (step %d -> %d, %s)", plan.model, action, plan.step, moved.step, moved.state)
        self.plans[plan.model] = moved

    def local_evidence(self, model: str) -> dict[str, Any] | None:
        """This replica's gate statistics on the model's running rollout."""
        plan = self.plans.get(model)
        evidence = self.evidence.get(plan.id) if plan is not None else None
        if evidence is None:
            return None
        return {"replica": self.replica, "step_requests": evidence.step_requests,
                "gates": {g: r.as_dict() for g, r in evidence.results.items()}}


class RolloutCollector:
    """The rollouts' gauges at scrape time, from the plans and this replica's evidence."""

    def __init__(self, controller: RolloutController) -> None:
        self.controller = controller

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Any:
        f, controller = families, self.controller
        if not controller.plans and not controller.commands:
            return
        gauges = {family.name: GaugeMetricFamily(family.name, family.help, labels=list(family.labels))
                  for family in (f.ROLLOUT_STATE, f.ROLLOUT_SHARE, f.ROLLOUT_GATE_BOUND, f.ROLLOUT_GATE_MARGIN, f.ROLLOUT_GATE_COUNT)}
        counters = {family.name: CounterMetricFamily(family.name, family.help, labels=list(family.labels))
                    for family in (f.ROLLOUT_DECISIONS, f.ROLLOUT_SHADOW, f.ROLLOUT_SHADOW_ROWS,
                                   f.ROLLOUT_SHADOW_DIFFERENCE, f.ROLLOUT_COMMANDS)}
        for model, plan in sorted(controller.plans.items()):
            for value in rollouts.STATES:
                gauges[f.ROLLOUT_STATE.name].add_metric(
                    [model, str(plan.primary_version), str(plan.candidate_version), plan.mode, value],
                    1.0 if plan.state == value else 0.0,
                )
            gauges[f.ROLLOUT_SHARE.name].add_metric([model], plan.share)
            for action in ("advance", "roll_back"):
                counters[f.ROLLOUT_DECISIONS.name].add_metric([model, action], controller.decisions.get((model, action), 0.0))
            for outcome in SHADOW_OUTCOMES:
                counters[f.ROLLOUT_SHADOW.name].add_metric([model, outcome], controller.shadow.get((model, outcome), 0.0))
        for (model, outcome), rows in sorted(controller.shadow_rows.items()):
            counters[f.ROLLOUT_SHADOW_ROWS.name].add_metric([model, outcome], rows)
        for model, total in sorted(controller.shadow_difference.items()):
            counters[f.ROLLOUT_SHADOW_DIFFERENCE.name].add_metric([model], total)
        for model, plan in sorted(controller.plans.items()):
            evidence = controller.evidence.get(plan.id)
            # Kept after the rollout ended: the bounds this replica last computed, the ones
            # its decision (or the one it followed) was made on.
            if evidence is None:
                continue
            for gate, result in evidence.results.items():
                gauges[f.ROLLOUT_GATE_BOUND.name].add_metric([model, gate, "low"], result.low)
                gauges[f.ROLLOUT_GATE_BOUND.name].add_metric([model, gate, "high"], result.high)
                gauges[f.ROLLOUT_GATE_MARGIN.name].add_metric([model, gate], result.margin)
                gauges[f.ROLLOUT_GATE_COUNT.name].add_metric([model, gate, "candidate"], result.candidate[1])
                gauges[f.ROLLOUT_GATE_COUNT.name].add_metric([model, gate, "primary"], result.primary[1])
        for (action, code), total in sorted(controller.commands.items()):
            counters[f.ROLLOUT_COMMANDS.name].add_metric([action, code], total)
        yield from gauges.values()
        yield from counters.values()
