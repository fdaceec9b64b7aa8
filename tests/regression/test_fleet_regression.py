"""A regression model end to end on two replicas, one PostgreSQL store and one Prometheus.

Registered from Python (a scikit-learn pipeline with a text feature, served as its ONNX
graph), served by two ``modelmon serve`` processes that share the store; each replica
answers half the rows, and the true values are sent crosswise (each replica receives the
labels of the other's predictions, which it joins from the store). Checked against
scikit-learn on the same rows: each replica's label sums give the MAE, RMSE, R² and mean
error of the labels it received, and the recording rules over both replicas give those of
all rows; the estimate's sums are the loss estimator's expected errors of the rows served
(computed here, offline, from the version directory), per replica and pooled; prediction
drift is scored on the reference's prediction bins.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.compose import make_column_transformer
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from modelmon.registry import Registry, register_model
from modelmon.registry.loss_estimator import LossEstimator
from modelmon.rules.drift import dump_yaml
from modelmon.rules.regression import regression_rule_group
from modelmon.stack.processes import stop_process
from modelmon.stack.prometheus import Prometheus
from modelmon.types import FeatureBatch
from tests.conftest import start_server
from tests.tracking.conftest import postgres_schema

pytestmark = pytest.mark.slow

FEATURES = ["x0", "x1", "x2", "channel"]
SUMS = ("labelled", "error", "absolute_error", "squared_error", "target", "target_squared")


def data(n: int, seed: int) -> pd.DataFrame:
    """A price-like target whose noise grows with |x2| (so the expected error differs by row)."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(3)})
    frame["channel"] = rng.choice(["web", "app", "store"], n, p=[0.5, 0.3, 0.2])
    effect = frame.channel.map({"web": 0.0, "app": 4.0, "store": -2.0})
    frame["price"] = 20 + 3 * frame.x0 - 2 * frame.x1 + effect + rng.normal(size=n) * (0.5 + 2 * np.abs(frame.x2))
    return frame


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for s in family.samples:
            if s.labels.get("model") == "price":
                out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("model", "version"))))] = s.value
    return out


def sums(url: str) -> np.ndarray:
    values = scrape(url)
    return np.array([values[(f"modelmon_regression_{name}_total", ())] for name in SUMS])


def predict(url: str, rows: pd.DataFrame) -> tuple[list[str], np.ndarray]:
    ids, values = [], []
    for start in range(0, len(rows), 40):
        chunk = rows.iloc[start : start + 40][FEATURES]
        response = httpx.post(f"{url}/v1/models/price:predict", json={"instances": chunk.to_dict("records")}, timeout=30)
        assert response.status_code == 200, response.text
        for p in response.json()["predictions"]:
            assert set(p) == {"id", "prediction"}
            ids.append(p["id"])
            values.append(p["prediction"])
    return ids, np.array(values)


def send_labels(url: str, ids: list[str], truth: np.ndarray, timeout: float = 30.0) -> None:
    """Labels for predictions made by the other replica: retried until the prediction log has
    written every prediction to the shared store (unknown ids are not recorded)."""
    pending = dict(zip(ids, truth.tolist(), strict=True))
    deadline = time.monotonic() + timeout
    while pending:
        body = {"labels": [{"id": i, "label": y} for i, y in pending.items()]}
        response = httpx.post(f"{url}/v2/models/price/feedback", json=body, timeout=30)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["duplicate"] == 0
        pending = {i: pending[i] for i in answer["unknown_ids"]}
        if pending:
            assert time.monotonic() < deadline, f"{len(pending)} predictions never reached the store"
            time.sleep(0.3)


def metrics(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "mae": float(mean_absolute_error(truth, predicted)),
        "rmse": float(np.sqrt(mean_squared_error(truth, predicted))),
        "r2": float(r2_score(truth, predicted)),
        "bias": float(np.mean(predicted - truth)),
    }


def from_sums(s: np.ndarray) -> dict[str, float]:
    n, error, absolute, squared, target, target_squared = s
    return {"mae": absolute / n, "rmse": float(np.sqrt(squared / n)), "r2": 1 - squared / (target_squared - target**2 / n), "bias": error / n}


def hand_psi(reference: np.ndarray, counts: np.ndarray, eps: float = 1e-4) -> float:
    """PSI with both distributions smoothed by ``eps`` per bin (as tests/integration/test_fleet_drift.py)."""
    p = (reference + eps) / (1 + eps * len(counts))
    q = (counts / counts.sum() + eps) / (1 + eps * len(counts))
    return float(np.sum((q - p) * np.log(q / p)))


def test_two_replicas_regression_end_to_end(tmp_path):
    train, validation, live = data(1500, 1), data(600, 2), data(300, 3)
    model = make_pipeline(
        make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["channel"]), remainder="passthrough"),
        Ridge(),
    ).fit(train[FEATURES], train.price)
    registry = Registry(tmp_path / "registry")
    card = register_model(model, name="price", reference=train, target="price", validation=validation, registry=registry)
    assert card.signature.task == "regression" and card.runtime == "onnx", card.onnx_check
    assert card.baseline["mae"] == pytest.approx(mean_absolute_error(validation.price, model.predict(validation[FEATURES])), rel=1e-5)
    estimator = LossEstimator.load(registry.version_dir("price", card.version))
    assert estimator is not None

    rule_file = tmp_path / "regression.rules.yml"
    rule_file.write_text(dump_yaml({"groups": [regression_rule_group("1h")]}))
    with postgres_schema() as store:
        servers = [
            start_server(registry.root, tmp_path, "--store", store, "--drain-seconds", "0", "--drift-score-seconds", "0.2")
            for _ in range(2)
        ]
        prometheus = Prometheus.start(tmp_path / "prom", [f"127.0.0.1:{s.port}" for s in servers], rule_files=[rule_file])
        try:
            assert prometheus.wait_for('count(up{job="modelmon"} == 1)', 2) == 2
            # Every series present from zero, before any traffic.
            for server in servers:
                np.testing.assert_array_equal(sums(server.url), np.zeros(len(SUMS)))
                assert scrape(server.url)[("modelmon_regression_estimated_total", ())] == 0

            halves = [live.iloc[:150], live.iloc[150:]]
            answers = [predict(server.url, rows) for server, rows in zip(servers, halves, strict=True)]
            for (_, values), rows in zip(answers, halves, strict=True):
                np.testing.assert_allclose(values, model.predict(rows[FEATURES]), rtol=1e-5)

            # Each replica: the estimate's sums are the estimator's on the rows it served, and
            # its predictions are counted in the reference's prediction bins.
            reference = card.reference_profile.predicted_values
            for server, rows, (_, values) in zip(servers, halves, answers, strict=True):
                absolute, squared = estimator.expected_errors(FeatureBatch.from_frame(rows, card.signature), values)
                seen = scrape(server.url)
                assert seen[("modelmon_regression_estimated_total", ())] == len(rows)
                assert seen[("modelmon_regression_expected_absolute_error_total", ())] == pytest.approx(absolute.sum(), rel=1e-9)
                assert seen[("modelmon_regression_expected_squared_error_total", ())] == pytest.approx(squared.sum(), rel=1e-9)
                counts = np.bincount(np.searchsorted(reference.edges, values, side="right"), minlength=len(reference.bin_labels))
                bins = {label: seen[("modelmon_prediction_bin_total", (("bin", label),))] for label in reference.bin_labels}
                assert list(bins.values()) == counts.tolist()

            # Labels crosswise: replica 0 receives those of replica 1's predictions and back.
            before = [sums(server.url) for server in servers]
            for receiver, (ids, _), rows in ((servers[0], answers[1], halves[1]), (servers[1], answers[0], halves[0])):
                send_labels(receiver.url, ids, rows.price.to_numpy())
            for server, (_, values), rows, start in ((servers[0], answers[1], halves[1], before[0]),
                                                     (servers[1], answers[0], halves[0], before[1])):
                got = from_sums(sums(server.url) - start)
                for name, value in metrics(rows.price.to_numpy(), values).items():
                    assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name

            # The fleet, through Prometheus and the recording rules: every row.
            truth = live.price.to_numpy()
            predicted = np.concatenate([values for _, values in answers])
            expected = metrics(truth, predicted)
            n = prometheus.wait_for('model_version:modelmon_regression_labelled:increase1h{model="price"}', float(len(live)))
            assert n == len(live)
            assert prometheus.wait_for('model_version:modelmon_regression_estimated:increase1h{model="price"}', float(len(live))) == len(live)
            records = {
                "mae": "model_version:modelmon_regression_absolute_error:mean1h",
                "rmse": "model_version:modelmon_regression_squared_error:rootmean1h",
                "r2": "model_version:modelmon_regression_r2:1h",
                "bias": "model_version:modelmon_regression_error:mean1h",
            }
            for name, record in records.items():
                assert prometheus.scalar(f'{record}{{model="price"}}') == pytest.approx(expected[name], rel=1e-9), name
            absolute, squared = estimator.expected_errors(FeatureBatch.from_frame(live, card.signature), predicted)
            estimated_mae = prometheus.scalar('model_version:modelmon_regression_expected_absolute_error:mean1h{model="price"}')
            estimated_rmse = prometheus.scalar('model_version:modelmon_regression_expected_squared_error:rootmean1h{model="price"}')
            assert estimated_mae == pytest.approx(absolute.mean(), rel=1e-9)
            assert estimated_rmse == pytest.approx(np.sqrt(squared.mean()), rel=1e-9)
            # Same population as validation: the estimate is near the realized error.
            assert estimated_mae == pytest.approx(expected["mae"], rel=0.25)

            # Prediction drift, in process, on the prediction bins (output="value"): the PSI
            # of each replica's predictions against the validation predictions' shares.
            for server, (_, values) in zip(servers, answers, strict=True):
                counts = np.bincount(np.searchsorted(reference.edges, values, side="right"), minlength=len(reference.bin_labels))
                deadline = time.monotonic() + 10
                while scrape(server.url).get(("modelmon_drift_window_rows", ())) != len(values):
                    assert time.monotonic() < deadline, "the drift window never covered the rows served"
                    time.sleep(0.1)
                psi = scrape(server.url)[("modelmon_prediction_drift", (("method", "psi"), ("output", "value")))]
                assert psi == pytest.approx(hand_psi(np.array(reference.shares), counts.astype(float)), rel=1e-9)
        finally:
            prometheus.stop()
            for server in servers:
                stop_process(server.process)
