"""Ground-truth labels against a live server, on SQLite and PostgreSQL: joined by id from
memory and, after a restart, from the store; duplicates and unknown ids reported; counts
equal scikit-learn's confusion matrix on the same labels."""

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import accuracy_score, confusion_matrix

from modelmon.stack.processes import stop_process
from tests.conftest import start_server
from tests.tracking.conftest import postgres_schema

pytestmark = pytest.mark.slow
CLASSES = ["bronze", "gold", "silver"]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        yield str(tmp_path / "store.db")
    else:
        with postgres_schema() as url:
            yield url


def samples(url: str, name: str, model: str = "shop") -> dict[tuple, float]:
    out = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.name == name and s.labels.get("model") == model:
                out[tuple(v for k, v in sorted(s.labels.items()) if k not in ("model", "version"))] = s.value
    return out


def predict(url: str, rows) -> tuple[list[str], list[str]]:
    response = httpx.post(f"{url}/v1/models/shop:predict", json={"instances": rows.to_dict("records")})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    return [p["id"] for p in predictions], [p["label"] for p in predictions]


def send_labels(url: str, pairs) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/shop/feedback", json={"labels": [{"id": i, "label": y} for i, y in pairs]})


def test_labels_join_across_a_restart_and_count_once(registry_dir, shop_frame, tmp_path, store_url):
    features = shop_frame.drop(columns="segment")
    truth = shop_frame["segment"].tolist()
    home = tmp_path / "home"
    server = start_server(registry_dir, tmp_path, "--store", store_url, "--drain-seconds", "0", home=home)
    try:
        ids, predicted = [], []
        for start in range(0, 120, 30):
            batch_ids, batch_labels = predict(server.url, features.iloc[start : start + 30])
            ids += batch_ids
            predicted += batch_labels
        # The first 50 labelled right away: joined from memory.
        first = list(zip(ids[:50], truth[:50], strict=True))
        body = send_labels(server.url, first).json()
        assert body["matched"] == 50 and body["duplicate"] == 0 and body["unknown"] == 0
        # Sent again, plus two unknown ids: nothing counted twice, unknown ids reported.
        body = send_labels(server.url, [*first[:5], ("no-such-id", "gold"), ("other-1", "bronze")]).json()
        assert (body["matched"], body["duplicate"], body["unknown"]) == (0, 5, 2)
        assert body["unknown_ids"] == ["no-such-id", "other-1"]
        # An invalid label rejects the request and names it.
        response = send_labels(server.url, [(ids[60], "platinum")])
        assert response.status_code == 400 and "platinum" in response.json()["error"]
    finally:
        stop_process(server.process)  # SIGTERM: the prediction log is flushed to the store

    server = start_server(registry_dir, tmp_path, "--store", store_url, "--drain-seconds", "0", home=home)
    try:
        # After the restart memory is empty: the next 60 labels join from the store.
        body = send_labels(server.url, list(zip(ids[50:110], truth[50:110], strict=True))).json()
        assert body["matched"] == 60, body
        body = send_labels(server.url, first[:3]).json()
        assert body["duplicate"] == 3 and body["matched"] == 0

        # This process counted the 60 labels joined after the restart, exactly.
        cells = samples(server.url, "modelmon_confusion_total")
        expected = confusion_matrix(truth[50:110], predicted[50:110], labels=CLASSES)
        for a, actual in enumerate(CLASSES):
            for p, pred in enumerate(CLASSES):
                assert cells[(actual, pred)] == expected[a, p], (actual, pred)
        outcomes = samples(server.url, "modelmon_feedback_total")
        assert outcomes == {("duplicate",): 3.0, ("matched",): 60.0, ("unknown_id",): 0.0}
        delays = samples(server.url, "modelmon_label_delay_seconds_count")
        assert delays == {(): 60.0}
    finally:
        stop_process(server.process)

    # The SQL view Grafana reads: one row per labelled prediction, dated by prediction time.
    from sqlalchemy import text

    from modelmon.store import close_store, open_store

    store = open_store(store_url)
    with store.read() as connection:
        rows = connection.execute(text(
            "SELECT prediction_id, predicted_label, actual_label, correct FROM labelled_predictions WHERE model = 'shop'"
        )).all()
    close_store(store_url)
    by_id = {r.prediction_id: r for r in rows}
    assert len(by_id) == 110
    labelled = range(110)
    assert [by_id[ids[i]].actual_label for i in labelled] == truth[:110]
    assert [by_id[ids[i]].predicted_label for i in labelled] == predicted[:110]
    assert np.mean([by_id[ids[i]].correct for i in labelled]) == pytest.approx(accuracy_score(truth[:110], predicted[:110]))


def test_expected_confusion_equals_a_direct_computation(registry, registry_dir, shop_model, shop_frame, tmp_path):
    from modelmon.registry.calibration import apply, expected_confusion

    server = start_server(registry_dir, tmp_path, "--drain-seconds", "0")
    try:
        rows = shop_frame.drop(columns="segment").iloc[:200]
        for start in range(0, 200, 40):
            predict(server.url, rows.iloc[start : start + 40])
        proba = shop_model.predict_proba(rows)
        card = registry.card("shop")
        assert card.calibration is not None
        expected = expected_confusion(apply(card.calibration, proba), proba.argmax(axis=1))
        cells = samples(server.url, "modelmon_expected_confusion_total")
        for a, actual in enumerate(CLASSES):
            for p, pred in enumerate(CLASSES):
                assert cells[(actual, pred)] == pytest.approx(expected[a, p], abs=1e-4)
        assert sum(cells.values()) == pytest.approx(200)
    finally:
        stop_process(server.process)


def test_feedback_disabled_without_the_prediction_log(registry_dir, tmp_path):
    server = start_server(registry_dir, tmp_path, "--no-prediction-log", "--drain-seconds", "0")
    try:
        response = send_labels(server.url, [("x", "gold")])
        assert response.status_code == 409 and "prediction log" in response.json()["error"]
    finally:
        stop_process(server.process)


def test_feedback_command_sends_a_file(registry_dir, shop_frame, tmp_path):
    import subprocess
    import sys

    import pandas as pd

    server = start_server(registry_dir, tmp_path, "--drain-seconds", "0")
    try:
        ids, _ = predict(server.url, shop_frame.drop(columns="segment").iloc[:40])
        labels = pd.DataFrame({"prediction": [*ids[:30], "nope"], "truth": shop_frame.segment.iloc[:31].tolist()})
        labels.to_parquet(tmp_path / "labels.parquet")
        command = [sys.executable, "-m", "modelmon.cli", "feedback", str(tmp_path / "labels.parquet"), "--model", "shop",
                   "--url", server.url, "--id-column", "prediction", "--label-column", "truth", "--chunk", "7"]
        result = subprocess.run(command, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert "matched 30, duplicate 0, unknown id 1" in result.stdout
        result = subprocess.run([*command[:-6], "--id-column", "missing"], capture_output=True, text=True)
        assert result.returncode == 2 and "no column" in result.stderr
        # Classes are checked against the model's (its metadata) before anything is sent.
        (tmp_path / "bad.csv").write_text(f"id,label\n{ids[30]},gold\n{ids[31]},platinum\n,gold\n")
        result = subprocess.run([*command[:4], str(tmp_path / "bad.csv"), *command[5:-6]], capture_output=True, text=True)
        err = " ".join(result.stderr.split())
        assert result.returncode == 2 and "2 of 3 rows are bad" in err and "nothing was sent" in err, err
        assert f"row 2: label 'platinum' is not one of the model's classes {CLASSES}" in err and "row 3: empty id" in err
        assert samples(server.url, "modelmon_feedback_total")[("matched",)] == 30
    finally:
        stop_process(server.process)


def test_fleet_quality_rules_on_a_live_prometheus(registry_dir, shop_frame, tmp_path):
    """The quality recording rules, evaluated by a real Prometheus scraping the server,
    equal scikit-learn's accuracy and macro F1 on the labels sent."""
    from sklearn.metrics import f1_score

    from modelmon.rules.drift import dump_yaml
    from modelmon.rules.quality import quality_rule_group
    from modelmon.stack.prometheus import Prometheus

    server = start_server(registry_dir, tmp_path, "--drain-seconds", "0")
    rules = tmp_path / "quality.rules.yml"
    rules.write_text(dump_yaml({"groups": [quality_rule_group("1h")]}))
    prometheus = Prometheus.start(tmp_path / "prom", [f"127.0.0.1:{server.port}"], rule_files=[rules])
    try:
        assert prometheus.wait_for('up{job="modelmon"}', 1) == 1
        rows = shop_frame.iloc[:90]
        ids, predicted = predict(server.url, rows.drop(columns="segment"))
        truth = rows.segment.tolist()
        assert send_labels(server.url, list(zip(ids, truth, strict=True))).json()["matched"] == 90
        accuracy = accuracy_score(truth, predicted)
        seen = prometheus.wait_for('model_version:modelmon_confusion:accuracy1h{model="shop"}', accuracy)
        assert seen == pytest.approx(accuracy, abs=1e-12)
        f1 = prometheus.scalar('modelmon:f1_macro:1h{model="shop"}')
        assert f1 == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0), abs=1e-12)
        assert prometheus.scalar('model_version:modelmon_feedback_matched:ratio_predictions1h{model="shop"}') == pytest.approx(1.0)
        estimated = prometheus.scalar('model_version:modelmon_expected_confusion:accuracy1h{model="shop"}')
        assert 0.0 < estimated <= 1.0
    finally:
        prometheus.stop()
        stop_process(server.process)
