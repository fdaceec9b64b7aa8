"""Bulk counting gives the counts that counting each call at once would, and flushes when
it should: by rows, by age, and before anything reads the counts."""

from __future__ import annotations

import numpy as np
import pytest

from modelmon.monitoring.batch_accounting import BatchAccounting
from modelmon.monitoring.drift import DriftSettings
from modelmon.monitoring.metrics import ServerMetrics
from modelmon.monitoring.profile import ProfileSettings, build_profile
from modelmon.registry.signature import FeatureBatch, FeatureSpec, Signature

SIGNATURE = Signature(
    features=[FeatureSpec(name="x", dtype="float64", nullable=True),
              FeatureSpec(name="c", dtype="string", categories=["u", "v"], nullable=True)],
    classes=["a", "b", "c"],
    input_layout="columns",
)  # fmt: skip


def make_batch(rng: np.random.Generator, n: int) -> FeatureBatch:
    return FeatureBatch(
        numeric=rng.normal(size=(n, 1)), categorical=rng.choice(np.array(["u", "v", "w"], dtype=object), (n, 1))
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def setup(flush_rows: int, clock: Clock):
    rng = np.random.default_rng(0)
    profile, sample = build_profile(SIGNATURE, make_batch(rng, 2000), ProfileSettings(), None)
    server = ServerMetrics()
    bound = server.bind("m", "1", "sklearn", ["a", "b", "c"])
    drift = server.bind_drift(bound, SIGNATURE, profile, sample, DriftSettings(min_rows=1))
    accounting = BatchAccounting(bound, drift, None, flush_rows=flush_rows, flush_seconds=1.0, clock=clock)
    server.flushers[("m", "1")] = accounting.flush
    drift.before_report = accounting.flush
    return server, bound, drift, accounting, profile


def test_bulk_counts_equal_per_call_counts_and_flush_by_rows_and_age():
    clock = Clock()
    server, bound, drift, accounting, profile = setup(flush_rows=100, clock=clock)
    rng = np.random.default_rng(1)
    calls = [(make_batch(rng, n), rng.dirichlet(np.ones(3), n)) for n in (1, 5, 30, 1, 64, 2)]
    for batch, proba in calls[:3]:  # 36 rows: under 100, under a second
        accounting.add(batch, 0.001, proba)
    assert bound.predictions.counts.sum() == 0 and drift.rows[0] == 0  # queued
    clock.now = 1.5  # the oldest queued call is now over a second old: this add flushes
    accounting.add(*calls[3][:1], 0.001, calls[3][1])
    assert bound.predictions.counts.sum() == 37 and drift.rows[0] == 37
    accounting.add(calls[4][0], 0.001, calls[4][1])  # 64 rows: still queued
    assert bound.predictions.counts.sum() == 37
    accounting.add(calls[5][0], 0.001, calls[5][1])  # 66 rows: still queued
    text = server.render().decode()  # a scrape counts the queue first
    assert 'modelmon_predictions_total{model="m",version="1",class="a"}' in text
    proba = np.concatenate([p for _, p in calls])
    top = proba.argmax(axis=1)
    np.testing.assert_array_equal(bound.predictions.counts, np.bincount(top, minlength=3))
    assert bound.confidence.bucket_counts.sum() == len(top)
    assert bound.confidence.sum == pytest.approx(proba.max(axis=1).sum())
    # The drift bins hold every row, as one count of all the rows would.
    other = ServerMetrics()
    reference = other.bind_drift(other.bind("m", "1", "sklearn", ["a", "b", "c"]), SIGNATURE, profile, {}, DriftSettings()).accountant
    reference.count(FeatureBatch.concat([b for b, _ in calls]))
    np.testing.assert_array_equal(drift.accountant.bins.counts, reference.bins.counts)
    np.testing.assert_array_equal(drift.accountant.unseen.counts, reference.unseen.counts)
    assert drift.rows[0] == len(top)


def test_a_drift_score_flushes_first():
    clock = Clock()
    _, bound, drift, accounting, _ = setup(flush_rows=1000, clock=clock)
    rng = np.random.default_rng(2)
    accounting.add(make_batch(rng, 10), 0.001, rng.dirichlet(np.ones(3), 10))
    assert drift.report().window_rows == 10
    assert bound.predictions.counts.sum() == 10
