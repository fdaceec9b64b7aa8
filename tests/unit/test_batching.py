"""Adaptive batching: every caller gets exactly its own rows back, batches merge under
load, and the size limit holds."""

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from modelmon.serving.batching import AdaptiveBatcher, ObserverError
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


def test_a_failed_call_of_one_request_is_not_retried_and_the_batcher_survives(executor):
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
    assert calls["n"] == 2  # the failed call once (not again alone), then the second request's
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


# -- the direct path: an idle, fast model is called from the caller's own task ----------


class Recorder:
    """echo_predict that remembers, per call, its rows and which task made the call: the
    caller's own (the direct path) or the batcher's (named "batcher")."""

    def __init__(self, fail_on_caller: int | None = None) -> None:
        self.fail_on_caller = fail_on_caller
        self.calls: list[tuple[str, list[int]]] = []  # (task name, the callers whose rows it had)

    def __call__(self, batch: FeatureBatch) -> ModelOutput:
        try:
            name = asyncio.current_task().get_name()  # type: ignore[union-attr]
        except RuntimeError:  # no event loop in this thread: the thread pool
            name = "thread"
        callers = sorted({int(c) for c in batch.numeric[:, 0]})
        self.calls.append((name, callers))
        if self.fail_on_caller in callers:
            raise RuntimeError(f"bad row of caller {self.fail_on_caller}")
        return echo_predict(batch)

    @property
    def paths(self) -> list[str]:
        return ["batcher" if name == "batcher" else "thread" if name == "thread" else "direct" for name, _ in self.calls]


# 200 ms: far above an echo call on any machine, so the model always counts as fast.
FAST = {"inline_below_ms": 200.0}


async def next_request() -> None:
    """Let the event loop run one pass, as between two requests read from sockets: requests
    submitted within one pass count as arriving together."""
    await asyncio.sleep(0)


def direct_run(recorder: Recorder, numbering: Numbering, steps, warmup_rows: int = 1, **settings) -> list:
    """Run ``steps(batcher)`` after one warm-up call (the first call of a model is always
    measured in a thread); its result. The warm-up is caller 99."""
    batcher = AdaptiveBatcher(recorder, ThreadPoolExecutor(1), numbering, **(FAST | settings))

    async def main():
        batcher.start()
        try:
            await batcher.submit(rows(99, warmup_rows))
            return await steps(batcher)
        finally:
            await batcher.stop()
            batcher.executor.shutdown()

    return asyncio.run(main())


@pytest.mark.parametrize("n", [1, 64])
def test_an_idle_fast_model_is_called_from_the_callers_task(n):
    recorder, numbering = Recorder(), Numbering()

    async def steps(batcher):
        answers = []
        for caller in range(3):  # one at a time: the model is idle for each
            await next_request()
            answers.append(await batcher.submit(rows(caller, n)))
        return answers

    answers = direct_run(recorder, numbering, steps)
    assert recorder.paths == ["thread", "direct", "direct", "direct"]
    assert [callers for _, callers in recorder.calls[1:]] == [[0], [1], [2]]
    for caller, (output, first_row) in enumerate(answers):
        np.testing.assert_array_equal(output.probabilities, rows(caller, n).numeric)
        # Numbered by the observer as on the batcher's path: after the warm-up's row, in order.
        assert first_row == 1001 + caller * n
        numbered = np.array([numbering.row(first_row + k) for k in range(n)])
        np.testing.assert_array_equal(numbered, rows(caller, n).numeric)
    assert numbering.waits == [1, 1, 1, 1]  # every call reported its one request's wait


def test_requests_arriving_together_still_batch():
    """A burst (requests reaching the batcher in one event-loop pass): the first is called
    directly, the others queue and go to the model in one batched call."""
    recorder, numbering = Recorder(), Numbering()
    sizes = [1, 3, 1, 64, 2]

    async def steps(batcher):
        await next_request()
        return await asyncio.gather(*(batcher.submit(rows(i, n)) for i, n in enumerate(sizes)))

    answers = direct_run(recorder, numbering, steps)
    assert recorder.paths == ["thread", "direct", "batcher"]
    assert [callers for _, callers in recorder.calls[1:]] == [[0], [1, 2, 3, 4]]
    for caller, (n, (output, first_row)) in enumerate(zip(sizes, answers, strict=True)):
        np.testing.assert_array_equal(output.probabilities, rows(caller, n).numeric)
        numbered = np.array([numbering.row(first_row + k) for k in range(n)])
        np.testing.assert_array_equal(numbered, rows(caller, n).numeric)
    assert numbering.sizes == [1, 1, sum(sizes) - 1]
    assert numbering.waits == [1, 1, len(sizes) - 1]


def test_after_a_batched_call_requests_queue_until_a_call_serves_one():
    """Load (the latest call served several requests) keeps requests on the batcher's path;
    a call that served one request ends it."""
    recorder, numbering = Recorder(), Numbering()

    async def steps(batcher):
        await next_request()
        await asyncio.gather(*(batcher.submit(rows(i, 1)) for i in range(3)))  # 0 direct, 1 and 2 batched
        answers = []
        for caller in (3, 4, 5):
            await next_request()
            answers.append(await batcher.submit(rows(caller, 2)))
        return answers

    answers = direct_run(recorder, numbering, steps)
    assert recorder.paths == ["thread", "direct", "batcher", "batcher", "direct", "direct"]
    assert [callers for _, callers in recorder.calls[1:]] == [[0], [1, 2], [3], [4], [5]]
    for caller, (output, first_row) in zip((3, 4, 5), answers, strict=True):
        np.testing.assert_array_equal(output.probabilities, rows(caller, 2).numeric)
        numbered = np.array([numbering.row(first_row + k) for k in range(2)])
        np.testing.assert_array_equal(numbered, rows(caller, 2).numeric)


def test_a_busy_model_queues_new_requests_behind_the_batch():
    """While the batcher holds a batch open (gathering up to ``max_batch_delay_ms``), a new
    request does not overtake it: it joins the batch."""
    recorder, numbering = Recorder(), Numbering()

    async def steps(batcher):
        await next_request()
        burst = asyncio.gather(batcher.submit(rows(0, 1)), batcher.submit(rows(1, 1)))  # 0 direct, 1 queued
        for _ in range(3):  # later passes: the batcher has taken caller 1 and waits for more rows
            await asyncio.sleep(0)
        assert batcher._gathering
        late = await batcher.submit(rows(2, 1))  # fills the batch (2 rows): it goes at once
        return [*(await burst), late]

    # A long delay, only ever cut short by the full batch: the test does not depend on timing.
    # The warm-up fills its batch too, so that it does not wait out the delay.
    answers = direct_run(recorder, numbering, steps, warmup_rows=2, max_batch_size=2, max_batch_delay_ms=60_000)
    assert recorder.paths == ["thread", "direct", "batcher"]
    assert [callers for _, callers in recorder.calls[1:]] == [[0], [1, 2]]
    for caller, (output, _) in enumerate(answers):
        np.testing.assert_array_equal(output.probabilities, rows(caller, 1).numeric)


def test_a_slow_model_never_takes_the_direct_path():
    recorder, numbering = Recorder(), Numbering()

    async def steps(batcher):
        answers = []
        for i in range(3):
            await next_request()
            answers.append(await batcher.submit(rows(i, 2)))
        return answers

    direct_run(recorder, numbering, steps, inline_below_ms=0.0)
    assert recorder.paths == ["thread"] * 4


def test_a_model_failure_on_the_direct_path_reaches_its_caller_only():
    recorder, numbering = Recorder(fail_on_caller=1), Numbering()

    async def steps(batcher):
        await next_request()
        first = await batcher.submit(rows(0, 2))
        await next_request()
        with pytest.raises(RuntimeError, match="bad row of caller 1"):
            await batcher.submit(rows(1, 2))
        await next_request()
        # A burst whose batched call fails: its callers hear of it, the direct one does not.
        burst = await asyncio.gather(*(batcher.submit(rows(i, 1)) for i in (2, 1, 3)), return_exceptions=True)
        await next_request()
        after = await batcher.submit(rows(4, 3))  # the batcher survives
        await next_request()
        await batcher.submit(rows(5, 1))
        return first, burst, after

    first, burst, after = direct_run(recorder, numbering, steps)
    # The burst's batched call [1, 3] fails and is retried a request at a time: 1 fails
    # alone, 3 is answered. After a batched call (two requests), one request queues; the
    # next is direct again.
    assert recorder.paths == ["thread", "direct", "direct", "direct", "batcher", "batcher", "batcher", "batcher", "direct"]
    assert [callers for _, callers in recorder.calls[4:7]] == [[1, 3], [1], [3]]
    np.testing.assert_array_equal(first.output.probabilities, rows(0, 2).numeric)
    np.testing.assert_array_equal(burst[0].output.probabilities, rows(2, 1).numeric)
    assert isinstance(burst[1], RuntimeError) and str(burst[1]) == "bad row of caller 1"
    np.testing.assert_array_equal(burst[2].output.probabilities, rows(3, 1).numeric)
    np.testing.assert_array_equal(after.output.probabilities, rows(4, 3).numeric)
    # Failed calls numbered no rows: warm-up 1000, caller 0 at 1001-1002, caller 2 at 1003,
    # caller 3 (its retry) at 1004, caller 4 at 1005-1007.
    assert (first.first_row, burst[0].first_row, burst[2].first_row, after.first_row) == (1001, 1003, 1004, 1005)


# -- a merged call that fails: each request is sent again alone --------------------------


class Picky:
    """echo_predict, in a thread, that takes ``seconds`` and raises (naming the first one)
    on a call holding a row of a caller in ``bad``, or on the call numbers in ``fail_calls``
    (1-based: a model failing now and then). Remembers each call's callers."""

    def __init__(self, bad: set[int] = frozenset(), seconds: float = 0.0, fail_calls: set[int] = frozenset()) -> None:
        self.bad, self.seconds, self.fail_calls = bad, seconds, fail_calls
        self.calls: list[list[int]] = []

    def __call__(self, batch: FeatureBatch) -> ModelOutput:
        import time

        callers = list(dict.fromkeys(int(c) for c in batch.numeric[:, 0]))  # in row order
        self.calls.append(callers)
        time.sleep(self.seconds)
        if len(self.calls) in self.fail_calls:
            raise RuntimeError(f"call {len(self.calls)} failed")
        for caller in callers:
            if caller in self.bad:
                raise RuntimeError(f"bad rows of caller {caller}")
        return echo_predict(batch)


def slow_batcher(model: Picky, numbering: Numbering, **settings) -> AdaptiveBatcher:
    """Every call in the thread pool (inline_below_ms=0), so requests queue behind it."""
    return AdaptiveBatcher(model, ThreadPoolExecutor(1), numbering, **({"inline_below_ms": 0.0} | settings))


async def until_called(model: Picky, n: int) -> None:
    while len(model.calls) < n:
        await asyncio.sleep(0.001)


def test_a_failed_batch_answers_each_request_with_its_own_result_or_its_own_error():
    sizes = [int(n) for n in np.random.default_rng(5).integers(1, 6, 60)]
    bad = set(range(3, 60, 7))
    model, numbering = Picky(bad, seconds=0.003), Numbering()
    batcher = slow_batcher(model, numbering, max_batch_size=40)

    async def main():
        try:
            return await asyncio.gather(*(batcher.submit(rows(i, n)) for i, n in enumerate(sizes)), return_exceptions=True)
        finally:
            await batcher.stop()
            batcher.executor.shutdown()

    answers = asyncio.run(main())
    # Batches merged, and merged calls with a bad caller failed: otherwise this proves nothing.
    failed_merged = [c for c in model.calls if len(c) > 1 and bad & set(c)]
    assert len(failed_merged) >= 2, model.calls
    for caller, (n, answer) in enumerate(zip(sizes, answers, strict=True)):
        if caller in bad:
            assert isinstance(answer, RuntimeError) and str(answer) == f"bad rows of caller {caller}"
            continue
        np.testing.assert_array_equal(answer.output.probabilities, rows(caller, n).numeric)
        numbered = np.array([numbering.row(answer.first_row + k) for k in range(n)])
        np.testing.assert_array_equal(numbered, rows(caller, n).numeric)
    # Every answered request's rows numbered (counted) once, no failed request's rows at all,
    # and each answered request's wait reported once.
    valid = [c for c in range(len(sizes)) if c not in bad]
    assert sum(numbering.sizes) == sum(sizes[c] for c in valid)
    assert sorted(int(r[0]) for call in numbering.calls.values() for r in call) == sorted(
        c for c in valid for _ in range(sizes[c])
    )
    assert sum(numbering.waits) == len(valid)
    # Each request of a failed batch sent again once, alone, in the batch's order.
    for merged in failed_merged:
        start = model.calls.index(merged)
        assert model.calls[start + 1 : start + 1 + len(merged)] == [[c] for c in merged]


def test_a_model_failing_now_and_then_fails_only_the_retry_that_fails():
    """Call 1 (the merged one) and call 3 (the second retry) fail whatever their rows."""
    model, numbering = Picky(fail_calls={1, 3}), Numbering()
    batcher = slow_batcher(model, numbering)

    async def main():
        try:
            return await asyncio.gather(*(batcher.submit(rows(i, 2)) for i in range(3)), return_exceptions=True)
        finally:
            await batcher.stop()
            batcher.executor.shutdown()

    answers = asyncio.run(main())
    assert model.calls == [[0, 1, 2], [0], [1], [2]]
    np.testing.assert_array_equal(answers[0].output.probabilities, rows(0, 2).numeric)
    assert isinstance(answers[1], RuntimeError) and str(answers[1]) == "call 3 failed"
    np.testing.assert_array_equal(answers[2].output.probabilities, rows(2, 2).numeric)
    assert (answers[0].first_row, answers[2].first_row) == (1000, 1002)
    assert numbering.sizes == [2, 2] and numbering.waits == [1, 1]


def test_a_caller_gone_during_a_failed_batch_is_not_sent_again():
    model, numbering = Picky({1}, seconds=0.05), Numbering()
    batcher = slow_batcher(model, numbering)

    async def main():
        try:
            tasks = [asyncio.ensure_future(batcher.submit(rows(i, 1))) for i in range(3)]
            await until_called(model, 1)  # the merged call is running
            tasks[2].cancel()  # its client disconnected
            return await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            await batcher.stop()
            batcher.executor.shutdown()

    answers = asyncio.run(main())
    assert model.calls == [[0, 1, 2], [0], [1]]
    np.testing.assert_array_equal(answers[0].output.probabilities, rows(0, 1).numeric)
    assert isinstance(answers[1], RuntimeError) and str(answers[1]) == "bad rows of caller 1"
    assert isinstance(answers[2], asyncio.CancelledError)
    assert numbering.sizes == [1]


def test_stopping_while_a_failed_batch_is_retried_answers_its_callers_first():
    model, numbering = Picky({0}, seconds=0.03), Numbering()
    batcher = slow_batcher(model, numbering)

    async def main():
        try:
            callers = asyncio.gather(*(batcher.submit(rows(i, 1)) for i in range(3)), return_exceptions=True)
            await until_called(model, 1)
            await batcher.stop()  # the queue is empty, but the batch is in hand
            assert len(model.calls) == 4  # stop waited for the batch and its three retries
            return await asyncio.wait_for(callers, 5)
        finally:
            batcher.executor.shutdown()

    answers = asyncio.run(main())
    assert isinstance(answers[0], RuntimeError)
    for caller in (1, 2):
        np.testing.assert_array_equal(answers[caller].output.probabilities, rows(caller, 1).numeric)


# -- an observer that fails: the model did not, so nothing is sent again -----------------


class FailingNumbering(Numbering):
    """Numbering that raises on the calls numbered in ``fail_calls`` (1-based), after having
    numbered (counted) their rows, as an observer that fails half-way."""

    def __init__(self, fail_calls: set[int]) -> None:
        super().__init__()
        self.fail_calls = fail_calls
        self.n = 0

    def __call__(self, batch: FeatureBatch, seconds: float, output: ModelOutput, waits: list[float]) -> int:
        self.n += 1
        first = super().__call__(batch, seconds, output, waits)
        if self.n in self.fail_calls:
            raise KeyError(f"observer bug on call {self.n}")
        return first


def assert_observer_failure(answer: object, call: int) -> None:
    assert isinstance(answer, ObserverError), answer
    assert isinstance(answer.__cause__, KeyError) and answer.__cause__.args == (f"observer bug on call {call}",)


def observer_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The batcher's log records of a failed observer, each with the observer's error."""
    records = [r for r in caplog.records if r.name == "modelmon.serving" and "batch observer failed" in r.getMessage()]
    assert all(r.levelno == logging.ERROR and r.exc_info and r.exc_info[0] is KeyError for r in records)
    return records


def test_an_observer_failing_on_a_merged_call_fails_its_requests_without_calling_the_model_again(caplog):
    """In the thread pool: the merged call [0, 1, 2] succeeds, its observer raises. Each caller
    gets the error, the model is not called again (no retry one by one) and no row is observed
    twice; the batcher goes on."""
    model, numbering = Picky(), FailingNumbering(fail_calls={1})
    batcher = slow_batcher(model, numbering)

    async def main():
        try:
            failed = await asyncio.gather(*(batcher.submit(rows(i, 2)) for i in range(3)), return_exceptions=True)
            after = await batcher.submit(rows(3, 1))
            return failed, after
        finally:
            await batcher.stop()
            batcher.executor.shutdown()

    failed, after = asyncio.run(main())
    assert model.calls == [[0, 1, 2], [3]]
    for answer in failed:
        assert_observer_failure(answer, call=1)
    assert len(observer_logs(caplog)) == 1  # once per failed call, not per request
    # The failed call's rows observed once (by the failing observer), then the next call's.
    assert numbering.sizes == [6, 1] and numbering.waits == [3, 1]
    np.testing.assert_array_equal(after.output.probabilities, rows(3, 1).numeric)
    assert after.first_row == 1006


def test_an_observer_failing_on_an_inline_merged_call_is_not_retried_either(caplog):
    """On the event loop: a burst's first request goes direct, the other two are merged into
    one inline call, whose observer (its third call, after the warm-up's and the direct one's)
    raises."""
    recorder, numbering = Recorder(), FailingNumbering(fail_calls={3})

    async def steps(batcher):
        await next_request()
        return await asyncio.gather(*(batcher.submit(rows(i, 1)) for i in range(3)), return_exceptions=True)

    answers = direct_run(recorder, numbering, steps)
    assert recorder.paths == ["thread", "direct", "batcher"]
    assert [callers for _, callers in recorder.calls[1:]] == [[0], [1, 2]]
    np.testing.assert_array_equal(answers[0].output.probabilities, rows(0, 1).numeric)
    assert_observer_failure(answers[1], call=3)
    assert_observer_failure(answers[2], call=3)
    assert len(observer_logs(caplog)) == 1
    assert numbering.sizes == [1, 1, 2]


@pytest.mark.parametrize("path", ["direct", "batching off"])
def test_an_observer_failing_on_a_single_request_fails_it_the_same_way(caplog, path):
    recorder, numbering = Recorder(), FailingNumbering(fail_calls={2})

    async def steps(batcher):
        await next_request()
        with pytest.raises(ObserverError) as raised:
            await batcher.submit(rows(0, 2))
        return raised.value

    error = direct_run(recorder, numbering, steps, enabled=path == "direct")
    assert_observer_failure(error, call=2)
    assert [callers for _, callers in recorder.calls] == [[99], [0]]
    if path == "direct":
        assert recorder.paths[1] == "direct"
    assert len(observer_logs(caplog)) == 1
