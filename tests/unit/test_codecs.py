import json
import struct

import numpy as np
import pytest

from modelmon.errors import InvalidInputError, MalformedRequestError
from modelmon.serving import codecs


def binary_request(inputs: list[tuple[str, str, list[int], np.ndarray]], extra: dict | None = None):
    header = {"inputs": [], **(extra or {})}
    blobs = []
    for name, datatype, shape, array in inputs:
        raw = codecs.encode_binary(array, datatype)
        header["inputs"].append({"name": name, "datatype": datatype, "shape": shape,
                                 "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    head = json.dumps(header).encode()
    return head + b"".join(blobs), str(len(head))


def test_binary_inputs_decode_to_the_sent_arrays():
    floats = np.arange(6, dtype=np.float32).reshape(2, 3)
    words = np.array(["red", "", "grün"], dtype=object)
    body, length = binary_request([("x", "FP32", [2, 3], floats), ("c", "BYTES", [3], words)])
    request = codecs.decode_infer_request(body, length)
    assert [i.name for i in request.inputs] == ["x", "c"]
    np.testing.assert_array_equal(request.inputs[0].data, floats.ravel())
    assert list(request.inputs[1].data) == ["red", "", "grün"]


def test_bytes_encoding_is_length_prefixed_little_endian():
    raw = codecs.encode_binary(np.array(["ab", "c"], dtype=object), "BYTES")
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"


def test_json_request_with_nan_literal_parses():
    request = codecs.decode_infer_request(
        b'{"inputs":[{"name":"a","shape":[2],"datatype":"FP64","data":[NaN, 1]}]}', None
    )
    assert np.isnan(request.inputs[0].data[0])


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"{nope", None, "not valid JSON"),
        (b"[" * 100_000 + b"]" * 100_000, None, "nested too deeply"),
        (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", None, "nested too deeply"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"inputs": []}', None, "non-empty list"),
        (b'{"inputs": [{"name": "a", "shape": [-1], "datatype": "FP32", "data": []}]}', None, "shape"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": 5}]}', None, "'data' must be a list"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}', "999", "exceeds the body"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "parameters": {"binary_data_size": 8}}]}abcd', "json-only", "past the body"),
    ],
)
def test_malformed_requests_are_named(body, header, message):
    if header == "json-only":  # the JSON header is everything before the 4 binary bytes
        header = str(len(body) - 4)
    with pytest.raises(MalformedRequestError, match=message):
        codecs.decode_infer_request(body, header)


def test_unknown_datatype_is_a_datatype_error():
    with pytest.raises(InvalidInputError) as info:
        codecs.decode_infer_request(b'{"inputs":[{"name":"a","shape":[1],"datatype":"FP8","data":[1]}]}', None)
    assert info.value.reason == "wrong_datatype"


def test_binary_output_round_trips_through_the_response():
    request = codecs.InferRequest(id="r1", inputs=[], binary_by_default=True)
    outputs = [
        codecs.TensorOutput("label", "BYTES", np.array(["a", "b"], dtype=object)),
        codecs.TensorOutput("probabilities", "FP64", np.array([[0.25, 0.75], [1.0, 0.0]])),
    ]
    body, length = codecs.encode_infer_response("m", "1", request, outputs)
    header = json.loads(body[:length])
    assert header["id"] == "r1" and header["model_version"] == "1"
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    rest = body[length:]
    labels = codecs.decode_binary(rest[: sizes[0]], "BYTES", "label")
    proba = np.frombuffer(rest[sizes[0] :], dtype=np.float64).reshape(2, 2)
    assert list(labels) == ["a", "b"]
    np.testing.assert_array_equal(proba, outputs[1].array)


def test_requested_outputs_filter_and_unknown_output_is_rejected():
    outputs = [codecs.TensorOutput("label", "INT64", np.array([1, 0]))]
    request = codecs.InferRequest(id=None, inputs=[], requested_outputs=["label"])
    body, length = codecs.encode_infer_response("m", "1", request, outputs)
    assert length is None and json.loads(body)["outputs"][0]["data"] == [1, 0]
    with pytest.raises(InvalidInputError, match="unknown output"):
        codecs.encode_infer_response("m", "1", codecs.InferRequest(id=None, inputs=[], requested_outputs=["x"]), outputs)
