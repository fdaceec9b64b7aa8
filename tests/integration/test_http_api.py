"""The Open Inference Protocol and records endpoints of a live server, including every
kind of bad input: a 4xx with a JSON message naming the problem, counted by reason."""

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LinearRegression

from modelmon.registry import register_model
from modelmon.stack.processes import stop_process
from tests.conftest import start_server

pytestmark = pytest.mark.slow


def metric_value(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def error_counts(url: str, model: str) -> dict[str, float]:
    """modelmon_request_errors_total of one model by reason, from one scrape."""
    text = httpx.get(f"{url}/metrics").text
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "modelmon_request_errors_total" and sample.labels.get("model") == model
    }


def shop_inputs(amount=(12.5, 80.0), items=(1, 3), channel=("web", "app"), region=("north", "east")):
    return [
        {"name": "amount", "shape": [len(amount)], "datatype": "FP64", "data": list(amount)},
        {"name": "items", "shape": [len(items)], "datatype": "INT64", "data": list(items)},
        {"name": "channel", "shape": [len(channel)], "datatype": "BYTES", "data": list(channel)},
        {"name": "region", "shape": [len(region)], "datatype": "BYTES", "data": list(region)},
    ]


def test_server_health_and_metadata(server):
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    meta = httpx.get(f"{server.url}/v2").json()
    assert meta["name"] == "modelmon" and "binary_tensor_data" in meta["extensions"]
    model = httpx.get(f"{server.url}/v2/models/shop").json()
    assert [i["name"] for i in model["inputs"]] == ["amount", "items", "channel", "region"]
    assert [i["datatype"] for i in model["inputs"]] == ["FP64", "INT64", "BYTES", "BYTES"]
    assert model["outputs"][1]["parameters"]["classes"] == ["bronze", "gold", "silver"]
    assert httpx.get(f"{server.url}/v2/models/shop/versions/1").json()["versions"] == ["1"]
    assert httpx.get(f"{server.url}/v2/models/shop/ready").json()["ready"] is True


def test_infer_matches_the_model_offline(server, shop_model, shop_frame):
    rows = shop_frame.iloc[:25]
    body = {"id": "req-1", "inputs": shop_inputs(rows.amount, rows["items"], rows.channel, rows.region)}
    response = httpx.post(f"{server.url}/v2/models/shop/infer", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["id"] == "req-1" and result["model_name"] == "shop" and result["model_version"] == "1"
    outputs = {o["name"]: o for o in result["outputs"]}
    expected = shop_model.predict_proba(rows.drop(columns="segment"))
    proba = np.array(outputs["probabilities"]["data"]).reshape(outputs["probabilities"]["shape"])
    np.testing.assert_allclose(proba, expected, atol=1e-5)
    assert outputs["label"]["data"] == list(shop_model.predict(rows.drop(columns="segment")))
    ids = outputs["prediction_id"]["data"]
    assert len(ids) == 25 and len(set(ids)) == 25


def test_matrix_input_and_generated_request_id(server, cancer_model, cancer_frame):
    X = cancer_frame.drop(columns="target").iloc[:4]
    body = {"inputs": [{"name": "input-0", "shape": [4, 30], "datatype": "FP32", "data": X.to_numpy().ravel().tolist()}]}
    result = httpx.post(f"{server.url}/v2/models/cancer/versions/1/infer", json=body).json()
    again = httpx.post(f"{server.url}/v2/models/cancer/versions/1/infer", json=body).json()
    assert isinstance(result["id"], str) and result["id"] and result["id"] != again["id"]
    labels = next(o for o in result["outputs"] if o["name"] == "label")
    assert labels["datatype"] == "INT64" and labels["data"] == cancer_model.predict(X).tolist()


def test_records_endpoint(server, shop_model, shop_frame):
    rows = shop_frame.drop(columns="segment").iloc[:3]
    response = httpx.post(f"{server.url}/v1/models/shop:predict", json={"instances": rows.to_dict("records")})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["label"] for p in predictions] == list(shop_model.predict(rows))
    expected = shop_model.predict_proba(rows)
    for prediction, row in zip(predictions, expected, strict=True):
        assert list(prediction["probabilities"]) == ["bronze", "gold", "silver"]
        np.testing.assert_allclose(list(prediction["probabilities"].values()), row, atol=1e-5)
        assert prediction["id"]


def test_prediction_ids_are_unique_across_requests(server):
    ids = set()
    for _ in range(5):
        result = httpx.post(f"{server.url}/v1/models/shop:predict", json={"instances": [
            {"amount": 1.0, "items": 1, "channel": "web", "region": "north"}] * 4}).json()
        ids.update(p["id"] for p in result["predictions"])
    assert len(ids) == 20


BAD_REQUESTS = [
    # (path, body bytes, expected status, reason label, text the message must contain)
    ("/v2/models/shop/infer", b"{not json", 400, "malformed_request", "not valid JSON"),
    ("/v2/models/shop/infer", json.dumps({"inputs": shop_inputs()[:3]}).encode(), 400, "missing_feature", "region"),
    ("/v2/models/shop/infer", json.dumps({"inputs": [*shop_inputs(), {"name": "zip", "shape": [2], "datatype": "FP32", "data": [1, 2]}]}).encode(), 400, "unknown_feature", "zip"),
    ("/v2/models/shop/infer", json.dumps({"inputs": shop_inputs(amount=("cheap", 1.0))}).encode(), 400, "invalid_value", "amount"),
    ("/v2/models/shop/infer", json.dumps({"inputs": shop_inputs(amount=(float("nan"), 1.0))}).encode(), 400, "missing_value", "amount"),
    ("/v2/models/shop/infer", json.dumps({"inputs": shop_inputs(channel=(1, 2))}).encode(), 400, "invalid_value", "channel"),
    ("/v2/models/shop/infer", json.dumps({"inputs": shop_inputs(items=(1,))}).encode(), 400, "wrong_shape", "items"),
    ("/v2/models/cancer/infer", json.dumps({"inputs": [{"name": "x", "shape": [1, 29], "datatype": "FP32", "data": [0] * 29}]}).encode(), 400, "wrong_shape", "[N, 30]"),
    ("/v2/models/cancer/infer", json.dumps({"inputs": [{"name": "x", "shape": [1, 30], "datatype": "BYTES", "data": ["a"] * 30}]}).encode(), 400, "wrong_datatype", "numeric"),
    ("/v1/models/shop:predict", json.dumps({"rows": []}).encode(), 400, "malformed_request", "instances"),
    ("/v1/models/shop:predict", json.dumps({"instances": [{"amount": 1}]}).encode(), 400, "missing_feature", "items"),
]


@pytest.mark.parametrize(("path", "body", "status", "reason", "text"), BAD_REQUESTS)
def test_bad_input_is_a_named_4xx_and_counted(server, path, body, status, reason, text):
    model = path.split("/")[3].split(":")[0]
    before = metric_value(server.url, "modelmon_request_errors_total", model=model, reason=reason)
    response = httpx.post(f"{server.url}{path}", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    assert text in response.json()["error"]
    after = metric_value(server.url, "modelmon_request_errors_total", model=model, reason=reason)
    assert after == before + 1


def test_unknown_model_and_version_are_404_without_the_name_as_a_label(server):
    before = metric_value(server.url, "modelmon_request_errors_total", model="_unknown_", reason="model_not_found")
    response = httpx.post(f"{server.url}/v2/models/nope-123/infer", json={"inputs": shop_inputs()})
    assert response.status_code == 404 and "nope-123" in response.json()["error"]
    response = httpx.post(f"{server.url}/v2/models/shop/versions/7/infer", json={"inputs": shop_inputs()})
    assert response.status_code == 404 and "version '7'" in response.json()["error"]
    after = metric_value(server.url, "modelmon_request_errors_total", model="_unknown_", reason="model_not_found")
    assert after == before + 2
    assert "nope-123" not in httpx.get(f"{server.url}/metrics").text


def test_unknown_path_is_json_404(server):
    response = httpx.get(f"{server.url}/v3/whatever")
    assert response.status_code == 404 and "error" in response.json()


def test_oversized_body_is_413(registry_dir, tmp_path):
    from modelmon.stack.processes import stop_process
    from tests.conftest import start_server

    small = start_server(registry_dir, tmp_path, "--max-body-bytes", "2048", "--drain-seconds", "0")
    try:
        huge = json.dumps({"inputs": shop_inputs(amount=[1.0] * 1000, items=[1] * 1000,
                                                 channel=["web"] * 1000, region=["north"] * 1000)})
        response = httpx.post(f"{small.url}/v2/models/shop/infer", content=huge)
        assert response.status_code == 413 and "limit of 2048" in response.json()["error"]

        def chunks():  # no Content-Length: the limit must hold while streaming too
            for i in range(0, len(huge), 500):
                yield huge[i : i + 500].encode()

        response = httpx.post(f"{small.url}/v2/models/shop/infer", content=chunks())
        assert response.status_code == 413
        assert metric_value(small.url, "modelmon_request_errors_total", model="shop", reason="body_too_large") == 2
    finally:
        stop_process(small.process)


def test_concurrent_callers_with_different_row_counts_each_get_their_rows(server, cancer_model, cancer_frame):
    """Many callers at once, each with its own number of rows: batching must merge them
    and still hand every caller exactly its own predictions."""
    import asyncio

    X = cancer_frame.drop(columns="target").to_numpy()
    expected = cancer_model.predict_proba(cancer_frame.drop(columns="target"))
    sizes = np.random.default_rng(11).integers(1, 12, 120)
    starts = np.random.default_rng(12).integers(0, len(X) - 12, 120)
    rows_before = metric_value(server.url, "modelmon_batch_size_sum", model="cancer")

    async def call(client, start, size):
        body = {"inputs": [{"name": "x", "shape": [int(size), 30], "datatype": "FP64",
                            "data": X[start : start + size].ravel().tolist()}]}
        response = await client.post(f"{server.url}/v2/models/cancer/infer", json=body)
        assert response.status_code == 200, response.text
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        return np.array(outputs["probabilities"]["data"]).reshape(int(size), 2)

    async def main():
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            return await asyncio.gather(*(call(client, s, n) for s, n in zip(starts, sizes, strict=True)))

    results = asyncio.run(main())
    for start, size, proba in zip(starts, sizes, results, strict=True):
        np.testing.assert_allclose(proba, expected[start : start + size], atol=1e-5)
    # Every row went through the model exactly once.
    assert metric_value(server.url, "modelmon_batch_size_sum", model="cancer") - rows_before == sizes.sum()


def with_input(index: int, **fields) -> list[dict]:
    """shop_inputs() with fields of one input replaced."""
    inputs = shop_inputs()
    inputs[index] = {**inputs[index], **fields}
    return inputs


#: A field of the wrong JSON type, at every depth of a V2 request: (body, text naming it).
#: Issue 15: some reached the codec and crashed it (500); each must be a 400 naming the
#: field, counted as malformed_request.
WRONG_TYPES = [
    ({"inputs": with_input(0, datatype={})}, "inputs[0].datatype must be a string, got object"),
    ({"inputs": with_input(2, datatype=["BYTES"])}, "inputs[2].datatype must be a string, got list"),
    ({"inputs": with_input(1, name=5)}, "inputs[1].name must be a non-empty string, got integer 5"),
    ({"inputs": with_input(0, shape={"rows": 2})}, "inputs[0].shape must be a list of non-negative integers, got object"),
    ({"inputs": with_input(0, shape=[True])}, "inputs[0].shape[0] must be a non-negative integer, got boolean true"),
    ({"inputs": with_input(3, shape=[2, "1"])}, "inputs[3].shape[1] must be a non-negative integer, got string"),
    ({"inputs": with_input(0, data={"0": 1.0})}, "inputs[0].data must be a list"),
    ({"inputs": with_input(0, parameters=[1])}, "inputs[0].parameters must be an object, got list"),
    ({"inputs": with_input(0, parameters={"binary_data_size": "16"})},
     "inputs[0].parameters.binary_data_size must be a non-negative integer, got string"),
    ({"inputs": [shop_inputs()[0], "items"]}, "inputs[1] must be an object, got string"),
    ({"inputs": {"amount": [1.0]}}, "inputs must be a non-empty list, got object"),
    ({"inputs": shop_inputs(), "id": 7}, "id must be a string, got integer 7"),
    ({"inputs": shop_inputs(), "parameters": "binary"}, "parameters must be an object, got string"),
    ({"inputs": shop_inputs(), "parameters": {"binary_data_output": "yes"}},
     "parameters.binary_data_output must be a boolean, got string"),
    ({"inputs": shop_inputs(), "outputs": {"name": "label"}}, "outputs must be a list, got object"),
    ({"inputs": shop_inputs(), "outputs": [7]}, "outputs[0] must be an object, got integer 7"),
    ({"inputs": shop_inputs(), "outputs": [{"name": {}}]}, "outputs[0].name must be a non-empty string, got object"),
    ({"inputs": shop_inputs(), "outputs": [{"name": "label", "parameters": [1]}]},
     "outputs[0].parameters must be an object, got list"),
    ({"inputs": shop_inputs(), "outputs": [{"name": "label", "parameters": {"binary_data": {}}}]},
     "outputs[0].parameters.binary_data must be a boolean, got object"),
]


@pytest.mark.parametrize("version_path", ["", "/versions/1"])
@pytest.mark.parametrize(("body", "text"), WRONG_TYPES)
def test_a_field_of_the_wrong_type_is_a_400_naming_it(server, body, text, version_path):
    before = error_counts(server.url, "shop")
    response = httpx.post(f"{server.url}/v2/models/shop{version_path}/infer", json=body)
    assert response.status_code == 400, response.text
    assert text in response.json()["error"]
    after = error_counts(server.url, "shop")
    assert after["malformed_request"] == before["malformed_request"] + 1
    assert after["internal_error"] == before["internal_error"]


def huge_number_body(path: str) -> bytes:
    """An integer JSON allows but no float64 holds (it parsed to a Python int)."""
    if path.startswith("/v1"):
        return b'{"instances": [{"amount": 1' + b"0" * 400 + b', "items": 1, "channel": "web", "region": "north"}]}'
    inputs = json.dumps({"inputs": with_input(0, data=["HUGE", 1.0])}).encode()
    return inputs.replace(b'"HUGE"', b"1" + b"0" * 400)


#: Values inside ``data`` (or a record) that crashed validation: (path, body, reason, text).
BAD_VALUES = [
    ("/v2/models/shop/infer", huge_number_body("/v2"), "invalid_value", "'amount': value at row 0 is out of range"),
    ("/v1/models/shop:predict", huge_number_body("/v1"), "invalid_value", "'amount': value at row 0 is out of range"),
    # Ragged: two values by the outer list, three inside it.
    ("/v2/models/shop/infer", json.dumps({"inputs": with_input(2, data=["web", ["app", "store"]])}).encode(),
     "wrong_shape", "feature 'channel': shape [2] needs 2 values, got 3"),
    # User report 4, 5, 7: the real value and row; integers whole and in range; no booleans.
    ("/v2/models/shop/infer", json.dumps({"inputs": with_input(0, data=[0.5, "abc"])}).encode(),
     "invalid_value", "feature 'amount': non-numeric value 'abc' at row 1"),
    ("/v1/models/shop:predict", json.dumps({"instances": [{"amount": 0.1, "items": 1, "channel": "web", "region": "north"},
                                                          {"amount": "x", "items": 1, "channel": "web", "region": "north"}]}).encode(),
     "invalid_value", "feature 'amount': non-numeric value 'x' at row 1"),
    ("/v2/models/shop/infer", json.dumps({"inputs": with_input(1, datatype="FP64", data=[1e30, 1.0])}).encode(),
     "invalid_value", "feature 'items': value 1e+30 at row 0 is out of range for int64"),
    ("/v2/models/shop/infer", json.dumps({"inputs": with_input(1, data=[1, 10**19])}).encode(),
     "invalid_value", "feature 'items': value 10000000000000000000 at row 1 is out of range for INT64"),
    ("/v1/models/shop:predict", json.dumps({"instances": [{"amount": 0.1, "items": 12.5, "channel": "web", "region": "north"}]}).encode(),
     "invalid_value", "feature 'items': value 12.5 at row 0 is not an integer (int64)"),
    ("/v2/models/shop/infer", json.dumps({"inputs": with_input(0, data=[True, 1.0])}).encode(),
     "invalid_value", "feature 'amount': boolean true at row 0 is not a number"),
    ("/v1/models/shop:predict", json.dumps({"instances": [{"amount": False, "items": 1, "channel": "web", "region": "north"}]}).encode(),
     "invalid_value", "feature 'amount': boolean false at row 0 is not a number"),
    ("/v2/models/shop/infer", json.dumps({"inputs": with_input(0, datatype="BOOL", data=[True, False])}).encode(),
     "wrong_datatype", "feature 'amount' is numeric (float64): send it as FP32, FP64 or an integer type, not BOOL"),
    ("/v2/models/shop/infer", json.dumps({"inputs": with_input(0, datatype="UINT8", data=[-1, 2])}).encode(),
     "invalid_value", "feature 'amount': value -1 at row 0 is out of range for UINT8 (0 to 255)"),
    ("/v2/models/shop/infer", json.dumps({"inputs": with_input(0, datatype="INT8", data=[1, 300])}).encode(),
     "invalid_value", "feature 'amount': value 300 at row 1 is out of range for INT8 (-128 to 127)"),
]


@pytest.mark.parametrize(("path", "body", "reason", "text"), BAD_VALUES)
def test_bad_values_inside_data_are_a_named_400(server, path, body, reason, text):
    before = error_counts(server.url, "shop")
    response = httpx.post(f"{server.url}{path}", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert text in response.json()["error"]
    after = error_counts(server.url, "shop")
    assert after[reason] == before[reason] + 1 and after["internal_error"] == before["internal_error"]


@pytest.mark.parametrize("bad", ["q", {}, "HUGE"])
def test_a_matrix_input_names_the_feature_of_the_bad_column(server, cancer_frame, bad):
    """[2, 30] with the bad value at [1][3]: feature 3 of row 1, not the input's name and a flat index."""
    rows = cancer_frame.drop(columns="target").iloc[:2].to_numpy().tolist()
    rows[1][3] = bad
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [2, 30], "datatype": "FP64", "data": rows}]}).encode()
    body = body.replace(b'"HUGE"', b"1" + b"0" * 400)
    before = error_counts(server.url, "cancer")
    response = httpx.post(f"{server.url}/v2/models/cancer/infer", content=body)
    assert response.status_code == 400, response.text
    feature = cancer_frame.columns[3]
    problem = "value at row 1 is out of range for a number" if bad == "HUGE" else f"non-numeric value {bad!r} at row 1"
    assert response.json()["error"] == f"feature {feature!r} (input 'input-0', column 3): {problem}"
    assert error_counts(server.url, "cancer").get("invalid_value", 0) == before.get("invalid_value", 0) + 1


def test_data_nested_deeper_than_the_recursion_limit_is_not_a_crash(server):
    # JSON parsers take 1024 levels; Python's recursion stops near 1000.
    deep = b"[" * 950 + b'"web"' + b"]" * 950

    def body(index: int, other: str) -> bytes:
        payload = json.dumps({"inputs": with_input(index, data=["DEEP", other])}).encode()
        return payload.replace(b'"DEEP"', deep)

    response = httpx.post(f"{server.url}/v2/models/shop/infer", content=body(2, "app"))
    assert response.status_code == 200, response.text  # row-major values, however nested
    response = httpx.post(f"{server.url}/v2/models/shop/infer", content=body(0, "1.0"))
    assert response.status_code == 400 and "'amount'" in response.json()["error"], response.text


def typed_registry(root: Path) -> LinearRegression:
    """Register ``typed`` in ``root``: a regressor whose signature declares a float32 feature
    ``x`` and a bool feature ``flag`` (the reference data's dtypes). Returns the model."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=200).astype(np.float32), "flag": rng.random(200) < 0.5})
    frame["y"] = 2.0 * frame.x + frame.flag + rng.normal(scale=0.1, size=200)
    model = LinearRegression().fit(frame[["x", "flag"]], frame.y)
    card = register_model(model, name="typed", reference=frame, target="y", registry=root)
    assert [(f.name, f.dtype) for f in card.signature.features] == [("x", "float32"), ("flag", "bool")]
    return model


@pytest.fixture(scope="module")
def typed_server(tmp_path_factory):
    """A server of its own for ``typed`` (the shared registry has no float32 or bool feature)."""
    root = tmp_path_factory.mktemp("typed-registry")
    model = typed_registry(root)
    handle = start_server(root, tmp_path_factory.mktemp("typed-server"), "--drain-seconds", "0")
    yield handle, model
    stop_process(handle.process)


def typed_inputs(x, flag, flag_datatype="BOOL") -> list[dict]:
    return [{"name": "x", "shape": [len(x)], "datatype": "FP32", "data": list(x)},
            {"name": "flag", "shape": [len(flag)], "datatype": flag_datatype, "data": list(flag)}]


#: A float32 feature beyond float32 (the cast made it infinite) and a bool feature given a number
#: other than 0 or 1 (taken as it was): (path, body, message).
TYPED_BAD = [
    ("/v2/models/typed/infer", {"inputs": typed_inputs([0.5, 1e300], [True, False])},
     "feature 'x': value 1e+300 at row 1 is out of range for float32"),
    ("/v1/models/typed:predict", {"instances": [{"x": -1e39, "flag": True}]},
     "feature 'x': value -1e+39 at row 0 is out of range for float32"),
    ("/v2/models/typed/infer", {"inputs": typed_inputs([0.5, 1.0], [1, 7], "FP64")},
     "feature 'flag': value 7 at row 1 is not true or false (a bool feature takes true/false, or 0 and 1)"),
    ("/v1/models/typed:predict", {"instances": [{"x": 0.5, "flag": True}, {"x": 0.5, "flag": 0.5}]},
     "feature 'flag': value 0.5 at row 1 is not true or false (a bool feature takes true/false, or 0 and 1)"),
]


@pytest.mark.parametrize(("path", "body", "text"), TYPED_BAD)
def test_values_a_float32_or_bool_feature_cannot_hold_are_a_named_400(typed_server, path, body, text):
    server, _ = typed_server
    before = error_counts(server.url, "typed")
    response = httpx.post(f"{server.url}{path}", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == text
    after = error_counts(server.url, "typed")
    assert after["invalid_value"] == before["invalid_value"] + 1 and after["internal_error"] == before["internal_error"]


def test_a_float32_and_bool_feature_keep_their_values(typed_server):
    """In float32's range, true/false and 0/1 (and NaN where nullable: the unit tests) answer as the model does."""
    server, model = typed_server
    expected = model.predict(pd.DataFrame({"x": [0.5, -2.0, 0.5, -2.0], "flag": [True, False, True, False]})).tolist()
    for inputs in (typed_inputs([0.5, -2.0, 0.5, -2.0], [True, False, True, False]),
                   typed_inputs([0.5, -2.0, 0.5, -2.0], [1, 0, 1.0, 0.0], "FP64")):
        response = httpx.post(f"{server.url}/v2/models/typed/infer", json={"inputs": inputs})
        assert response.status_code == 200, response.text
        prediction = next(o for o in response.json()["outputs"] if o["name"] == "prediction")
        np.testing.assert_allclose(prediction["data"], expected, rtol=1e-5)
    records = [{"x": 0.5, "flag": True}, {"x": -2.0, "flag": 0}, {"x": 0.5, "flag": 1}, {"x": -2.0, "flag": False}]
    response = httpx.post(f"{server.url}/v1/models/typed:predict", json={"instances": records})
    assert response.status_code == 200, response.text
    np.testing.assert_allclose([p["prediction"] for p in response.json()["predictions"]], expected, rtol=1e-5)
