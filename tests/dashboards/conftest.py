"""A realistic monitored deployment for the dashboard tests, started once per session.

Two replicas of the ``shop`` model serve behind one Prometheus: one keeps its prediction
log and labels in a SQLite store, the other in a PostgreSQL schema. Each gets normal then
drifted traffic (a shifted numeric feature, an unseen category) and a few bad requests;
ground-truth labels go back for most predictions through ``/v2/models/shop/feedback``.
Both stores also get two finished training runs (``modelmon.start_run`` with per-epoch
``log_classification``), and one run stays active with live gauges that Prometheus scrapes;
its training loss ends as NaN, so the exported ``ModelmonTrainingLossNaN`` alert fires.
Prometheus loads the recording rules of ``modelmon rules export`` and the alert rules of
``modelmon alerts export``; drifted features make ``ModelmonFeatureDrift`` pending.

Both stores also get two finished runs of a regressor (``log_regression`` per epoch, with its
own loss) in the experiment ``REGRESSION_EXPERIMENT``: the regression learning curves' data.

A third server serves ``price``, a regressor (a ridge regression with a validation baseline
and a loss estimator), to shifted rows, and gets their true values back: the regression
panels' data.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest

from modelmon.stack.processes import free_port, stop_process
from modelmon.stack.prometheus import Prometheus
from tests.conftest import ServerProcess, start_server
from tests.tracking.conftest import postgres_schema

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "shared" / "grafana-schema"
EXPERIMENT = "shop-segments"
CLASSES = ["bronze", "gold", "silver"]


#: The experiment of the regressor's training runs (after EXPERIMENT in order, so the
#: dashboards' default experiment stays the classifier's), and its epochs.
REGRESSION_EXPERIMENT = "spend-epochs"
REGRESSION_EPOCHS = 5

#: The regressor's name, and how many rows it serves (all labelled).
REGRESSOR = "price"
REGRESSOR_ROWS = 400


@dataclass
class Stack:
    prometheus: Prometheus
    servers: list[ServerProcess]
    store_urls: dict[str, str]  # dialect -> store URL
    started: datetime
    live_runs: list
    #: The regressor's true and predicted values, in the order served.
    regression: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0))
    #: Per dialect, the regressor runs' (true, predicted) values: (run name, split, epoch) -> arrays.
    regression_runs: dict[str, dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)


def _price_data(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """A target whose noise grows with |x2| (so the expected error differs by row);
    ``shift`` moves x2 to where the model errs more."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(3)})
    frame["x2"] += shift
    frame["price"] = 20 + 3 * frame.x0 - 2 * frame.x1 + rng.normal(size=n) * (0.5 + 2 * np.abs(frame.x2))
    return frame


def _regressor_registry(root: Path) -> Path:
    from sklearn.linear_model import Ridge

    from modelmon.registry import register_model

    train, validation = _price_data(800, 1), _price_data(400, 2)
    model = Ridge().fit(train[["x0", "x1", "x2"]], train.price)
    register_model(model, name=REGRESSOR, reference=train, target="price", validation=validation, registry=root)
    return root


def _regression_traffic(server: ServerProcess) -> tuple[np.ndarray, np.ndarray]:
    """Shifted rows predicted, then every true value sent back; returns (true, predicted)."""
    rows = _price_data(REGRESSOR_ROWS, 3, shift=1.5)
    ids: list[str] = []
    predicted: list[float] = []
    for start in range(0, len(rows), 50):
        chunk = rows.iloc[start : start + 50][["x0", "x1", "x2"]]
        response = httpx.post(f"{server.url}/v1/models/{REGRESSOR}:predict", json={"instances": chunk.to_dict("records")}, timeout=30)
        assert response.status_code == 200, response.text
        ids += [p["id"] for p in response.json()["predictions"]]
        predicted += [p["prediction"] for p in response.json()["predictions"]]
    labels = [{"id": i, "label": float(y)} for i, y in zip(ids, rows.price, strict=True)]
    deadline = time.monotonic() + 30
    while labels:  # the prediction log writes asynchronously: unknown ids are retried
        response = httpx.post(f"{server.url}/v2/models/{REGRESSOR}/feedback", json={"labels": labels}, timeout=30)
        assert response.status_code == 200, response.text
        unknown = set(response.json()["unknown_ids"])
        labels = [label for label in labels if label["id"] in unknown]
        assert time.monotonic() < deadline or not labels, f"{len(labels)} predictions never reached the store"
        if labels:
            time.sleep(0.3)
    return rows.price.to_numpy(), np.array(predicted)


def _modelmon(*args: str) -> None:
    """A modelmon command, run in this process (as the compose's setup service does)."""
    from modelmon.cli import app

    assert app(list(args), standalone_mode=False) in (None, 0), args


def _drifted(frame: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    shifted = frame.copy()
    shifted["amount"] = shifted["amount"] * 1.8 + 20
    shifted["channel"] = rng.choice(["app", "kiosk", "store"], len(shifted), p=[0.3, 0.5, 0.2])
    return shifted


def _predict(url: str, rows: pd.DataFrame) -> list[tuple[str, str]]:
    response = httpx.post(f"{url}/v1/models/shop:predict", json={"instances": rows.to_dict("records")}, timeout=30)
    assert response.status_code == 200, response.text
    return [(p["id"], p["label"]) for p in response.json()["predictions"]]


def _traffic(server: ServerProcess, frame: pd.DataFrame, seed: int) -> list[tuple[str, str]]:
    """Normal rows, then drifted ones, 10 rows a request from 4 concurrent clients; returns
    (prediction id, true label) pairs."""
    features = frame.drop(columns="segment")
    live = pd.concat([features.iloc[:300], _drifted(features.iloc[300:600], seed)])
    truth = frame["segment"].tolist()
    chunks = [live.iloc[i : i + 10] for i in range(0, len(live), 10)]
    with ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda rows: _predict(server.url, rows), chunks))
    pairs = []
    for start, answer in zip(range(0, len(live), 10), answers, strict=True):
        pairs += [(pid, truth[start + i]) for i, (pid, _) in enumerate(answer)]
    # Bad requests: an unknown feature, a missing one, malformed JSON.
    bad = features.iloc[:2].to_dict("records")
    httpx.post(f"{server.url}/v1/models/shop:predict", json={"instances": [{**bad[0], "colour": "red"}]})
    httpx.post(f"{server.url}/v1/models/shop:predict", json={"instances": [{k: v for k, v in bad[1].items() if k != "items"}]})
    httpx.post(f"{server.url}/v1/models/shop:predict", content=b"{not json", headers={"content-type": "application/json"})
    return pairs


def _training_runs(store_url: str, frame: pd.DataFrame, live_port: int | None) -> object | None:
    """Two finished runs of SGD epochs (real metrics from log_classification); with
    ``live_port`` a third run stays active, its gauges on that port, its last training loss
    NaN."""
    from sklearn.linear_model import SGDClassifier
    from sklearn.preprocessing import StandardScaler

    import modelmon

    X = pd.get_dummies(frame.drop(columns="segment"), columns=["channel", "region"]).to_numpy(float)
    X = StandardScaler().fit_transform(X)
    y = frame["segment"].to_numpy()
    X_train, y_train, X_val, y_val = X[:450], y[:450], X[450:], y[450:]

    def train(run, alpha: float, epochs: int) -> None:
        model = SGDClassifier(loss="log_loss", alpha=alpha, random_state=0)
        for epoch in range(1, epochs + 1):
            model.partial_fit(X_train, y_train, classes=CLASSES)
            for split, Xs, ys in (("train", X_train, y_train), ("validation", X_val, y_val)):
                proba = model.predict_proba(Xs)
                loss = float(-np.mean(np.log(np.clip(proba[np.arange(len(ys)), np.searchsorted(CLASSES, ys)], 1e-12, 1))))
                run.log_classification(split, ys, model.predict(Xs), proba, loss=loss, step=epoch, labels=CLASSES)

    for name, alpha in (("alpha-1e-4", 1e-4), ("alpha-1e-2", 1e-2)):
        with modelmon.start_run(EXPERIMENT, name=name, params={"alpha": alpha, "loss": "log_loss"}, store=store_url) as run:
            train(run, alpha, 6)
    if live_port is None:
        return None
    live = modelmon.start_run(EXPERIMENT, name="diverging", params={"alpha": 10.0}, store=store_url,
                              live_port=live_port, flush_seconds=0.2)
    train(live, 10.0, 3)
    live.log_metrics({"loss": math.nan}, step=4, split="train")
    live.flush()
    return live


def _regression_runs(store_url: str) -> dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]]:
    """Two finished runs of SGD regression epochs, logged with log_regression and the squared
    error loss (half the mean squared error, SGDRegressor's); returns what each epoch predicted."""
    from sklearn.linear_model import SGDRegressor

    import modelmon

    train, validation = _price_data(300, 4), _price_data(150, 5)
    splits = {"train": train, "validation": validation}
    predicted: dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]] = {}
    for name, eta0 in (("eta-0.001", 0.001), ("eta-0.01", 0.01)):
        model = SGDRegressor(eta0=eta0, learning_rate="constant", random_state=0)
        with modelmon.start_run(REGRESSION_EXPERIMENT, name=name, params={"eta0": eta0}, store=store_url) as run:
            for epoch in range(1, REGRESSION_EPOCHS + 1):
                model.partial_fit(train[["x0", "x1", "x2"]].to_numpy(), train.price.to_numpy())
                for split, frame in splits.items():
                    y, p = frame.price.to_numpy(), model.predict(frame[["x0", "x1", "x2"]].to_numpy())
                    run.log_regression(split, y, p, loss=float(np.mean((y - p) ** 2) / 2), step=epoch)
                    predicted[(name, split, epoch)] = (y, p)
    return predicted


@pytest.fixture(scope="session")
def stack(registry_dir: Path, shop_frame: pd.DataFrame, tmp_path_factory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("dashboards")
    started = datetime.now(UTC)
    with postgres_schema() as pg_url:
        store_urls = {"sqlite": str(tmp / "store.db"), "postgresql": pg_url}
        servers: list[ServerProcess] = []
        live_runs = []
        regression_runs: dict[str, dict[tuple[str, str, int], tuple[np.ndarray, np.ndarray]]] = {}
        prometheus = None
        try:
            regressors = _regressor_registry(tmp / "regressors")
            with ThreadPoolExecutor(3) as pool:  # every replica starts at once
                starting = [pool.submit(start_server, registry_dir, tmp, "--model", "shop", "--store", store_urls[d],
                                        "--drain-seconds", "0", "--drift-score-seconds", "0.5") for d in ("sqlite", "postgresql")]
                starting.append(pool.submit(start_server, regressors, tmp, "--store", str(tmp / "price.db"),
                                            "--drain-seconds", "0", "--drift-score-seconds", "0.5"))
            servers += [f.result() for f in starting if f.exception() is None]
            for f in starting:
                if f.exception() is not None:
                    raise f.exception()
            live_port = free_port()
            _modelmon("rules", "export", str(tmp / "rules"), "--window", "1h")
            _modelmon("alerts", "export", str(tmp / "alerts"), "--no-alertmanager")
            rule_files = [*sorted((tmp / "rules").glob("*.rules.yml")), tmp / "alerts" / "prometheus" / "modelmon-alerts.rules.yml"]
            targets = [f"127.0.0.1:{s.port}" for s in servers] + [f"127.0.0.1:{live_port}"]
            prometheus = Prometheus.start(tmp / "prometheus", targets, rule_files=rule_files)
            for dialect, url in store_urls.items():
                run = _training_runs(url, shop_frame, live_port if dialect == "sqlite" else None)
                if run is not None:
                    live_runs.append(run)
                regression_runs[dialect] = _regression_runs(url)
            assert prometheus.wait_for('count(up{job="modelmon"} == 1)', 4, timeout=30) == 4

            regression = _regression_traffic(servers[2])
            for seed, server in enumerate(servers[:2]):
                pairs = _traffic(server, shop_frame, seed)
                labelled = [{"id": pid, "label": label} for pid, label in pairs[: int(len(pairs) * 0.7)]]
                response = httpx.post(f"{server.url}/v2/models/shop/feedback", json={"labels": labelled}, timeout=30)
                assert response.status_code == 200 and response.json()["matched"] == len(labelled), response.text

            # Wait until the rules have seen everything: both replicas' rows, labels, scores.
            rows = 2 * 600.0
            assert prometheus.wait_for('sum(model_version_feature:modelmon_feature_bin:increase1h{model="shop", feature="amount"})', rows, timeout=30) == rows
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                ready = (prometheus.query('model_version:modelmon_confusion:accuracy1h{model="shop"}')
                         and prometheus.query('ALERTS{alertstate="firing"}')
                         and prometheus.query('ALERTS{alertstate="pending"}')
                         and len(prometheus.query('modelmon_feature_drift{model="shop", method="psi"}')) >= 8
                         and prometheus.query(f'model_version:modelmon_regression_labelled:increase1h{{model="{REGRESSOR}"}} >= {REGRESSOR_ROWS}')
                         and prometheus.query(f'modelmon_prediction_drift{{model="{REGRESSOR}", output="value"}}'))
                if ready:
                    break
                time.sleep(0.5)
            time.sleep(2)  # a few more scrapes, so rate windows after the traffic hold samples
            yield Stack(prometheus, servers, store_urls, started, live_runs, regression, regression_runs)
        finally:
            for run in live_runs:
                run.end()
            if prometheus is not None:
                prometheus.stop()
            for server in servers:
                stop_process(server.process)
            from modelmon.store import close_store

            for url in store_urls.values():
                close_store(url)
