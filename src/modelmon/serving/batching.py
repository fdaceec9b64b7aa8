"""Adaptive batching: concurrent requests for one model merged into one model call.

While the model is busy, new requests queue; when it frees up, everything queued (up to
``max_batch_size`` rows) goes in one call. An idle model therefore answers a lone request at
once, and a busy one amortises its per-call cost over many rows. ``max_batch_delay_ms``
optionally holds a batch open a little longer to gather more rows.

A request is never split: a batch is whole requests, and a request larger than
``max_batch_size`` runs as a batch of its own.

Model calls that typically take less than ``inline_below_ms`` run on the event loop itself:
handing a call to a worker thread and back costs more than such a call (ONNX Runtime on a
few rows: tens of microseconds; the handoff: two thread wake-ups and about 140 us of the
worker's CPU per call, measured at one request at a time). Slower models run in the thread
pool, so the event loop keeps reading requests meanwhile. "Typically" is the fastest of the
last ``TIMING_WINDOW`` calls, timed around the model call alone: a call that had to wait
for the GIL (another thread held it) looks slow without being so, and a running average of
such times once kept a cheap model in the thread pool for good under load.

**The direct path.** A request for an idle, fast model (nothing queued, no batch being
gathered or called, a typical call under ``inline_below_ms``) calls the model from its own
task, there and then, instead of queueing for the batcher's task: the queue hop (a future,
a wake-up of the batcher's task and one of the caller's) cost more than the model call
itself at one request at a time. Load keeps batching, for two reasons. Once one request in an
event-loop pass has taken the direct path, the others of that pass (requests that arrived
together) queue, and the batcher merges them as before. And after a model call that served
more than one request, requests queue until a call serves only one again: under steady load
(many connections) one batched call per loop pass costs less than a direct call for the
first request of each pass and a batched one for the rest (measured: about 20 us more CPU
per request at 32 connections). The model is the same, the observer is
called the same way (once per call, before the caller hears), so prediction ids, the
prediction log and monitoring counts do not depend on the path.

**A model that fails.** When a call that merged several requests raises, one request's rows
may be to blame (a scikit-learn model raises on a NaN its preprocessing made of one bad
value), so each request's rows are then sent again alone, in order, through the same path,
and each caller gets its own outputs or its own error: a valid request never fails because
of another. The failed call is not observed (no counts, no prediction ids, no journal line),
so each answered request's rows are observed exactly once, by its own call. A request is
retried once and never merged again, so a failed batch costs at most one more call per
request (at most ``max_batch_size`` calls; what batching off costs all the time) before the
batcher takes the next batch from its queue; requests arriving meanwhile queue, as behind
any slow call. The bound matters when every call fails (a model that is down): each batch
then costs a call per request, which is still a bounded, one-pass cost, and each caller
hears its own call's error. A model that fails now and then may fail a retry too: that
request gets the error of its own call. A caller that has gone (cancelled) is not retried.
A single request's failed call is not retried: its caller gets its error at once.
Only a failure of the model call itself is retried, not one of the observer: the observer
runs after the model has answered and may have counted part of the rows when it raises, so a
retry would call a model that did not fail again and could count rows twice. An observer
that raises is a bug of modelmon, not the callers' fault: it is logged with its traceback,
and every request of that call gets an ``ObserverError`` (caused by the observer's error),
on every path, with no retry: a 500 counted as ``internal_error``, whose message hides the
details (they are in the log), as for any bug of modelmon's; a shadow rollout does not
send such a call's copies again either.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import NamedTuple

from modelmon.errors import ModelmonError
from modelmon.types import FeatureBatch, ModelOutput

logger = logging.getLogger("modelmon.serving")

#: Model calls whose times decide whether calls run inline (see the module's docstring).
TIMING_WINDOW = 16

#: Called on the event loop with each model call's rows, its seconds, its outputs and
#: how long each of its requests waited for it, before any of them is answered. It returns
#: the number it gave the call's first row (the runtime numbers rows consecutively:
#: prediction ids), so that each caller learns the number of its own first row. Everything
#: done once per model call belongs here. It should not raise: if it does, the call's
#: requests fail with an ``ObserverError`` (see the module's docstring).
BatchObserver = Callable[[FeatureBatch, float, ModelOutput, list[float]], int]


class ObserverError(ModelmonError):
    """The observer raised after the model call had succeeded (its error is the cause): what
    each request of that call gets. Never retried, since the model did not fail. A bug of
    modelmon's, counted as one (``internal_error``), its details in the log only."""

    status_code = 500
    reason = "internal_error"


def _observer_failed(exc: Exception, merged: FeatureBatch) -> ObserverError:
    """Log the observer's error ``exc``, which is being handled (so its traceback goes to the
    log), and make the error that each request of its call gets."""
    logger.exception("the batch observer failed on a model call of %d rows; its requests fail", merged.n_rows)
    return ObserverError("internal error: the model answered, but recording its call failed (see the server's log)")


class Answer(NamedTuple):
    """One caller's share of a model call."""

    output: ModelOutput  # its rows only
    first_row: int  # the observer's number for its first row (0-based in the call without one)


@dataclass(slots=True)
class _Pending:
    batch: FeatureBatch
    future: asyncio.Future[Answer]
    enqueued: float


class AdaptiveBatcher:
    def __init__(
        self,
        predict: Callable[[FeatureBatch], ModelOutput],
        executor: Executor,
        observe: BatchObserver | None,
        max_batch_size: int = 256,
        max_batch_delay_ms: float = 0.0,
        enabled: bool = True,
        inline_below_ms: float = 1.0,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if max_batch_delay_ms < 0:
            raise ValueError(f"max_batch_delay_ms must be >= 0, got {max_batch_delay_ms}")
        self.predict = predict
        self.executor = executor
        self.observe = observe
        self.max_batch_size = max_batch_size
        self.max_batch_delay = max_batch_delay_ms / 1000.0
        self.enabled = enabled
        self.inline_below = inline_below_ms / 1000.0
        self._call_seconds: deque[float] = deque(maxlen=TIMING_WINDOW)  # the model call alone
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._carry: _Pending | None = None
        self._worker: asyncio.Task[None] | None = None
        self._gathering = False  # the batcher's task holds requests (gathering or calling)
        self._direct_this_pass = False  # a request took the direct path in this loop pass
        self._last_call_requests = 1  # how many requests the latest model call served

    def start(self) -> None:
        if self.enabled and self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def stop(self) -> None:
        """Finish everything queued, then stop the worker."""
        if self._worker is None:
            return
        # Also while a batch is in hand (being called, or its requests retried one by one):
        # cancelling the task then would leave its callers waiting.
        while not self._queue.empty() or self._carry is not None or self._gathering:
            await asyncio.sleep(0.005)
        self._worker.cancel()
        try:
            await self._worker
        except asyncio.CancelledError:
            pass
        self._worker = None

    async def submit(self, batch: FeatureBatch) -> Answer:
        """The model's outputs for ``batch``'s rows, and their row number."""
        enqueued = time.perf_counter()
        if not self.enabled:
            output, first_row = await self._call([batch], [0.0])
            return Answer(output, first_row)
        if self._worker is None:
            self.start()
        if self._can_call_directly():
            return self._call_directly(batch)
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(batch, future, enqueued))
        return await future

    @property
    def typical_seconds(self) -> float | None:
        """The fastest recent model call (None before the first)."""
        return min(self._call_seconds) if self._call_seconds else None

    def _runs_inline(self) -> bool:
        typical = self.typical_seconds
        return typical is not None and typical < self.inline_below

    def _can_call_directly(self) -> bool:
        """Whether this request may call the model from its own task (the direct path in the
        module's docstring): the model is fast and idle, not under load (its latest call
        served one request), and no other request of this loop pass took the direct path
        (then requests are arriving together: let them batch)."""
        if self._direct_this_pass or self._last_call_requests > 1 or self._gathering:
            return False
        if self._carry is not None or not self._queue.empty():
            return False
        return self._runs_inline()

    def _call_directly(self, batch: FeatureBatch) -> Answer:
        self._direct_this_pass = True
        self._last_call_requests = 1
        # Cleared at the next loop pass: callbacks scheduled now run after every callback
        # already ready, that is after the other requests that arrived with this one.
        asyncio.get_running_loop().call_soon(self._new_pass)
        output, first_row = self._call_inline(batch, [0.0])
        return Answer(output, first_row)

    def _new_pass(self) -> None:
        self._direct_this_pass = False

    def _call_inline(self, merged: FeatureBatch, waits: list[float]) -> tuple[ModelOutput, int]:
        """Call the model on the event loop's thread; a model error propagates to the caller,
        an observer's as an ``ObserverError``."""
        started = time.perf_counter()
        output = self.predict(merged)
        seconds = time.perf_counter() - started
        self._call_seconds.append(seconds)
        try:  # free when nothing is raised (Python 3.11+)
            first_row = self.observe(merged, seconds, output, waits) if self.observe is not None else 0
        except Exception as exc:
            raise _observer_failed(exc, merged) from exc
        return output, first_row

    async def _call(self, batches: list[FeatureBatch], waits: list[float]) -> tuple[ModelOutput, int]:
        """The merged batches' outputs, and the observer's number for its first row."""
        merged = FeatureBatch.concat(batches)
        if self._runs_inline():
            return self._call_inline(merged, waits)
        # slow, or not measured yet
        started = time.perf_counter()
        output, call_seconds = await asyncio.get_running_loop().run_in_executor(self.executor, self._timed_predict, merged)
        self._call_seconds.append(call_seconds)
        try:
            first_row = self.observe(merged, time.perf_counter() - started, output, waits) if self.observe is not None else 0
        except Exception as exc:
            raise _observer_failed(exc, merged) from exc
        return output, first_row

    def _timed_predict(self, batch: FeatureBatch) -> tuple[ModelOutput, float]:
        started = time.perf_counter()
        output = self.predict(batch)
        return output, time.perf_counter() - started

    async def _gather(self) -> list[_Pending]:
        first = self._carry or await self._queue.get()
        self._carry = None
        self._gathering = True  # until _run has answered this batch
        items, rows = [first], first.batch.n_rows
        deadline = time.perf_counter() + self.max_batch_delay
        while rows < self.max_batch_size:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            if rows + item.batch.n_rows > self.max_batch_size:
                self._carry = item
                break
            items.append(item)
            rows += item.batch.n_rows
        return items

    async def _run(self) -> None:
        while True:
            try:
                items = await self._gather()
                await self._answer_call(items)
            finally:
                self._gathering = False

    async def _answer_call(self, items: list[_Pending]) -> None:
        """Call the model on the gathered requests and answer each of them."""
        started = time.perf_counter()
        self._last_call_requests = len(items)
        try:
            output, first_row = await self._call([i.batch for i in items], [started - i.enqueued for i in items])
        except ObserverError as exc:  # the model answered: calling it again would not help
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        except Exception as exc:
            if len(items) == 1:  # its own error: nothing to isolate
                if not items[0].future.done():
                    items[0].future.set_exception(exc)
            else:
                await self._answer_one_by_one(items)
            return
        offset = 0
        for item in items:
            rows = item.batch.n_rows
            if not item.future.done():  # a caller that disconnected has cancelled it
                item.future.set_result(Answer(output.rows(offset, offset + rows), first_row + offset))
            offset += rows

    async def _answer_one_by_one(self, items: list[_Pending]) -> None:
        """After a merged call failed: call the model on each request's rows alone, in
        order, and answer each request with its own outputs or its own error (see "A model
        that fails" in the module's docstring). The failed call was never observed, so each
        answered request's rows are observed (counted, numbered, journaled) once, by its own
        call."""
        try:
            for item in items:
                if item.future.done():  # its caller has gone: its rows need no answer
                    continue
                try:
                    output, first_row = await self._call([item.batch], [time.perf_counter() - item.enqueued])
                except Exception as exc:
                    if not item.future.done():
                        item.future.set_exception(exc)
                    continue
                if not item.future.done():
                    item.future.set_result(Answer(output, first_row))
        except BaseException:  # the batcher's task cancelled mid-way: no caller waits forever
            for item in items:
                if not item.future.done():
                    item.future.cancel()
            raise
