"""Bulk counting gives the counts that counting each call at once would, and counts the
queue when it should: before anything reads the counts, on the event loop every
``flush_seconds`` of traffic, on the drift thread's tick when the server is idle, and when
too many rows pile up."""

from __future__ import annotations

import time

import numpy as np
import pytest

from modelmon.monitoring.accounting import FeatureAccountant
from modelmon.monitoring.drift import DriftSettings
from modelmon.monitoring.metrics import BATCH_SIZE_BUCKETS, LATENCY_BUCKETS, ServerMetrics
from modelmon.monitoring.monitor import MonitorSettings, VersionMonitor
from modelmon.registry.profile import ProfileSettings, build_profile
from modelmon.types import FeatureBatch, FeatureSpec, ModelOutput, Signature

SIGNATURE = Signature(
    features=[FeatureSpec(name="x", dtype="float64", nullable=True),
              FeatureSpec(name="c", dtype="string", categories=["u", "v"], nullable=True)],
    classes=["a", "b", "c"],
    input_layout="columns",
)


def make_batch(rng: np.random.Generator, n: int) -> FeatureBatch:
    return FeatureBatch(
        numeric=rng.normal(size=(n, 1)), categorical=rng.choice(np.array(["u", "v", "w"], dtype=object), (n, 1))
    )


def bucket_counts(values: list[float], bounds: tuple[float, ...]) -> list[int]:
    """Per bucket (``le`` bounds, then +Inf), how many values fall in it, counted by hand."""
    edges = [*bounds, float("inf")]
    return [sum(1 for v in values if v <= edge and (i == 0 or v > edges[i - 1])) for i, edge in enumerate(edges)]


def test_queue_times_are_counted_at_a_scrape():
    server, monitor, _, accounting, _ = setup(max_pending_rows=1000)
    waits = [0.0, 0.00005, 0.0001, 0.003, 0.0031, 2.0, 100.0]  # on a bound, between, beyond the last
    rng = np.random.default_rng(6)
    accounting.add(make_batch(rng, 4), 0.001, out(rng.dirichlet(np.ones(3), 4)), waits[:3])  # one call, three requests
    accounting.add(make_batch(rng, 4), 0.001, out(rng.dirichlet(np.ones(3), 4)), waits[3:])
    assert monitor.metrics.queue_duration.bucket_counts.sum() == 0  # queued
    text = server.render().decode()
    np.testing.assert_array_equal(monitor.metrics.queue_duration.bucket_counts, bucket_counts(waits, LATENCY_BUCKETS))
    assert 'modelmon_queue_duration_seconds_bucket{model="m",version="1",le="0.0001"} 3.0' in text
    assert 'modelmon_queue_duration_seconds_count{model="m",version="1"} 7.0' in text


def setup(max_pending_rows: int, flush_seconds: float = 3600.0):
    """A version's monitor as the runtime builds it; by default the event loop never counts
    on its own."""
    rng = np.random.default_rng(0)
    profile, sample = build_profile(SIGNATURE, make_batch(rng, 2000), ProfileSettings(), None)
    server = ServerMetrics()
    monitor = VersionMonitor(
        server, model="m", version="1", flavor="sklearn", signature=SIGNATURE, profile=profile,
        reference_sample=sample, settings=MonitorSettings(drift=DriftSettings(min_rows=1)),
    )
    accounting = monitor.accounting
    assert accounting is not None and monitor.drift is not None
    accounting.max_pending_rows, accounting.flush_seconds = max_pending_rows, flush_seconds
    return server, monitor, monitor.drift, accounting, profile


def out(proba: np.ndarray) -> ModelOutput:
    return ModelOutput.from_probabilities(proba)


def test_bulk_counts_equal_per_call_counts_and_too_many_rows_are_counted_at_once():
    server, monitor, drift, accounting, profile = setup(max_pending_rows=100)
    rng = np.random.default_rng(1)
    calls = [(make_batch(rng, n), rng.dirichlet(np.ones(3), n)) for n in (1, 5, 30, 64, 1, 2)]
    for batch, proba in calls[:3]:  # 36 rows: under 100
        accounting.add(batch, 0.001, out(proba))
    assert monitor.task.predictions.counts.sum() == 0 and drift.rows[0] == 0  # queued
    accounting.add(calls[3][0], 0.001, out(calls[3][1]))  # 100 rows: counted by this call
    assert monitor.task.predictions.counts.sum() == 100 and drift.rows[0] == 100
    for batch, proba in calls[4:]:  # 3 rows: queued
        accounting.add(batch, 0.001, out(proba))
    assert monitor.task.predictions.counts.sum() == 100
    text = server.render().decode()  # a scrape counts the queue first
    assert 'modelmon_predictions_total{model="m",version="1",class="a"}' in text
    proba = np.concatenate([p for _, p in calls])
    top = proba.argmax(axis=1)
    np.testing.assert_array_equal(monitor.task.predictions.counts, np.bincount(top, minlength=3))
    assert monitor.task.confidence.bucket_counts.sum() == len(top)
    assert monitor.task.confidence.sum == pytest.approx(proba.max(axis=1).sum())
    # One batch size and one inference time per call, as prometheus_client would bucket them.
    sizes = [len(p) for _, p in calls]
    np.testing.assert_array_equal(monitor.metrics.batch_size.bucket_counts, bucket_counts(sizes, BATCH_SIZE_BUCKETS))
    assert monitor.metrics.batch_size.sum == sum(sizes)
    np.testing.assert_array_equal(monitor.metrics.inference_duration.bucket_counts, bucket_counts([0.001] * len(calls), LATENCY_BUCKETS))
    # The drift bins hold every row, as one count of all the rows would.
    settings = DriftSettings()
    reference = FeatureAccountant(SIGNATURE, profile, ["m", "1"], settings.recent_rows, settings.max_features)
    reference.count(FeatureBatch.concat([b for b, _ in calls]))
    np.testing.assert_array_equal(drift.accountant.bins.counts, reference.bins.counts)
    np.testing.assert_array_equal(drift.accountant.unseen.counts, reference.unseen.counts)
    assert drift.rows[0] == len(top)


def test_a_drift_score_flushes_first():
    _, monitor, _, accounting, _ = setup(max_pending_rows=1000)
    rng = np.random.default_rng(2)
    accounting.add(make_batch(rng, 10), 0.001, out(rng.dirichlet(np.ones(3), 10)))
    assert monitor.score().window_rows == 10
    assert monitor.task.predictions.counts.sum() == 10


def test_the_event_loop_counts_the_queue_every_flush_seconds():
    _, monitor, drift, accounting, _ = setup(max_pending_rows=1000, flush_seconds=0.2)
    rng = np.random.default_rng(4)
    accounting.add(make_batch(rng, 3), 0.001, out(rng.dirichlet(np.ones(3), 3)))
    assert monitor.task.predictions.counts.sum() == 0  # queued: counted 0.2 s after the last count
    time.sleep(0.25)
    accounting.add(make_batch(rng, 4), 0.001, out(rng.dirichlet(np.ones(3), 4)))  # counts both calls
    assert monitor.task.predictions.counts.sum() == 7 and drift.rows[0] == 7
    accounting.add(make_batch(rng, 5), 0.001, out(rng.dirichlet(np.ones(3), 5)))
    assert monitor.task.predictions.counts.sum() == 7  # just counted: queued again


def test_the_drift_thread_counts_an_idle_servers_queue():
    server, monitor, drift, accounting, _ = setup(max_pending_rows=1000)
    rng = np.random.default_rng(3)
    server.drift.start(interval=60.0)  # scores every minute, counts every second
    try:
        accounting.add(make_batch(rng, 7), 0.001, out(rng.dirichlet(np.ones(3), 7)))
        deadline = time.monotonic() + 5
        while monitor.task.predictions.counts.sum() < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert monitor.task.predictions.counts.sum() == 7 and drift.rows[0] == 7
        assert drift.latest is None  # counted, not scored
    finally:
        server.drift.stop()


def test_a_scrape_shows_the_latest_drift_report_and_reuses_its_text_until_the_next():
    server, monitor, drift, accounting, _ = setup(max_pending_rows=1000)
    rng = np.random.default_rng(5)
    accounting.add(make_batch(rng, 50), 0.001, out(rng.dirichlet(np.ones(3), 50)))
    window = 'modelmon_drift_window_rows{model="m",version="1"} '
    first = server.render().decode()
    assert window + "50.0" in first
    assert server.drift._rendered[("m", "1")][0] is drift.latest  # written for this report
    accounting.add(make_batch(rng, 30), 0.001, out(rng.dirichlet(np.ones(3), 30)))
    assert window + "50.0" in server.render().decode()  # same report until the next score
    monitor.score()
    assert window + "80.0" in server.render().decode()
