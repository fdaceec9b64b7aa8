"""Shadow copies sent as one batch (serving/rollout.py, ``_send_copies``): real served
versions (registered models, their batchers, metrics and monitors), driven by the rollout
controller's shadow worker without an HTTP server.

A burst of copies that arrive while the worker lingers becomes one model call of the
candidate, with every copy counted as a request of it and every row compared with the
primary's answer; a batch that fails is sent again a copy at a time, so each copy is
counted failed only when it fails itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from prometheus_client import CollectorRegistry
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelmon.cli import app
from modelmon.registry import Registry, register_model
from modelmon.serving.app import ModelServer
from modelmon.serving.prediction_log import PredictionLogSettings
from modelmon.serving.rollout import RolloutController
from modelmon.serving.rollout_gates import answered_requests
from modelmon.serving.runtime import ModelRuntime
from modelmon.serving.settings import ServingSettings
from modelmon.types import FeatureBatch, ModelOutput
from tests.rollout.models import FaultyClassifier

COPIES = 40


@pytest.fixture(scope="module")
def served(
    tmp_path_factory, cancer_frame: pd.DataFrame, cancer_model: LogisticRegression
) -> Iterator[ModelServer]:
    """``bc``: the cancer model; ``faulty``: the same, failing on a call with a row whose
    first feature is above its 70% quantile."""
    root: Path = tmp_path_factory.mktemp("shadow-batch-registry")
    X, y = cancer_frame.drop(columns="target"), cancer_frame["target"]
    faulty = FaultyClassifier(cancer_model, limit=float(X.iloc[:, 0].quantile(0.7))).fit(X, y)
    safe = cancer_frame[X.iloc[:, 0] <= faulty.limit]  # registration runs the model on them
    for name, model, validation in (("bc", cancer_model, cancer_frame), ("faulty", faulty, safe)):
        register_model(
            model,
            name=name,
            reference=cancer_frame,
            target="target",
            validation=validation,
            registry=root,
            convert_to_onnx=False,
        )
    server = ModelServer(
        Registry(root), [], ServingSettings(prediction_log=PredictionLogSettings(enabled=False))
    )
    yield server
    server.executor.shutdown()


@pytest.fixture
def build(served: ModelServer) -> Iterator[Callable[[str], ModelRuntime]]:
    """Version 1 of a registered model, loaded afresh (its counters at 0) for one test."""
    built: list[ModelRuntime] = []

    def make(name: str) -> ModelRuntime:
        built.append(served.build_runtime(name, "1"))
        return built[-1]

    yield make
    for runtime in built:
        served.metrics.unbind(runtime.name, runtime.version)


def copies_of(
    frame: pd.DataFrame, model: LogisticRegression, seed: int
) -> list[tuple[FeatureBatch, ModelOutput]]:
    """COPIES requests of 1 to 3 random rows, each with the primary's answer (the model's
    own labels, from scikit-learn: the candidate answers through the registry's runtime)."""
    rng = np.random.default_rng(seed)
    X = frame.drop(columns="target")
    out = []
    for _ in range(COPIES):
        rows = X.iloc[rng.integers(0, len(X), rng.integers(1, 4))]
        batch = FeatureBatch(
            rows.to_numpy(dtype=np.float64), np.empty((len(rows), 0), dtype=object)
        )
        out.append((batch, ModelOutput(predicted=model.predict(rows).astype(np.int64))))
    return out


def shadow(
    candidate: ModelRuntime, copies: list[tuple[FeatureBatch, ModelOutput]]
) -> RolloutController:
    """The copies mirrored to ``candidate``: the first alone, the others while the worker
    lingers on it (0.2 s, far longer than mirroring 40 copies takes); returns the
    controller once every copy has an outcome."""
    made = RolloutController(
        SimpleServed(),
        None,
        CollectorRegistry(),
        replica="test",  # type: ignore[arg-type]
        shadow_linger_seconds=0.2,
    )

    async def run() -> None:
        candidate.batcher.start()
        worker = asyncio.create_task(made._send_copies())
        made.mirror(candidate, *copies[0])
        async with asyncio.timeout(30):
            while not made.queue.empty():  # the worker took the first copy: it lingers now
                await asyncio.sleep(0)
            for batch, answer in copies[1:]:
                made.mirror(candidate, batch, answer)
            while sum(made.shadow.values()) < len(copies):
                await asyncio.sleep(0.005)
        worker.cancel()
        await candidate.batcher.stop()

    asyncio.run(run())
    return made


class SimpleServed:
    def __init__(self) -> None:
        self.runtimes: dict[str, dict[str, ModelRuntime]] = {}

    async def load_version(self, name: str, version: str) -> tuple[ModelRuntime, bool]:
        raise AssertionError("not needed here")


def model_calls(runtime: ModelRuntime) -> tuple[float, float]:
    """The version's successful model calls and their rows (its batch-size histogram)."""
    runtime.monitor.flush()
    return float(runtime.metrics.batch_size.bucket_counts.sum()), runtime.metrics.batch_size.sum


def test_a_burst_of_copies_is_one_model_call_with_every_row_compared_and_every_copy_counted(
    build, cancer_frame, cancer_model
):
    candidate = build("bc")
    copies = copies_of(cancer_frame, cancer_model, seed=1)
    flipped = (3, 17)  # the primary "answered" these copies' first rows otherwise
    for i in flipped:
        copies[i][1].predicted[0] = 1 - copies[i][1].predicted[0]
    rows = sum(batch.n_rows for batch, _ in copies)

    made = shadow(candidate, copies)
    assert made.shadow == {("bc", "answered"): COPIES}
    assert model_calls(candidate) == (1.0, float(rows))  # one call, all the rows
    assert answered_requests(candidate) == COPIES  # the gates' evidence: copies, not calls
    assert made.shadow_rows == {
        ("bc", "agree"): rows - len(flipped),
        ("bc", "disagree"): len(flipped),
    }


def test_a_failing_batch_counts_each_copy_by_its_own_outcome(build, cancer_frame, cancer_model):
    candidate = build("faulty")
    limit = float(cancer_frame.drop(columns="target").iloc[:, 0].quantile(0.7))  # the fixture's
    copies = copies_of(cancer_frame, cancer_model, seed=2)
    bad = [bool((batch.numeric[:, 0] > limit).any()) for batch, _ in copies]
    good_rows = sum(batch.n_rows for (batch, _), b in zip(copies, bad, strict=True) if not b)
    assert 0 < sum(bad) < COPIES

    made = shadow(candidate, copies)
    assert made.shadow == {
        ("faulty", "failed"): sum(bad),
        ("faulty", "answered"): COPIES - sum(bad),
    }
    assert candidate.metrics.errors["inference_error"].get() == sum(bad)
    assert answered_requests(candidate) == COPIES
    # The batch failed; then each copy was sent alone: the good ones answered one call each.
    assert model_calls(candidate) == (float(COPIES - sum(bad)), float(good_rows))
    assert made.shadow_rows == {("faulty", "agree"): good_rows, ("faulty", "disagree"): 0.0}


def test_a_candidate_failing_every_copy_counts_every_copy_failed(build, cancer_frame, cancer_model):
    candidate = build("faulty")
    limit = float(cancer_frame.drop(columns="target").iloc[:, 0].quantile(0.7))
    X = cancer_frame.drop(columns="target")
    high = X[X.iloc[:, 0] > limit]
    copies = [
        (
            FeatureBatch(high.iloc[[i]].to_numpy(dtype=np.float64), np.empty((1, 0), dtype=object)),
            ModelOutput(predicted=cancer_model.predict(high.iloc[[i]]).astype(np.int64)),
        )
        for i in range(COPIES)
    ]

    made = shadow(candidate, copies)
    assert made.shadow == {("faulty", "failed"): COPIES}
    assert candidate.metrics.errors["inference_error"].get() == COPIES
    assert answered_requests(candidate) == COPIES
    assert model_calls(candidate) == (0.0, 0.0)
    assert made.shadow_rows == {}


@pytest.mark.parametrize("value", ["-1", "20000"])
def test_a_bad_linger_is_refused_naming_the_option(served, value):
    result = CliRunner().invoke(
        app, ["serve", "--registry", str(served.registry.root), "--shadow-linger-ms", value]
    )
    assert result.exit_code == 2
    assert "--shadow-linger-ms: Input should be" in " ".join(result.output.split()), result.output


def test_a_batch_whose_recording_fails_is_not_sent_again_copy_by_copy(build, cancer_frame, cancer_model):
    """The candidate answers, then modelmon's own bookkeeping (the observer) raises: the
    model did not fail, so the copies are not sent again one at a time (which would call the
    model again and could count rows twice); each is counted failed as modelmon's error."""
    candidate = build("bc")
    calls: list[int] = []
    predict = candidate.batcher.predict

    def counted_predict(batch: FeatureBatch) -> ModelOutput:
        calls.append(batch.n_rows)
        return predict(batch)

    def failing_observe(*args: object) -> None:
        raise KeyError("observer bug")

    candidate.batcher.predict = counted_predict
    candidate.monitor.observe = failing_observe  # type: ignore[method-assign]
    copies = copies_of(cancer_frame, cancer_model, seed=3)

    made = shadow(candidate, copies)
    assert made.shadow == {("bc", "failed"): COPIES}
    assert candidate.metrics.errors["internal_error"].get() == COPIES
    assert candidate.metrics.errors["inference_error"].get() == 0
    # Every row in one call (or two, if the first copy went alone before the linger), each
    # row once: no call a copy at a time (that would be 40 more calls).
    assert sum(calls) == sum(batch.n_rows for batch, _ in copies) and len(calls) <= 2, calls


def test_a_call_whose_recording_fails_is_modelmons_internal_error(build, cancer_frame):
    """What a caller of the runtime gets when the observer raises after the model answered:
    the batcher's ObserverError itself (a 500 counted as internal_error by the HTTP and gRPC
    layers, its message free of the bug's details), not the model's InferenceError."""
    from modelmon.errors import InferenceError
    from modelmon.serving.batching import ObserverError

    runtime = build("bc")

    def failing_observe(*args: object) -> None:
        raise KeyError("secret detail")

    runtime.monitor.observe = failing_observe  # type: ignore[method-assign]
    X = cancer_frame.drop(columns="target")
    batch = FeatureBatch(X.iloc[:2].to_numpy(dtype=np.float64), np.empty((2, 0), dtype=object))

    async def call() -> BaseException:
        runtime.batcher.start()
        try:
            await runtime.predict(batch)
        except Exception as exc:  # the test inspects it
            return exc
        finally:
            await runtime.batcher.stop()
        raise AssertionError("the call did not fail")

    error = asyncio.run(call())
    assert isinstance(error, ObserverError) and not isinstance(error, InferenceError)
    assert (error.status_code, error.reason) == (500, "internal_error")
    assert "secret detail" not in error.message and "recording its call failed" in error.message
    assert isinstance(error.__cause__, KeyError)
