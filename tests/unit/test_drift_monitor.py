"""Reference profile, live accounting and windowed scores, against independent numpy /
scipy computations on the same rows, and the edge cases."""

import math
from itertools import pairwise

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from modelmon.monitoring import drift_stats
from modelmon.monitoring.accounting import FeatureAccountant
from modelmon.monitoring.drift import DriftMonitor, DriftSettings
from modelmon.registry.profile import ProfileSettings, build_profile, interval_labels
from modelmon.types import FeatureBatch, FeatureSpec, Signature

SIGNATURE = Signature(
    features=[
        FeatureSpec(name="x", dtype="float64", nullable=True),
        FeatureSpec(name="constant", dtype="float64", nullable=True),
        FeatureSpec(name="empty", dtype="float64", nullable=True),
        FeatureSpec(name="color", dtype="string", categories=["red", "green", "blue", "teal"], nullable=True),
    ],
    classes=["a", "b"],
    input_layout="columns",
)


def make_batch(x, constant, empty, color) -> FeatureBatch:
    numeric = np.column_stack([np.asarray(x, float), np.asarray(constant, float), np.asarray(empty, float)])
    return FeatureBatch(numeric=numeric, categorical=np.array(color, dtype=object).reshape(-1, 1))


@pytest.fixture
def reference():
    rng = np.random.default_rng(0)
    n = 5000
    colors = rng.choice(["red", "green", "blue", "teal"], n, p=[0.5, 0.3, 0.15, 0.05])
    return make_batch(rng.normal(10, 2, n), np.full(n, 3.0), np.full(n, np.nan), colors)


def monitor_for(reference, settings=None, clock=None, top=3):
    profile, sample = build_profile(SIGNATURE, reference, ProfileSettings(top_categories=top), None)
    accountant = FeatureAccountant(SIGNATURE, profile, ["m", "1"], recent_rows=4000, max_features=100)
    kwargs = {"clock": clock} if clock else {}
    monitor = DriftMonitor(accountant, sample, [], settings or DriftSettings(), **kwargs)
    return profile, accountant, monitor


def feed(monitor, batch):
    with monitor.lock:
        monitor.record(batch.n_rows)
        monitor.accountant.count(batch)


def test_profile_bins_are_reference_quantiles(reference):
    profile, _, _ = monitor_for(reference)
    x = profile.numeric[0]
    values = reference.numeric[:, 0]
    np.testing.assert_allclose(x.edges, np.quantile(values, np.arange(1, 10) / 10))
    assert x.shares == pytest.approx([0.1] * 10, abs=1e-3)
    assert x.mean == pytest.approx(values.mean()) and x.std == pytest.approx(values.std())
    assert (x.min, x.max) == (values.min(), values.max())
    assert len(set(x.bin_labels)) == 10 and x.bin_labels[0].startswith("(-inf")


def test_constant_and_all_missing_features(reference):
    profile, _, _ = monitor_for(reference)
    constant, empty = profile.numeric[1], profile.numeric[2]
    assert constant.edges == [3.0] and constant.shares == [0.0, 1.0]
    assert constant.bin_labels == ["(-inf, 3)", "[3, +inf)"]
    assert empty.edges == [] and empty.missing_share == 1.0 and empty.count == 0


def test_top_k_categories_and_other(reference):
    profile, _, _ = monitor_for(reference, top=3)
    color = profile.categorical[0]
    assert color.categories == ["red", "green", "blue"] and color.bin_labels[-1] == "other"
    counts = pd.Series(reference.categorical[:, 0]).value_counts(normalize=True)
    assert color.shares[:3] == pytest.approx([counts["red"], counts["green"], counts["blue"]])
    assert color.shares[3] == pytest.approx(counts["teal"])


def test_interval_labels_get_enough_digits_to_be_unique():
    labels = interval_labels(np.array([1.00001, 1.00002]))
    assert len(set(labels)) == 3 and "1.00001" in labels[1]


def test_accounting_equals_an_independent_histogram(reference):
    profile, accountant, monitor = monitor_for(reference)
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.normal(11, 2, 700), [np.nan] * 5, [-100.0, 1e9, np.inf]])
    n = len(x)
    colors = rng.choice(["red", "green", "teal", "mauve", None], n).tolist()
    batch = make_batch(x, np.full(n, 2.0), np.full(n, np.nan), colors)
    feed(monitor, make_batch(x[:100], np.full(100, 2.0), np.full(100, np.nan), colors[:100]))
    feed(monitor, make_batch(x[100:], np.full(n - 100, 2.0), np.full(n - 100, np.nan), colors[100:]))

    cells = accountant.bins.cell_labels
    counts = dict(zip(map(tuple, cells), accountant.bins.counts, strict=True))
    edges = np.concatenate([[-np.inf], profile.numeric[0].edges, [np.inf]])
    present = x[~np.isnan(x)]
    expected = [((present >= lo) & (present < hi)).sum() for lo, hi in pairwise(edges)]
    expected[-1] += (present == np.inf).sum()
    assert [counts[("x", b)] for b in profile.numeric[0].bin_labels] == expected
    assert counts[("constant", "(-inf, 3)")] == n and counts[("constant", "[3, +inf)")] == 0
    assert counts[("empty", "(-inf, +inf)")] == 0
    series = pd.Series(colors)
    assert counts[("color", "red")] == (series == "red").sum()
    assert counts[("color", "other")] == series.isin(["teal", "mauve"]).sum()

    missing = dict(zip((c[0] for c in accountant.missing.cell_labels), accountant.missing.counts, strict=True))
    unseen = dict(zip((c[0] for c in accountant.unseen.cell_labels), accountant.unseen.counts, strict=True))
    assert missing == {"x": 5, "constant": 0, "empty": n, "color": series.isna().sum()}
    # Outside the training range: for x at least -100, 1e9 and inf; every row of `constant`
    # (2 < 3); only the never-seen "mauve" for color ("teal" was seen, just not top-3).
    training = reference.numeric[:, 0]
    outside = ((present < training.min()) | (present > training.max())).sum()
    assert outside >= 3
    assert unseen == {"x": outside, "constant": n, "empty": 0, "color": (series == "mauve").sum()}
    assert batch.n_rows == n


def test_window_scores_equal_offline_scipy_on_the_same_rows(reference):
    settings = DriftSettings(min_rows=50, pvalue_max_rows=1000)
    profile, _accountant, monitor = monitor_for(reference, settings)
    rng = np.random.default_rng(2)
    x = rng.normal(10.5, 2, 600)
    colors = rng.choice(["red", "green", "blue"], 600, p=[0.3, 0.4, 0.3]).tolist()
    feed(monitor, make_batch(x, np.full(600, 3.0), np.full(600, np.nan), colors))
    report = monitor.report()
    assert report.sufficient and report.window_rows == 600

    edges = np.concatenate([[-np.inf], profile.numeric[0].edges, [np.inf]])
    live = np.histogram(x, edges)[0]
    scores = report.scores["x"]
    assert scores["psi"] == pytest.approx(drift_stats.psi(np.array(profile.numeric[0].shares), live), rel=1e-12)
    sample = np.sort(np.random.default_rng(0).choice(reference.numeric[:, 0], 1000, replace=False))
    assert scores["ks"] == pytest.approx(stats.ks_2samp(sample, x).pvalue, rel=1e-9)
    assert scores["wasserstein"] == pytest.approx(stats.wasserstein_distance(sample, x) / profile.numeric[0].std, rel=1e-9)
    assert report.verdict_method["x"] == "ks"

    color = profile.categorical[0]
    live_colors = [sum(c == k for c in colors) for k in ["red", "green", "blue"]] + [0]
    ref_counts = np.array(color.shares) * color.count
    expected = stats.chi2_contingency(np.vstack([ref_counts, live_colors])[:, :3], correction=False).pvalue
    assert report.scores["color"]["chi2_pvalue"] == pytest.approx(expected, rel=1e-9)
    assert report.drifted["color"] is True  # 50/30/15 against 30/40/30 on 600 rows
    assert "empty" not in report.drifted  # all missing: no verdict either way
    assert report.scores["empty"]["psi"] != report.scores["empty"]["psi"]  # NaN


def test_large_windows_use_psi_and_do_not_flag_a_stationary_feature(reference):
    _, _, monitor = monitor_for(reference, DriftSettings(min_rows=10, pvalue_max_rows=1000))
    rng = np.random.default_rng(3)
    n = 20000
    colors = rng.choice(["red", "green", "blue", "teal"], n, p=[0.5, 0.3, 0.15, 0.05]).tolist()
    feed(monitor, make_batch(rng.normal(10, 2, n), np.full(n, 3.0), np.full(n, np.nan), colors))
    report = monitor.report()
    assert report.verdict_method["x"] == "psi" and report.verdict_method["color"] == "psi"
    assert report.drifted["x"] is False and report.drifted["color"] is False
    assert "ks" not in report.scores["x"]


def test_insufficient_data_below_the_minimum_and_sufficient_exactly_at_it(reference):
    _, _, monitor = monitor_for(reference, DriftSettings(min_rows=5))
    feed(monitor, make_batch([10.0] * 4, [3.0] * 4, [np.nan] * 4, ["red"] * 4))
    report = monitor.report()
    assert not report.sufficient and report.scores == {} and math.isnan(report.drift_share)
    feed(monitor, make_batch([10.0], [3.0], [np.nan], ["red"]))
    assert monitor.report().sufficient


def test_single_row_window_with_min_rows_one(reference):
    _, _, monitor = monitor_for(reference, DriftSettings(min_rows=1))
    feed(monitor, make_batch([10.0], [3.0], [np.nan], ["red"]))
    report = monitor.report()
    assert report.window_rows == 1 and math.isfinite(report.scores["x"]["psi"])


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_old_rows_leave_the_time_window(reference):
    clock = FakeClock()
    settings = DriftSettings(window_seconds=60, snapshot_seconds=10, min_rows=1)
    _, _, monitor = monitor_for(reference, settings, clock)
    for _ in range(12):  # 12 batches of 10 rows, 10 s apart: 120 s of traffic
        feed(monitor, make_batch([10.0] * 10, [3.0] * 10, [np.nan] * 10, ["red"] * 10))
        clock.now += 10
    rows = monitor.report().window_rows
    assert 60 <= rows <= 70  # the last 60 s, to a snapshot's precision


def test_row_window_takes_the_newest_stretch_with_enough_rows(reference):
    clock = FakeClock()
    settings = DriftSettings(window_seconds=3600, window_rows=25, snapshot_seconds=1, min_rows=1)
    _, _, monitor = monitor_for(reference, settings, clock)
    for _ in range(10):
        feed(monitor, make_batch([10.0] * 10, [3.0] * 10, [np.nan] * 10, ["red"] * 10))
        clock.now += 5
    assert monitor.report().window_rows == 30


def test_prediction_drift_compares_window_outputs_with_the_validation_outputs(reference):
    from modelmon.monitoring.metrics import ServerMetrics
    from modelmon.monitoring.monitor import MonitorSettings, VersionMonitor
    from modelmon.registry.profile import CONFIDENCE_BUCKETS, prediction_profile
    from modelmon.types import ModelOutput

    rng = np.random.default_rng(4)
    validation_proba = rng.dirichlet([4, 1], 2000)  # mostly class "a"
    prediction = prediction_profile(validation_proba, CONFIDENCE_BUCKETS)
    profile, sample = build_profile(SIGNATURE, reference, ProfileSettings(), prediction)
    server = ServerMetrics()
    version = VersionMonitor(
        server, model="m", version="1", flavor="sklearn", signature=SIGNATURE, profile=profile,
        reference_sample=sample, settings=MonitorSettings(drift=DriftSettings(min_rows=10)),
    )
    monitor = version.drift

    live_proba = rng.dirichlet([1, 3], 500)  # mostly class "b": the outputs drifted
    top = live_proba.argmax(axis=1)
    confidence = live_proba.max(axis=1)
    with monitor.lock:
        monitor.record(500)
        version.task.count(ModelOutput.from_probabilities(live_proba))
        monitor.accountant.count(make_batch(rng.normal(10, 2, 500), [3.0] * 500, [np.nan] * 500, ["red"] * 500))
    report = monitor.report()
    live_classes = np.bincount(top, minlength=2)
    assert report.prediction["class"]["psi"] == pytest.approx(drift_stats.psi(np.array(prediction.class_shares), live_classes))
    assert report.prediction["class"]["psi"] > 0.2
    edges = np.array(CONFIDENCE_BUCKETS)
    live_confidence = np.bincount(np.searchsorted(edges, confidence, side="left"), minlength=len(edges) + 1)
    expected = drift_stats.js_distance(np.array(prediction.confidence_shares), live_confidence)
    assert report.prediction["confidence"]["js"] == pytest.approx(expected)
    # The reference class shares are exported for dashboards.
    assert 'modelmon_reference_class_ratio{model="m",version="1",class="a"}' in server.arrays.render()


@pytest.mark.parametrize("rows", [1, 7, 64, 5000])
def test_counts_equal_a_row_by_row_count(reference, rows):
    """FeatureAccountant.count (edge-rank counting for small batches, binary search for large
    ones, distinct-value counting for categories) against a plain loop over the rows."""
    profile, accountant, _ = monitor_for(reference)
    rng = np.random.default_rng(rows)
    x = rng.normal(10, 3, rows)
    x[rng.random(rows) < 0.1] = np.nan
    if rows > 2:
        x[:3] = [np.inf, -np.inf, profile.numeric[0].edges[4]]  # an exact edge goes to the bin above
    color = rng.choice(np.array(["red", "green", "blue", "teal", "violet", None], dtype=object), rows)
    # `empty` had no values in training (no range): each live value is unseen, once.
    empty = np.where(rng.random(rows) < 0.5, np.nan, rng.normal(size=rows))
    batch = make_batch(x, np.full(rows, 3.0), empty, color)
    accountant.count(batch)
    expected = np.zeros(len(accountant.bins.counts))
    missing = np.zeros(4)
    unseen = np.zeros(4)
    cell = {tuple(c): i for i, c in enumerate(accountant.bins.cell_labels)}
    for r in range(rows):
        for f, p in enumerate(profile.numeric):
            value = batch.numeric[r, f]
            if math.isnan(value):
                missing[f] += 1
                continue
            expected[cell[(p.name, p.bin_labels[sum(value >= e for e in p.edges)])]] += 1
            low, high = p.min if p.min is not None else math.inf, p.max if p.max is not None else -math.inf
            unseen[f] += value < low or value > high
        value = color[r]
        p = profile.categorical[0]
        if value is None:
            missing[3] += 1
            continue
        expected[cell[(p.name, value if value in p.categories else p.bin_labels[-1])]] += 1
        unseen[3] += value not in SIGNATURE.features[3].categories
    np.testing.assert_array_equal(accountant.bins.counts, expected)
    np.testing.assert_array_equal(accountant.missing.counts, missing)
    np.testing.assert_array_equal(accountant.unseen.counts, unseen)
