"""The quality alerts on the real exporter: labels sent back through the feedback endpoint
make ModelmonAccuracyBelowBaseline and ModelmonF1BelowBaseline fire in a real Prometheus,
with the values scikit-learn gives on the same labels."""

from __future__ import annotations

import time

import httpx
import pytest
from sklearn.metrics import accuracy_score, f1_score

from modelmon.alerting.config import parse_config
from modelmon.alerting.export import export
from modelmon.stack.processes import stop_process
from modelmon.stack.prometheus import Prometheus
from tests.alerting.conftest import require
from tests.conftest import start_server

pytestmark = pytest.mark.slow
CLASSES = ["bronze", "gold", "silver"]


def firing(prometheus_url: str) -> dict[str, dict]:
    alerts = httpx.get(f"{prometheus_url}/api/v1/alerts").json()["data"]["alerts"]
    return {a["labels"]["alertname"]: a for a in alerts if a["state"] == "firing"}


def test_realized_quality_alerts_fire_with_scikit_learn_values(registry_dir, shop_frame, tmp_path):
    require("prometheus")
    config = parse_config({"builtins": {"override_for": "1s", "realized_quality": {"window": "5m", "min_labels": 50}}})
    result = export(config, tmp_path / "out", alertmanager_files=False)
    server = start_server(registry_dir, tmp_path, "--model", "shop", "--drain-seconds", "0", "--store", str(tmp_path / "store.db"))
    prometheus = Prometheus.start(tmp_path / "prometheus", [f"127.0.0.1:{server.port}"], rule_files=result.rule_files,
                                  evaluation_interval="1s")
    try:
        assert prometheus.wait_for('up{job="modelmon"}', 1, timeout=20) == 1
        time.sleep(2)  # a scrape with every confusion cell at zero, before the first label
        rows = shop_frame.drop(columns="segment").iloc[:120]
        response = httpx.post(f"{server.url}/v1/models/shop:predict", json={"instances": rows.to_dict("records")})
        predictions = response.json()["predictions"]
        predicted = [p["label"] for p in predictions]
        # Two in five labels agree with the prediction; the rest name another class.
        labels = [y if i % 5 < 2 else CLASSES[(CLASSES.index(y) + 1) % 3] for i, y in enumerate(predicted)]
        sent = httpx.post(f"{server.url}/v2/models/shop/feedback",
                          json={"labels": [{"id": p["id"], "label": y} for p, y in zip(predictions, labels, strict=True)]})
        assert sent.json()["matched"] == 120, sent.text
        deadline = time.monotonic() + 30
        alerts: dict[str, dict] = {}
        while time.monotonic() < deadline:
            alerts = firing(prometheus.url)
            if {"ModelmonAccuracyBelowBaseline", "ModelmonF1BelowBaseline"} <= set(alerts):
                break
            time.sleep(0.5)
    finally:
        prometheus.stop()
        stop_process(server.process)
    assert {"ModelmonAccuracyBelowBaseline", "ModelmonF1BelowBaseline"} <= set(alerts), list(alerts)
    accuracy = alerts["ModelmonAccuracyBelowBaseline"]
    assert accuracy["labels"] | {"model": "shop", "version": "1", "severity": "warning"} == accuracy["labels"]
    assert float(accuracy["value"]) == pytest.approx(accuracy_score(labels, predicted), rel=1e-9)
    f1 = alerts["ModelmonF1BelowBaseline"]
    assert float(f1["value"]) == pytest.approx(f1_score(labels, predicted, average="macro"), rel=1e-9)
    assert "on the predictions labelled in the last 5m is 40%" in accuracy["annotations"]["description"]
    assert accuracy["annotations"]["threshold"].endswith("(baseline) - 5%")
    assert "ModelmonLowLabelCoverage" not in alerts  # every prediction got its label
