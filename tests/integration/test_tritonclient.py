"""A standard V2 client, unchanged, against the server: JSON and binary tensor data."""

import numpy as np
import pytest
import tritonclient.http as triton

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def client(server):
    with_client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    yield with_client
    with_client.close()


def test_health_and_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("shop")
    metadata = client.get_model_metadata("cancer")
    assert len(metadata["inputs"]) == 30


@pytest.mark.parametrize("binary", [False, True])
def test_matrix_infer(client, cancer_model, cancer_frame, binary):
    frame = cancer_frame.drop(columns="target").iloc[:16]
    X = frame.to_numpy(dtype=np.float32)
    tensor = triton.InferInput("input-0", list(X.shape), "FP32")
    tensor.set_data_from_numpy(X, binary_data=binary)
    outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities", "prediction_id")]
    result = client.infer("cancer", [tensor], outputs=outputs, request_id="abc")
    assert result.get_response()["id"] == "abc"
    np.testing.assert_array_equal(result.as_numpy("label"), cancer_model.predict(frame.astype(np.float32)))
    np.testing.assert_allclose(result.as_numpy("probabilities"), cancer_model.predict_proba(frame.astype(np.float32)), atol=1e-5)
    assert result.as_numpy("prediction_id").shape == (16,)


def test_columnar_bytes_infer_with_default_binary_outputs(client, shop_model, shop_frame):
    rows = shop_frame.iloc[:10]
    tensors = []
    for name, datatype, values in (
        ("amount", "FP64", rows.amount.to_numpy()),
        ("items", "INT64", rows["items"].to_numpy()),
        ("channel", "BYTES", rows.channel.to_numpy(dtype=object)),
        ("region", "BYTES", rows.region.to_numpy(dtype=object)),
    ):
        tensor = triton.InferInput(name, [len(values)], datatype)
        tensor.set_data_from_numpy(values)  # binary by default
        tensors.append(tensor)
    result = client.infer("shop", tensors)  # no outputs named: binary outputs by default
    labels = [v.decode() for v in result.as_numpy("label")]
    assert labels == list(shop_model.predict(rows.drop(columns="segment")))
    proba = result.as_numpy("probabilities").reshape(10, 3)
    np.testing.assert_allclose(proba, shop_model.predict_proba(rows.drop(columns="segment")), atol=1e-5)


def test_client_error_surfaces_the_message(client):
    tensor = triton.InferInput("amount", [1], "FP64")
    tensor.set_data_from_numpy(np.array([1.0]))
    with pytest.raises(triton.InferenceServerException, match="missing feature"):
        client.infer("shop", [tensor])
