"""Adaptive batching: every caller gets exactly its own rows back, batches merge under
load, and the size limit holds."""

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from modelmon.serving.batching import AdaptiveBatcher
from modelmon.types import FeatureBatch, ModelOutput


def echo_predict(batch: FeatureBatch) -> ModelOutput:
    """'Probabilities' that are the rows themselves, so each caller can check its rows."""
    return ModelOutput.from_probabilities(batch.numeric.copy())


def rows(caller: int, n: int) -> FeatureBatch:
    numeric = np.column_stack([np.full(n, caller, dtype=float), np.arange(n, dtype=float)])
    return FeatureBatch(numeric=numeric, categorical=np.empty((n, 0), dtype=object))


class Numbering:
    """An observer as the runtime's: numbers each call's rows consecutively (from 1000) and
    remembers each call's rows, keyed by the number of its first row."""

    def __init__(self) -> None:
        self.next = 1000
        self.calls: dict[int, np.ndarray] = {}
        self.waits: list[int] = []  # per call, how many requests' waits it reported

    def __call__(self, batch: FeatureBatch, seconds: float, output: ModelOutput, waits: list[float]) -> int:
        assert len(waits) >= 1 and all(w >= 0 for w in waits)  # one per request merged into the call
        self.waits.append(len(waits))
        first, self.next = self.next, self.next + batch.n_rows
        self.calls[first] = batch.numeric.copy()
        return first

    @property
    def sizes(self) -> list[int]:
        return [len(rows) for rows in self.calls.values()]

    def row(self, number: int) -> np.ndarray:
        """The row the observer numbered ``number``."""
        first = max(f for f in self.calls if f <= number)
        return self.calls[first][number - first]


def run_callers(batcher: AdaptiveBatcher, sizes: list[int]) -> list[np.ndarray]:
    """Every caller's probabilities; checks that each caller's row numbers are its own rows'."""

    async def main():
        batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(rows(i, n)) for i, n in enumerate(sizes)))
        finally:
            await batcher.stop()

    answers = asyncio.run(main())
    if isinstance(batcher.observe, Numbering):
        for caller, (n, answer) in enumerate(zip(sizes, answers, strict=True)):
            numbered = np.array([batcher.observe.row(answer.first_row + k) for k in range(n)])
            np.testing.assert_array_equal(numbered, rows(caller, n).numeric)
        assert sum(batcher.observe.waits) == len(sizes)  # every request's wait, reported once
    return [answer.output.probabilities for answer in answers]


@pytest.fixture
def executor():
    with ThreadPoolExecutor(2) as pool:
        yield pool


@pytest.mark.parametrize("max_batch_size", [1, 7, 64, 1000])
def test_many_concurrent_callers_each_get_their_own_rows(executor, max_batch_size):
    numbering = Numbering()
    batcher = AdaptiveBatcher(echo_predict, executor, numbering, max_batch_size=max_batch_size, max_batch_delay_ms=2)
    sizes = [int(n) for n in np.random.default_rng(3).integers(1, 20, 300)]
    results = run_callers(batcher, sizes)
    seen_batches = numbering.sizes
    for caller, (n, proba) in enumerate(zip(sizes, results, strict=True)):
        np.testing.assert_array_equal(proba, rows(caller, n).numeric)
    assert sum(seen_batches) == sum(sizes)
    # A batch never exceeds the limit unless it is a single oversized request.
    assert all(b <= max(max_batch_size, max(sizes)) for b in seen_batches)
    if max_batch_size >= 64:
        assert len(seen_batches) < len(sizes) / 4, "concurrent requests were not merged"
    if max_batch_size == 7:
        assert max(seen_batches) <= 19 and any(b > 1 for b in seen_batches)


def test_request_larger_than_the_limit_runs_alone(executor):
    numbering = Numbering()
    batcher = AdaptiveBatcher(echo_predict, executor, numbering, max_batch_size=4)
    results = run_callers(batcher, [10, 2, 2])
    seen = numbering.sizes
    assert [len(r) for r in results] == [10, 2, 2]
    assert 10 in seen and sum(seen) == 14


def test_batching_off_calls_the_model_per_request(executor):
    numbering = Numbering()
    batcher = AdaptiveBatcher(echo_predict, executor, numbering, enabled=False)
    results = run_callers(batcher, [3, 5, 1])
    seen = numbering.sizes
    assert sorted(seen) == [1, 3, 5]
    np.testing.assert_array_equal(results[1], rows(1, 5).numeric)


def test_a_model_failure_reaches_every_caller_and_the_batcher_survives(executor):
    calls = {"n": 0}

    def flaky(batch: FeatureBatch) -> ModelOutput:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return echo_predict(batch)

    numbering = Numbering()
    batcher = AdaptiveBatcher(flaky, executor, numbering, max_batch_size=100)

    async def main():
        batcher.start()
        first = await asyncio.gather(batcher.submit(rows(0, 2)), return_exceptions=True)
        second = await batcher.submit(rows(1, 2))
        await batcher.stop()
        return first, second

    first, (output, first_row) = asyncio.run(main())
    assert isinstance(first[0], RuntimeError)
    np.testing.assert_array_equal(output.probabilities, rows(1, 2).numeric)
    assert first_row == 1000  # the failed call numbered no rows


@pytest.mark.parametrize(("size", "delay"), [(0, 0), (10, -1)])
def test_bad_settings_name_the_parameter(executor, size, delay):
    with pytest.raises(ValueError, match="max_batch"):
        AdaptiveBatcher(echo_predict, executor, None, max_batch_size=size, max_batch_delay_ms=delay)


# Thresholds far from the calls' durations, so that a loaded machine (a thread taking
# milliseconds to start) cannot change the outcome.
@pytest.mark.parametrize(("inline_below_ms", "sleep_s", "inline_expected"), [(200.0, 0.0, True), (10.0, 0.05, False), (0.0, 0.0, False)])
def test_cheap_calls_run_on_the_event_loop_and_slow_ones_in_a_thread(executor, inline_below_ms, sleep_s, inline_expected):
    """After the first call (always in a thread, to measure it), a model whose calls
    typically take under ``inline_below_ms`` is called on the event loop's own thread."""
    import threading
    import time

    threads: list[int] = []

    def predict(batch: FeatureBatch) -> ModelOutput:
        threads.append(threading.get_ident())
        time.sleep(sleep_s)
        return ModelOutput.from_probabilities(batch.numeric.copy())

    batcher = AdaptiveBatcher(predict, executor, None, inline_below_ms=inline_below_ms)

    async def main() -> int:
        batcher.start()
        try:
            for i in range(5):  # one at a time: five model calls
                output, _ = await batcher.submit(rows(i, 2))
                np.testing.assert_array_equal(output.probabilities, rows(i, 2).numeric)
        finally:
            await batcher.stop()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads[0] != loop_thread  # measured in a thread first
    assert all((t == loop_thread) == inline_expected for t in threads[1:]), threads


def test_a_slow_handoff_to_the_thread_pool_does_not_count_as_a_slow_model():
    """The time that decides is the model call's own: a worker thread that is slow to start
    the call (under load it waits for the GIL) must not keep a cheap model off the loop; nor
    may one stalled call among fast ones."""
    import threading
    import time
    from concurrent.futures import Executor, Future

    class SlowHandoff(Executor):
        def submit(self, fn, /, *args, **kwargs):
            future: Future = Future()

            def run():
                time.sleep(0.02)  # the handoff, not the model
                future.set_result(fn(*args, **kwargs))

            threading.Thread(target=run).start()
            return future

    threads: list[int] = []
    calls = {"n": 0}

    def predict(batch: FeatureBatch) -> ModelOutput:
        threads.append(threading.get_ident())
        calls["n"] += 1
        if calls["n"] == 3:
            time.sleep(0.02)  # one stalled call on the loop
        return ModelOutput.from_probabilities(batch.numeric.copy())

    batcher = AdaptiveBatcher(predict, SlowHandoff(), None, inline_below_ms=5.0)

    async def main() -> int:
        batcher.start()
        try:
            for i in range(6):
                await batcher.submit(rows(i, 1))
        finally:
            await batcher.stop()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads[0] != loop_thread
    assert all(t == loop_thread for t in threads[1:]), threads
