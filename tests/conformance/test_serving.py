"""Checks 4-8 against one live server holding every case: the V2 and records round trips,
bad inputs, the monitoring counts, the prediction log and the join of labels."""

from __future__ import annotations

import json
import sqlite3
import time
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelmon.types import Task
from tests.conformance.cases import for_every_case, for_every_regression_case
from tests.conformance.support import (
    Scrape,
    assert_labels_agree,
    increase,
    records,
    tolerance,
    v2_datatype,
    v2_inputs,
)

pytestmark = pytest.mark.slow

#: Seconds the prediction log may take to reach the store (segments seal every 0.5 s).
LOG_TIMEOUT = 30.0


def infer(live, name: str, frame: pd.DataFrame, features: list[str]) -> dict[str, Any]:
    """A V2 inference with one input per feature; the outputs by name."""
    response = live.post(f"/v2/models/{name}/infer", json={"inputs": v2_inputs(frame, features)})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == name and body["model_version"] == "1"
    return {o["name"]: o for o in body["outputs"]}


def probabilities_of(output: dict[str, Any]) -> np.ndarray:
    return np.array(output["data"], dtype=np.float64).reshape(output["shape"])


# -- check 4: Open Inference Protocol ----------------------------------------------------


@for_every_case
def test_v2_metadata_describes_the_signature(case, conformance, live):
    import httpx

    entry = conformance[case]
    card = entry.card
    meta = httpx.get(f"{live.url}/v2/models/{case.id}", timeout=30).json()
    assert [i["name"] for i in meta["inputs"]] == entry.built.features
    assert [i["datatype"] for i in meta["inputs"]] == [v2_datatype(entry.built.train[f]) for f in entry.built.features]
    outputs = {o["name"]: o for o in meta["outputs"]}
    if case.task is Task.REGRESSION:
        assert outputs == {
            "prediction": {"name": "prediction", "datatype": "FP64", "shape": [-1]},
            "prediction_id": {"name": "prediction_id", "datatype": "BYTES", "shape": [-1]},
        }
    else:
        assert outputs["probabilities"]["parameters"]["classes"] == entry.built.classes
    assert meta["platform"] == f"modelmon-{card.runtime}"
    info = Scrape(live.url).values("modelmon_model_info", case.id, by=("flavor",))
    assert info == Counter({case.runtime: 1.0})


@for_every_case
def test_v2_infer_round_trip(case, conformance, live):
    """Check 4: FP64 / INT64 / BYTES inputs, one per feature, give the framework's
    probabilities and labels, and one prediction id per row."""
    entry = conformance[case]
    validation, classes = entry.built.validation, entry.built.classes
    outputs = infer(live, case.id, validation, entry.built.features)
    if case.task is Task.REGRESSION:
        assert set(outputs) == {"prediction", "prediction_id"}
        assert outputs["prediction"]["datatype"] == "FP64"
        assert outputs["prediction"]["shape"] == [len(validation)]
        np.testing.assert_allclose(outputs["prediction"]["data"], entry.built.predict(validation), rtol=0, atol=tolerance(entry.card))
        ids = outputs["prediction_id"]["data"]
        assert len(ids) == len(set(ids)) == len(validation)
        return
    proba = probabilities_of(outputs["probabilities"])
    expected = entry.built.predict(validation)
    atol = tolerance(entry.card)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=atol)
    assert outputs["label"]["datatype"] == ("BYTES" if isinstance(classes[0], str) else "INT64")
    assert_labels_agree(outputs["label"]["data"], proba, expected, classes, atol)
    ids = outputs["prediction_id"]["data"]
    assert len(ids) == len(set(ids)) == len(validation)


@pytest.fixture(scope="session")
def triton_client(live):
    import tritonclient.http as triton

    client = triton.InferenceServerClient(url=f"127.0.0.1:{live.server.port}")
    yield client
    client.close()


@for_every_case
@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_round_trip(case, conformance, live, triton_client, binary):
    """Check 4 through tritonclient's HTTP client, unchanged: binary tensor data and JSON."""
    import tritonclient.http as triton

    entry = conformance[case]
    rows = entry.built.validation.iloc[:32]
    tensors = []
    for name in entry.built.features:
        datatype = v2_datatype(rows[name])
        values = rows[name].to_numpy(dtype=object if datatype == "BYTES" else None)
        tensor = triton.InferInput(name, [len(rows)], datatype)
        tensor.set_data_from_numpy(values, binary_data=binary)
        tensors.append(tensor)
    regression = case.task is Task.REGRESSION
    names = ("prediction", "prediction_id") if regression else ("label", "probabilities", "prediction_id")
    requested = [triton.InferRequestedOutput(n, binary_data=binary) for n in names]
    result = triton_client.infer(case.id, tensors, outputs=requested, request_id="conformance")
    assert result.get_response()["id"] == "conformance"
    if regression:
        values = result.as_numpy("prediction")
        assert values.dtype == np.float64 and values.shape == (len(rows),)
        np.testing.assert_allclose(values, entry.built.predict(rows), rtol=0, atol=tolerance(entry.card))
        assert result.as_numpy("prediction_id").shape == (len(rows),)
        return
    proba = result.as_numpy("probabilities").reshape(len(rows), -1)
    expected = entry.built.predict(rows)
    atol = tolerance(entry.card)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=atol)
    # BYTES come back as bytes from binary data, as str from JSON; numbers as numpy scalars.
    labels = [v.decode() if isinstance(v, bytes) else v if isinstance(v, str) else v.item()
              for v in result.as_numpy("label")]
    assert_labels_agree(labels, proba, expected, entry.built.classes, atol)
    assert result.as_numpy("prediction_id").shape == (len(rows),)


# -- check 5: the records endpoint -------------------------------------------------------


@for_every_case
def test_records_round_trip(case, conformance, live):
    """Check 5: ``/v1/models/<name>:predict`` with one object per row."""
    entry = conformance[case]
    rows, classes = entry.built.validation.iloc[:40], entry.built.classes
    response = live.post(f"/v1/models/{case.id}:predict", json={"instances": records(rows, entry.built.features)})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    if case.task is Task.REGRESSION:
        assert all(set(p) == {"id", "prediction"} for p in predictions)
        values = [p["prediction"] for p in predictions]
        np.testing.assert_allclose(values, entry.built.predict(rows), rtol=0, atol=tolerance(entry.card))
        assert len({p["id"] for p in predictions}) == len(rows)
        return
    assert all(list(p["probabilities"]) == [str(c) for c in classes] for p in predictions)
    proba = np.array([list(p["probabilities"].values()) for p in predictions])
    expected = entry.built.predict(rows)
    atol = tolerance(entry.card)
    np.testing.assert_allclose(proba, expected, rtol=0, atol=atol)
    assert_labels_agree([p["label"] for p in predictions], proba, expected, classes, atol)
    assert len({p["id"] for p in predictions}) == len(rows)


# -- check 6: bad inputs -----------------------------------------------------------------


def first_numeric(entry) -> str:
    return next(s.name for s in entry.card.signature.features if not s.is_categorical)


def missing_feature(entry, rows):
    inputs = v2_inputs(rows, entry.built.features)
    dropped = inputs.pop(len(inputs) // 2)["name"]
    return f"/v2/models/{entry.case.id}/infer", json.dumps({"inputs": inputs}).encode(), dropped


def wrong_datatype(entry, rows):
    name = first_numeric(entry)
    inputs = v2_inputs(rows, entry.built.features)
    for tensor in inputs:
        if tensor["name"] == name:
            tensor.update(datatype="BYTES", data=[str(v) for v in tensor["data"]])
    return f"/v2/models/{entry.case.id}/infer", json.dumps({"inputs": inputs}).encode(), name


def string_for_a_number(entry, rows):
    name = first_numeric(entry)
    inputs = v2_inputs(rows, entry.built.features)
    for tensor in inputs:
        if tensor["name"] == name:
            tensor["data"][-1] = "twelve"
    return f"/v2/models/{entry.case.id}/infer", json.dumps({"inputs": inputs}).encode(), name


def unparseable_body(entry, rows):
    return f"/v2/models/{entry.case.id}/infer", b'{"inputs": [', "not valid JSON"


def malformed_field(entry, rows):
    inputs = v2_inputs(rows, entry.built.features)
    inputs[0]["shape"] = "rows"
    return f"/v2/models/{entry.case.id}/infer", json.dumps({"inputs": inputs}).encode(), "inputs[0].shape"


def record_without_a_feature(entry, rows):
    instances = records(rows, entry.built.features)
    name = entry.built.features[-1]
    del instances[1][name]
    return f"/v1/models/{entry.case.id}:predict", json.dumps({"instances": instances}).encode(), name


#: (what is wrong, the request, the reason it is counted under); each request's message
#: must name the field (or, for a body that is not JSON, say so).
BAD_INPUTS = [
    ("missing-feature", missing_feature, "missing_feature"),
    ("wrong-datatype", wrong_datatype, "wrong_datatype"),
    ("string-for-a-number", string_for_a_number, "invalid_value"),
    ("unparseable-body", unparseable_body, "malformed_request"),
    ("malformed-field", malformed_field, "malformed_request"),
    ("record-without-a-feature", record_without_a_feature, "missing_feature"),
]


@for_every_case
@pytest.mark.parametrize(("make", "reason"), [pytest.param(m, r, id=i) for i, m, r in BAD_INPUTS])
def test_bad_input_is_a_4xx_naming_the_field_and_counted(case, conformance, live, make, reason):
    """Check 6: a 4xx whose message names the field, counted for the model under its reason
    (and nothing counted as an internal error)."""
    entry = conformance[case]
    path, body, named = make(entry, entry.built.validation.iloc[:3])
    before = Scrape(live.url).values("modelmon_request_errors_total", case.id, by=("reason",))
    response = live.post(path, content=body, headers={"content-type": "application/json"})
    assert 400 <= response.status_code < 500, response.text
    assert named in response.json()["error"]
    after = Scrape(live.url).values("modelmon_request_errors_total", case.id, by=("reason",))
    assert increase(after, before) == Counter({reason: 1.0})


# -- check 7: monitoring counts ----------------------------------------------------------


@for_every_case
def test_monitoring_counts_every_row(case, conformance, live):
    """Check 7: after N rows, the prediction counters grew by the returned labels' counts
    per class (N in all), and one feature's bins by N."""
    entry = conformance[case]
    rows = entry.built.validation.iloc[:70]
    feature = entry.card.signature.features[0].name
    before = Scrape(live.url)
    labels = []
    output = "prediction" if case.task is Task.REGRESSION else "label"
    for start in range(0, len(rows), 25):  # several requests, several model calls
        labels += infer(live, case.id, rows.iloc[start : start + 25], entry.built.features)[output]["data"]
    after = Scrape(live.url)
    if case.task is Task.REGRESSION:
        # Each prediction counted in its bin of the reference's prediction bins.
        reference = entry.card.reference_profile.predicted_values
        counted = increase(*(s.values("modelmon_prediction_bin_total", case.id, by=("bin",)) for s in (after, before)))
        expected = np.bincount(np.searchsorted(reference.edges, labels, side="right"), minlength=len(reference.bin_labels))
        assert counted == Counter({b: float(n) for b, n in zip(reference.bin_labels, expected, strict=True) if n})
        # No NaN prediction here: the missing count is present from zero and did not grow.
        assert "modelmon_prediction_missing_total" in {x.name for x in after.samples(case.id) if x.labels.get("model") == case.id}
        assert after.total("modelmon_prediction_missing_total", case.id) == before.total("modelmon_prediction_missing_total", case.id) == 0.0
        ratio = after.values("modelmon_reference_prediction_ratio", case.id, by=("bin",))
        assert ratio == Counter(dict(zip(reference.bin_labels, reference.shares, strict=True))) - Counter()
        bins = increase(*(s.values("modelmon_feature_bin_total", case.id, by=("bin",), feature=feature) for s in (after, before)))
        assert sum(bins.values()) == len(rows)
        return
    predicted = increase(*(s.values("modelmon_predictions_total", case.id, by=("class",)) for s in (after, before)))
    assert predicted == Counter(str(label) for label in labels)
    assert sum(predicted.values()) == len(rows)
    bins = increase(*(s.values("modelmon_feature_bin_total", case.id, by=("bin",), feature=feature) for s in (after, before)))
    assert sum(bins.values()) == len(rows)


# -- check 8: the prediction log and the join of labels ----------------------------------


def logged_predictions(live, model: str, ids: list[str]) -> dict[str, tuple[str, list[float]]]:
    """The store's rows for ``ids``, once all have arrived (the log writes them in the
    background)."""
    deadline = time.monotonic() + LOG_TIMEOUT
    found: dict[str, tuple[str, list[float]]] = {}
    while time.monotonic() < deadline:
        if live.store.exists():
            connection = sqlite3.connect(f"file:{live.store}?mode=ro", uri=True, timeout=10)
            try:
                rows = connection.execute(
                    "SELECT id, predicted_label, probabilities FROM predictions WHERE model = ? AND version = 1",
                    (model,),
                ).fetchall()
            except sqlite3.OperationalError:  # not migrated yet
                rows = []
            finally:
                connection.close()
            wanted = set(ids)
            found = {i: (label, None if p is None else json.loads(p)) for i, label, p in rows if i in wanted}
            if len(found) == len(ids):
                return found
        # Rows land about 0.6 s after the answer (a journal segment is sealed after 0.5 s): a
        # finer poll than 0.25 s took check 8's 21 cases from 16.5 to 13.5 s.
        time.sleep(0.05)
    raise AssertionError(f"{len(ids) - len(found)} of {len(ids)} predictions not in the store after {LOG_TIMEOUT}s")


@for_every_case
def test_prediction_log_holds_what_was_answered(case, conformance, live):
    """Check 8: every answered row reaches the store with its label and probabilities."""
    entry = conformance[case]
    outputs = infer(live, case.id, entry.built.validation.iloc[:20], entry.built.features)
    if case.task is Task.REGRESSION:
        # The predicted value as text that reads back as the same float (its repr, made by
        # the log's writer from the journaled number); no probabilities.
        ids, values = outputs["prediction_id"]["data"], outputs["prediction"]["data"]
        logged = logged_predictions(live, case.id, ids)
        assert [float(logged[i][0]) for i in ids] == values
        assert [logged[i][0] for i in ids] == [repr(float(v)) for v in values]
        assert all(logged[i][1] is None for i in ids)
        return
    ids, labels = outputs["prediction_id"]["data"], outputs["label"]["data"]
    proba = probabilities_of(outputs["probabilities"])
    logged = logged_predictions(live, case.id, ids)
    assert [logged[i][0] for i in ids] == [str(label) for label in labels]
    np.testing.assert_allclose(np.array([logged[i][1] for i in ids]), proba, rtol=0, atol=1e-12)


@for_every_case
def test_feedback_joins_each_label_once(case, conformance, live):
    """Check 8: labels for returned prediction ids are matched and counted in the confusion
    cells of (actual, predicted); the same labels sent again are duplicates."""
    entry = conformance[case]
    rows = entry.built.validation.iloc[40:100]
    outputs = infer(live, case.id, rows, entry.built.features)
    if case.task is Task.REGRESSION:
        check_regression_feedback(live, entry, rows, outputs)
        return
    ids, predicted = outputs["prediction_id"]["data"], outputs["label"]["data"]
    truth = rows[entry.built.target].tolist()
    body = {"labels": [{"id": i, "label": y} for i, y in zip(ids, truth, strict=True)]}

    before = Scrape(live.url)
    response = live.post(f"/v2/models/{case.id}/feedback", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["matched"], answer["duplicate"], answer["unknown"]) == (len(ids), 0, 0)
    after = Scrape(live.url)

    def outcomes(scrape):
        return scrape.values("modelmon_feedback_total", case.id, by=("outcome",))

    def cells(scrape):
        return scrape.values("modelmon_confusion_total", case.id, by=("actual", "predicted"))

    assert increase(outcomes(after), outcomes(before)) == Counter({"matched": len(ids)})
    confusion = increase(cells(after), cells(before))
    assert sum(confusion.values()) == len(ids)
    assert confusion == Counter((str(y), str(p)) for y, p in zip(truth, predicted, strict=True))

    response = live.post(f"/v2/models/{case.id}/feedback", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["matched"], answer["duplicate"], answer["unknown"]) == (0, len(ids), 0)
    again = Scrape(live.url)
    assert increase(outcomes(again), outcomes(after)) == Counter({"duplicate": len(ids)})
    assert cells(again) == cells(after)


#: The label sums of a regressor, in the order ``sums`` returns them.
REGRESSION_SUMS = (
    "modelmon_regression_labelled_total", "modelmon_regression_error_total",
    "modelmon_regression_absolute_error_total", "modelmon_regression_squared_error_total",
    "modelmon_regression_target_total", "modelmon_regression_target_squared_total",
)


def sums(scrape: Scrape, model: str) -> np.ndarray:
    return np.array([scrape.total(name, model) for name in REGRESSION_SUMS])


def check_regression_feedback(live, entry, rows: pd.DataFrame, outputs: dict[str, Any]) -> None:
    """Check 8 for a regressor: numeric labels are matched once, and the label sums grow so
    that MAE, RMSE, R² and the bias computed from them are scikit-learn's on the same rows."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    case = entry.case
    ids, predicted = outputs["prediction_id"]["data"], np.array(outputs["prediction"]["data"])
    truth = rows[entry.built.target].to_numpy(np.float64)
    body = {"labels": [{"id": i, "label": y} for i, y in zip(ids, truth.tolist(), strict=True)]}
    before = Scrape(live.url)
    response = live.post(f"/v2/models/{case.id}/feedback", json=body)
    assert response.status_code == 200, response.text
    assert (response.json()["matched"], response.json()["duplicate"]) == (len(ids), 0)
    after = Scrape(live.url)
    n, error, absolute, squared, target, target_squared = sums(after, case.id) - sums(before, case.id)
    assert n == len(ids)
    assert absolute / n == pytest.approx(mean_absolute_error(truth, predicted), rel=1e-9)
    assert np.sqrt(squared / n) == pytest.approx(np.sqrt(mean_squared_error(truth, predicted)), rel=1e-9)
    assert error / n == pytest.approx(np.mean(predicted - truth), rel=1e-9, abs=1e-12)
    r2 = 1 - squared / (target_squared - target**2 / n)
    assert r2 == pytest.approx(r2_score(truth, predicted), rel=1e-9)
    outcomes = after.values("modelmon_feedback_total", case.id, by=("outcome",))
    assert increase(outcomes, before.values("modelmon_feedback_total", case.id, by=("outcome",))) == Counter({"matched": len(ids)})

    response = live.post(f"/v2/models/{case.id}/feedback", json=body)  # again: duplicates, nothing counted
    assert (response.json()["matched"], response.json()["duplicate"]) == (0, len(ids))
    np.testing.assert_array_equal(sums(Scrape(live.url), case.id), sums(after, case.id))


BAD_LABELS = [("text", "12.5"), ("nan", float("nan")), ("infinite", float("inf")), ("bool", True), ("missing", None)]


@for_every_regression_case
def test_a_bad_regression_label_is_a_4xx_naming_the_item(case, conformance, live):
    """Text, NaN, infinite, boolean and null labels are refused: a 4xx naming the item,
    counted under ``invalid_label``, and nothing of the request recorded."""
    entry = conformance[case]
    outputs = infer(live, case.id, entry.built.validation.iloc[:2], entry.built.features)
    ids = outputs["prediction_id"]["data"]
    for what, label in BAD_LABELS:
        before = Scrape(live.url)
        body = json.dumps({"labels": [{"id": ids[0], "label": 1.5}, {"id": ids[1], "label": label}]})
        response = live.post(f"/v2/models/{case.id}/feedback", content=body, headers={"content-type": "application/json"})
        assert 400 <= response.status_code < 500, (what, response.text)
        assert "labels[1]" in response.json()["error"] and ids[1] in response.json()["error"], what
        after = Scrape(live.url)
        errors = increase(*(s.values("modelmon_request_errors_total", case.id, by=("reason",)) for s in (after, before)))
        assert errors == Counter({"invalid_label": 1.0}), what
        np.testing.assert_array_equal(sums(after, case.id), sums(before, case.id))
