"""The label-free error estimate of regression models (registry.loss_estimator), on data where
each row's expected error is known in closed form.

The truth: y = 2 x1 + sigma(row) * e with e standard normal, and the model predicts 2 x1
exactly, so a row's error is sigma * e: E|error| = sigma * sqrt(2 / pi) and E[error**2] =
sigma**2. sigma depends on a numeric feature with missing values and on a text feature with
missing values, so the estimate has to read both."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelmon.errors import RegistryError
from modelmon.registry.loss_estimator import MIN_ROWS, LossEstimator, _encode, _split
from modelmon.types import FeatureBatch, FeatureSpec, ModelOutput, Signature, Task

SIGNATURE = Signature(
    features=[FeatureSpec(name="x1", dtype="float64"), FeatureSpec(name="x2", dtype="float64", nullable=True),
              FeatureSpec(name="channel", dtype="string", categories=["a", "b", "c"], nullable=True)],
    task=Task.REGRESSION, input_layout="columns",
)


def make_rows(rng: np.random.Generator, n: int) -> tuple[FeatureBatch, np.ndarray, np.ndarray, np.ndarray]:
    """Features, the model's prediction, the target, and each row's sigma."""
    x = rng.normal(size=(n, 2))
    x[rng.random(n) < 0.1, 1] = np.nan
    channel = rng.choice(np.array(["a", "b", "c"], dtype=object), n)
    channel[rng.random(n) < 0.05] = None
    sigma = 0.3 + 0.7 * np.abs(np.nan_to_num(x[:, 1], nan=2.0)) + 1.0 * (channel == "a")
    predicted = 2 * x[:, 0]
    target = predicted + sigma * rng.normal(size=n)
    return FeatureBatch(numeric=x, categorical=channel[:, None]), predicted, target, sigma


@pytest.fixture(scope="module")
def fitted() -> LossEstimator:
    features, predicted, target, _ = make_rows(np.random.default_rng(0), 3000)
    return LossEstimator.fit(features, predicted, target, SIGNATURE)


def test_the_estimate_follows_the_known_error_and_survives_a_round_trip(fitted: LossEstimator, tmp_path: Path):
    assert fitted.kind == "trees"
    for name in ("absolute", "squared"):
        # The served ONNX graph and the numpy walk both reproduced scikit-learn at fit.
        assert fitted.diagnostics[name]["onnx_vs_sklearn_max_relative"] < 1e-5
        assert fitted.diagnostics[name]["numpy_vs_sklearn_max_relative"] < 1e-5

    features, predicted, _, sigma = make_rows(np.random.default_rng(1), 4000)
    absolute, squared = fitted.expected_errors(features, predicted)
    true_absolute, true_squared = sigma * np.sqrt(2 / np.pi), sigma**2
    # A window's estimated MAE and RMSE: the mean of the rows' estimates, against the truth.
    assert absolute.mean() == pytest.approx(true_absolute.mean(), rel=0.04)
    assert np.sqrt(squared.mean()) == pytest.approx(np.sqrt(true_squared.mean()), rel=0.05)
    # Per row, far closer to the truth than the constant reference error is.
    constant = np.full_like(true_absolute, fitted.reference[0])
    assert np.mean(np.abs(absolute - true_absolute)) < 0.4 * np.mean(np.abs(constant - true_absolute))
    # A sub-population whose error is larger (channel a, sigma + 1) is seen as such.
    a = features.categorical[:, 0] == "a"
    assert absolute[a].mean() == pytest.approx(true_absolute[a].mean(), rel=0.06)
    assert absolute[~a].mean() == pytest.approx(true_absolute[~a].mean(), rel=0.06)
    # Missing x2 (sigma uses 2.0 for it) is read as its own case.
    missing = np.isnan(features.numeric[:, 1])
    assert absolute[missing].mean() == pytest.approx(true_absolute[missing].mean(), rel=0.1)

    # A level never seen at fit and a missing level are served (as missing).
    unseen = FeatureBatch(numeric=features.numeric[:3], categorical=np.array([["zzz"], [None], ["b"]], dtype=object))
    assert np.isfinite(np.concatenate(fitted.expected_errors(unseen, predicted[:3]))).all()

    # ONNX (served) against the numpy walk of the same arrays, on new rows.
    codes, plain = _split(_encode(features, predicted, fitted.levels), len(fitted.levels))
    assert fitted.absolute is not None
    np.testing.assert_allclose(fitted.absolute.predict(codes, plain), fitted.absolute.walk(codes, plain), rtol=1e-5)

    fitted.save(tmp_path)
    loaded = LossEstimator.load(tmp_path)
    assert loaded is not None and loaded.kind == "trees" and loaded.levels == fitted.levels
    again = loaded.expected_errors(features, predicted)
    np.testing.assert_array_equal(again[0], absolute)
    np.testing.assert_array_equal(again[1], squared)
    assert LossEstimator.load(tmp_path / "elsewhere") is None


def test_serving_imports_neither_scikit_learn_nor_pandas(fitted: LossEstimator, tmp_path: Path):
    fitted.save(tmp_path)
    code = (
        "import sys, numpy as np\n"
        "from modelmon.registry.loss_estimator import LossEstimator\n"
        "from modelmon.types import FeatureBatch\n"
        f"e = LossEstimator.load(__import__('pathlib').Path({str(tmp_path)!r}))\n"
        "b = FeatureBatch(numeric=np.array([[0.5, np.nan]]), categorical=np.array([['a']], dtype=object))\n"
        "a, s = e.expected_errors(b, np.array([1.0]))\n"
        "assert a[0] > 0 and s[0] > 0\n"
        "print(sorted(m for m in ('sklearn', 'pandas') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_small_or_constant_data_falls_back_to_the_reference_error(tmp_path: Path):
    rng = np.random.default_rng(2)
    features, predicted, target, _ = make_rows(rng, MIN_ROWS - 1)
    small = LossEstimator.fit(features, predicted, target, SIGNATURE)
    assert small.kind == "constant" and "rows" in small.diagnostics["reason"]
    absolute, squared = small.expected_errors(features, predicted)
    error = predicted - target
    np.testing.assert_allclose(absolute, np.abs(error).mean())
    np.testing.assert_allclose(squared, (error**2).mean())
    small.save(tmp_path)
    loaded = LossEstimator.load(tmp_path)
    assert loaded is not None and loaded.kind == "constant"
    np.testing.assert_array_equal(loaded.expected_errors(features, predicted)[0], absolute)

    # A constant target predicted exactly: every error is 0, and so is the estimate.
    features, _, _, _ = make_rows(rng, 500)
    exact = LossEstimator.fit(features, np.full(500, 3.0), np.full(500, 3.0), SIGNATURE)
    assert exact.kind == "constant"
    assert exact.expected_errors(features, np.full(500, 3.0))[0].max() == 0.0


def test_bad_fit_data_is_refused_with_the_reason():
    features, predicted, target, _ = make_rows(np.random.default_rng(3), 300)
    target[5] = np.nan
    with pytest.raises(RegistryError, match="finite target"):
        LossEstimator.fit(features, predicted, target, SIGNATURE)
    with pytest.raises(RegistryError, match="300 rows of features, 299 predictions"):
        LossEstimator.fit(features, predicted[:-1], np.zeros(300), SIGNATURE)
    narrow = FeatureBatch(numeric=features.numeric[:, :1], categorical=features.categorical)
    with pytest.raises(RegistryError, match="signature has 2 and 1"):
        LossEstimator.fit(narrow, predicted, np.zeros(300), SIGNATURE)
    empty = FeatureBatch(numeric=np.zeros((0, 2)), categorical=np.zeros((0, 1), dtype=object))
    with pytest.raises(RegistryError, match="got none"):
        LossEstimator.fit(empty, np.zeros(0), np.zeros(0), SIGNATURE)


def test_many_rows_are_sampled_for_the_trees(monkeypatch: pytest.MonkeyPatch):
    from modelmon.registry import loss_estimator

    monkeypatch.setattr(loss_estimator, "MAX_FIT_ROWS", 400)
    features, predicted, target, _ = make_rows(np.random.default_rng(4), 600)
    estimator = LossEstimator.fit(features, predicted, target, SIGNATURE)
    assert estimator.kind == "trees" and estimator.diagnostics["rows"] == 400
    # The reference error is still every row's.
    assert estimator.reference[0] == pytest.approx(np.abs(predicted - target).mean(), rel=1e-12)


def test_the_event_loop_leaves_the_estimate_to_the_scrape_and_the_scorer(fitted: LossEstimator):
    """The request path's counting (every 0.1 s on the event loop) bins the predictions but
    leaves the estimate pending; a scrape (in its own thread) and the drift scorer's tick
    settle it, and the sums then equal the estimator's own per-row values summed."""
    from modelmon.monitoring.metrics import ServerMetrics
    from modelmon.monitoring.monitor import VersionMonitor

    server = ServerMetrics()
    monitor = VersionMonitor(server, model="r", version="1", flavor="sklearn", signature=SIGNATURE,
                             loss_estimator=fitted)
    assert monitor.accounting is not None
    monitor.accounting.flush_seconds = 0.0  # every call is counted at once, as under traffic
    rng = np.random.default_rng(7)
    calls = [make_rows(rng, n)[:2] for n in (1, 3, 40)]
    calls.append((FeatureBatch(numeric=np.zeros((1, 2)), categorical=np.array([["a"]], dtype=object)), np.array([np.nan])))
    for features, predicted in calls:
        monitor.observe(features, 0.001, ModelOutput.from_values(predicted), [0.0])
    task = monitor.task
    assert task.bins.counts.sum() == 44  # counted at once: every row but the NaN prediction is binned
    assert task.estimated.counts[0] == 0 and task.expected_absolute.counts[0] == 0  # the estimate waits

    monitor.settle()  # the drift scorer's tick
    absolute, squared = (np.concatenate([fitted.expected_errors(f, p)[i] for f, p in calls]) for i in (0, 1))
    finite = np.isfinite(absolute) & np.isfinite(squared)
    assert task.estimated.counts[0] == finite.sum() >= 44
    np.testing.assert_allclose(task.expected_absolute.counts[0], absolute[finite].sum(), rtol=1e-12)
    np.testing.assert_allclose(task.expected_squared.counts[0], squared[finite].sum(), rtol=1e-12)

    more = make_rows(rng, 5)[:2]
    monitor.observe(*more[:1], 0.001, ModelOutput.from_values(more[1]), [0.0])
    text = server.render().decode()  # a scrape settles before it writes
    assert f'modelmon_regression_estimated_total{{model="r",version="1"}} {finite.sum() + 5:.1f}' in text
    np.testing.assert_allclose(task.expected_absolute.counts[0], absolute[finite].sum() + fitted.expected_errors(*more)[0].sum(),
                               rtol=1e-12)


def test_a_saturated_event_loop_settles_the_estimate_when_it_counts(fitted: LossEstimator):
    """Once a counted group holds a model call that served several requests (they queued
    behind the model: the loop is saturated), the loop's own count settles the estimate,
    the rows left by earlier one-request calls included; the scorer then finds nothing
    left, and the sums equal the estimator's per-row values, each row once."""
    from modelmon.monitoring.metrics import ServerMetrics
    from modelmon.monitoring.monitor import VersionMonitor

    server = ServerMetrics()
    monitor = VersionMonitor(server, model="r", version="1", flavor="sklearn", signature=SIGNATURE,
                             loss_estimator=fitted)
    assert monitor.accounting is not None
    monitor.accounting.flush_seconds = 0.0  # every call is counted at once, as under traffic
    rng = np.random.default_rng(9)
    calls = [make_rows(rng, n)[:2] for n in (1, 2, 3)]
    task = monitor.task
    for features, predicted in calls[:2]:  # one request per call: left to the scorer
        monitor.observe(features, 0.001, ModelOutput.from_values(predicted), [0.0])
    assert task.bins.counts.sum() == 3 and task.estimated.counts[0] == 0
    features, predicted = calls[2]  # one call, three one-row requests
    monitor.observe(features, 0.001, ModelOutput.from_values(predicted), [0.0, 0.0001, 0.0002])
    absolute, squared = (np.concatenate([fitted.expected_errors(f, p)[i] for f, p in calls]) for i in (0, 1))
    assert task.estimated.counts[0] == 6
    np.testing.assert_allclose(task.expected_absolute.counts[0], absolute.sum(), rtol=1e-12)
    np.testing.assert_allclose(task.expected_squared.counts[0], squared.sum(), rtol=1e-12)
    monitor.settle()  # the scorer's tick: nothing left, nothing counted twice
    assert task.estimated.counts[0] == 6


def test_a_long_queue_is_estimated_in_parts_each_row_once(fitted: LossEstimator, monkeypatch: pytest.MonkeyPatch):
    """What the scorer settles after a backlog is estimated in parts of about SETTLE_ROWS rows
    (a large estimate costs more per row); every row is still counted once, and the sums
    equal the estimator's per-row values over all the rows."""
    from modelmon.monitoring import tasks
    from modelmon.monitoring.metrics import ServerMetrics
    from modelmon.monitoring.monitor import VersionMonitor

    monkeypatch.setattr(tasks, "SETTLE_ROWS", 50)
    server = ServerMetrics()
    monitor = VersionMonitor(server, model="r", version="1", flavor="sklearn", signature=SIGNATURE,
                             loss_estimator=fitted)
    assert monitor.accounting is not None
    monitor.accounting.flush_seconds = 0.0  # each call its own group
    rng = np.random.default_rng(11)
    calls = [make_rows(rng, n)[:2] for n in (7, 30, 1, 120, 13, 64, 2, 2, 49, 5)]
    for features, predicted in calls:
        monitor.observe(features, 0.001, ModelOutput.from_values(predicted), [0.0])
    parts: list[int] = []
    estimate = fitted.expected_errors
    monkeypatch.setattr(fitted, "expected_errors", lambda f, p: (parts.append(len(p)), estimate(f, p))[1])
    monitor.settle()
    assert sum(parts) == 293 and len(parts) > 1 and max(parts) < 50 + 120
    absolute, squared = (np.concatenate([estimate(f, p)[i] for f, p in calls]) for i in (0, 1))
    task = monitor.task
    assert task.estimated.counts[0] == 293
    np.testing.assert_allclose(task.expected_absolute.counts[0], absolute.sum(), rtol=1e-12)
    np.testing.assert_allclose(task.expected_squared.counts[0], squared.sum(), rtol=1e-12)
    monitor.settle()  # nothing left: nothing counted twice
    assert task.estimated.counts[0] == 293


def test_numeric_only_rows_are_augmented_once_for_both_models():
    """Without categorical features both models read the same augmented rows (built once):
    the estimate equals each model's own ``predict``, and its numpy walk."""
    signature = Signature(features=[FeatureSpec(name="x1", dtype="float64"), FeatureSpec(name="x2", dtype="float64", nullable=True)],
                          task=Task.REGRESSION, input_layout="columns")
    features, predicted, target, _ = make_rows(np.random.default_rng(3), 1500)
    numeric = FeatureBatch(numeric=features.numeric, categorical=np.empty((1500, 0), dtype=object))
    estimator = LossEstimator.fit(numeric, predicted, target, signature)
    assert estimator.kind == "trees" and estimator.absolute is not None and estimator.squared is not None
    assert not estimator.absolute.cat_feature.size and not estimator.squared.cat_feature.size
    absolute, squared = estimator.expected_errors(numeric, predicted)
    codes, plain = _split(_encode(numeric, predicted, estimator.levels), 0)
    np.testing.assert_array_equal(absolute, estimator.absolute.predict(codes, plain))
    np.testing.assert_array_equal(squared, estimator.squared.predict(codes, plain))
    np.testing.assert_allclose(squared, estimator.squared.walk(codes, plain), rtol=1e-5)
    assert not np.array_equal(absolute, squared)


@pytest.mark.parametrize("missing", [True, False])
def test_augmented_rows_are_the_documented_layout(fitted: LossEstimator, missing: bool):
    """``_augment`` (written in place since issue 18) against the class's definition, built
    independently: each numeric column and the prediction with missing as +inf, again with
    missing as -inf, then each categorical split's 0/1 from its lookup table."""
    features, predicted, _, _ = make_rows(np.random.default_rng(11), 400)
    if not missing:
        features = FeatureBatch(numeric=np.nan_to_num(features.numeric, nan=0.5), categorical=features.categorical)
    assert fitted.absolute is not None and fitted.absolute.cat_feature.size  # the text feature is split on
    trees = fitted.absolute
    codes, plain = _split(_encode(features, predicted, fitted.levels), len(fitted.levels))
    assert np.isnan(plain).any() == missing
    expected = np.column_stack(
        [np.where(np.isnan(plain), np.inf, plain), np.where(np.isnan(plain), -np.inf, plain)]
        + [trees.cat_lut[s, codes[:, f]] for s, f in enumerate(trees.cat_feature.tolist())]
    )
    augmented = trees._augment(codes, plain)
    np.testing.assert_array_equal(augmented, expected)
    assert augmented.flags.c_contiguous
