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
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": 5}]}', None, r"inputs\[0\].data must be a list"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}', "1e2",
         "Inference-Header-Content-Length must be a non-negative integer .the JSON header's length in bytes., got '1e2'"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}', "-3", "must be a non-negative integer.*got '-3'"),
        (b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP32", "data": [1]}]}', "9" * 5000, "must be a non-negative integer"),
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


VALID_INPUT = {"name": "a", "shape": [1], "datatype": "FP32", "data": [1.5]}


def decode(payload: dict) -> codecs.InferRequest:
    return codecs.decode_infer_request(json.dumps(payload).encode(), None)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        # issue 15: an unhashable datatype crashed the codec (TypeError, a 500)
        ({"inputs": [{**VALID_INPUT, "datatype": {}}]}, "inputs[0].datatype must be a string, got object"),
        ({"inputs": [{**VALID_INPUT, "datatype": ["FP32"]}]}, "inputs[0].datatype must be a string, got list"),
        ({"inputs": [{**VALID_INPUT, "datatype": 32}]}, "inputs[0].datatype must be a string, got integer 32"),
        ({"inputs": [VALID_INPUT, {k: v for k, v in VALID_INPUT.items() if k != "datatype"}]},
         "inputs[1].datatype is missing: it must be a string"),
        ({"inputs": [{**VALID_INPUT, "name": None}]}, "inputs[0].name must be a non-empty string, got null"),
        ({"inputs": [{**VALID_INPUT, "name": ""}]}, "inputs[0].name must be a non-empty string, got an empty string"),
        ({"inputs": [{**VALID_INPUT, "shape": "1"}]}, "inputs[0].shape must be a list of non-negative integers, got string"),
        ({"inputs": [{**VALID_INPUT, "shape": [1, -2]}]}, "inputs[0].shape[1] must be a non-negative integer, got integer -2"),
        ({"inputs": [{**VALID_INPUT, "shape": [1.0]}]}, "inputs[0].shape[0] must be a non-negative integer, got number 1.0"),
        ({"inputs": [{**VALID_INPUT, "shape": [False]}]}, "inputs[0].shape[0] must be a non-negative integer, got boolean false"),
        ({"inputs": [{**VALID_INPUT, "data": None}]}, "inputs[0].data must be a list"),
        ({"inputs": [{k: v for k, v in VALID_INPUT.items() if k != "data"}]}, "inputs[0].data is missing"),
        ({"inputs": [{**VALID_INPUT, "parameters": "binary"}]}, "inputs[0].parameters must be an object, got string"),
        ({"inputs": [{**VALID_INPUT, "parameters": {"binary_data_size": True}}]},
         "inputs[0].parameters.binary_data_size must be a non-negative integer, got boolean true"),
        ({"inputs": [{**VALID_INPUT, "parameters": {"binary_data_size": -4}}]},
         "inputs[0].parameters.binary_data_size must be a non-negative integer, got integer -4"),
        ({"inputs": [None]}, "inputs[0] must be an object, got null"),
        ({"inputs": "a"}, "inputs must be a non-empty list, got string"),
        ({}, "inputs is missing: it must be a non-empty list"),
        ({"inputs": [VALID_INPUT], "id": {"n": 1}}, "id must be a string, got object"),
        ({"inputs": [VALID_INPUT], "parameters": []}, "parameters must be an object, got list"),
        ({"inputs": [VALID_INPUT], "parameters": {"binary_data_output": 1}},
         "parameters.binary_data_output must be a boolean, got integer 1"),
        ({"inputs": [VALID_INPUT], "outputs": "label"}, "outputs must be a list, got string"),
        ({"inputs": [VALID_INPUT], "outputs": [["label"]]}, "outputs[0] must be an object, got list"),
        ({"inputs": [VALID_INPUT], "outputs": [{"name": "label"}, {}]}, "outputs[1].name is missing: it must be a non-empty string"),
        # issue 15: a list here crashed the codec (AttributeError, a 500)
        ({"inputs": [VALID_INPUT], "outputs": [{"name": "label", "parameters": ["binary_data"]}]},
         "outputs[0].parameters must be an object, got list"),
        ({"inputs": [VALID_INPUT], "outputs": [{"name": "label", "parameters": {"binary_data": "true"}}]},
         "outputs[0].parameters.binary_data must be a boolean, got string"),
    ],
)
def test_every_field_is_type_checked_and_named(payload, message):
    with pytest.raises(MalformedRequestError) as info:
        decode(payload)
    assert message in info.value.message
    assert info.value.reason == "malformed_request" and info.value.status_code == 400


def test_unknown_datatype_string_names_the_field_and_the_input():
    with pytest.raises(InvalidInputError, match=r"inputs\[0\].datatype: input 'a' has unknown datatype 'FP8'"):
        decode({"inputs": [{**VALID_INPUT, "datatype": "FP8"}]})


def test_optional_fields_may_be_null_or_absent():
    request = decode({"inputs": [{**VALID_INPUT, "parameters": None}], "id": None, "parameters": None, "outputs": None})
    assert request.id is None and request.requested_outputs is None and not request.binary_by_default
    request = decode({"inputs": [{**VALID_INPUT, "parameters": {"binary_data_size": None, "other": [1]}}],
                      "parameters": {"binary_data_output": False, "priority": {"x": 1}},
                      "outputs": [{"name": "label", "parameters": {"binary_data": True}}, {"name": "probabilities"}]})
    assert request.inputs[0].data == [1.5]
    assert request.requested_outputs == ["label", "probabilities"] and request.binary_outputs == {"label"}


@pytest.mark.parametrize("body", [b"", b" ", b"\r\n\t "])
def test_an_empty_admin_body_means_no_parameters(body):
    assert codecs.loads_or_empty(body) == {}


@pytest.mark.parametrize("body", [b"\x0c", b"\x0b", b" \x0c\n"])
def test_a_body_of_whitespace_json_does_not_allow_is_rejected(body):
    # bytes.strip() takes form feeds and vertical tabs too: such a body passed for an empty
    # one and the repository loaded a model on it (schemathesis found it).
    with pytest.raises(MalformedRequestError, match="not valid JSON"):
        codecs.loads_or_empty(body)


def test_an_admin_body_with_parameters_is_parsed():
    assert codecs.loads_or_empty(b' {"parameters": {"version": "2"}} ') == {"parameters": {"version": "2"}}
