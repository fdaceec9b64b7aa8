"""The V2 gRPC message codec on its own: typed contents of every datatype against numpy,
raw contents through the REST codec's decoder, and the checks that name a field."""

from __future__ import annotations

import numpy as np
import pytest
from tritonclient.utils import deserialize_bytes_tensor

from modelmon.errors import InvalidInputError, MalformedRequestError
from modelmon.serving.codecs import TensorOutput
from modelmon.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
from modelmon.serving.grpc_v2.service import listen_address
from modelmon.serving.grpc_v2.tensors import decode_infer_request, encode_infer_response

Tensor = pb.ModelInferRequest.InferInputTensor


def one(tensor: Tensor, raw: list[bytes] | None = None) -> np.ndarray:
    request = decode_infer_request(pb.ModelInferRequest(model_name="m", inputs=[tensor], raw_input_contents=raw or []))
    return request.inputs[0].data


@pytest.mark.parametrize(("datatype", "field", "values"), [
    ("BOOL", "bool_contents", [True, False]),
    ("INT8", "int_contents", [-128, 127]),
    ("INT32", "int_contents", [-(2**31), 2**31 - 1]),
    ("INT64", "int64_contents", [-(2**63), 2**63 - 1]),
    ("UINT16", "uint_contents", [0, 65535]),
    ("UINT64", "uint64_contents", [0, 2**64 - 1]),
    ("FP32", "fp32_contents", [0.5, -1.25]),
    ("FP64", "fp64_contents", [0.1, 1e300]),
])
def test_typed_contents_keep_every_value(datatype, field, values):
    data = one(Tensor(name="x", datatype=datatype, shape=[2], contents=pb.InferTensorContents(**{field: values})))
    assert data.tolist() == values


def test_bytes_contents_are_text_and_raw_bytes_as_in_rest():
    assert one(Tensor(name="c", datatype="BYTES", shape=[2], contents=pb.InferTensorContents(bytes_contents=[b"web", "é".encode()]))).tolist() == ["web", "é"]
    raw = b"\x03\x00\x00\x00app" + b"\x00\x00\x00\x00"
    assert one(Tensor(name="c", datatype="BYTES", shape=[2]), [raw]).tolist() == ["app", ""]
    values = np.array([1.5, -2.0, 3.25])
    np.testing.assert_array_equal(one(Tensor(name="x", datatype="FP64", shape=[3]), [values.tobytes()]), values)
    np.testing.assert_array_equal(one(Tensor(name="x", datatype="FP16", shape=[3]), [values.astype(np.float16).tobytes()]), values)


@pytest.mark.parametrize(("request_", "error", "reason", "words"), [
    (pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="INT8", shape=[1], contents=pb.InferTensorContents(int_contents=[128]))]),
     InvalidInputError, "invalid_value", "inputs[0].contents.int_contents: input 'x' value 128 at index 0 is out of range for INT8"),
    (pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="UINT8", shape=[2], contents=pb.InferTensorContents(uint_contents=[1, 256]))]),
     InvalidInputError, "invalid_value", "value 256 at index 1 is out of range for UINT8"),
    (pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="FP16", shape=[1])]),
     InvalidInputError, "wrong_datatype", "inputs[0] ('x'): FP16 has no typed contents; send it in raw_input_contents"),
    (pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="FP64", shape=[1], contents=pb.InferTensorContents(fp64_contents=[1.0]))],
                          raw_input_contents=[b"\0" * 8]),
     MalformedRequestError, "malformed_request", "inputs[0].contents is set and so is raw_input_contents"),
    (pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="FP64", shape=[1])], raw_input_contents=[b"\0" * 7]),
     MalformedRequestError, "malformed_request", "input 'x': 7 bytes is not a whole number of FP64 values"),
    (pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="BYTES", shape=[1])], raw_input_contents=[b"\x09\x00\x00\x00ab"]),
     MalformedRequestError, "malformed_request", "input 'x': truncated BYTES element"),
    (pb.ModelInferRequest(inputs=[Tensor(datatype="FP64", shape=[1])]), MalformedRequestError, "malformed_request", "inputs[0].name is missing"),
    (pb.ModelInferRequest(inputs=[Tensor(name="x", shape=[1])]), MalformedRequestError, "malformed_request", "inputs[0].datatype is missing"),
    (pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="FP64", shape=[1, -1])]), MalformedRequestError, "malformed_request",
     "inputs[0].shape[1] must be a non-negative integer, got -1"),
    (pb.ModelInferRequest(inputs=[Tensor(name="x", datatype="FP64", shape=[1])], outputs=[pb.ModelInferRequest.InferRequestedOutputTensor()]),
     MalformedRequestError, "malformed_request", "outputs[0].name is missing"),
])
def test_a_bad_field_is_named(request_, error, reason, words):
    with pytest.raises(error) as caught:
        decode_infer_request(request_)
    assert caught.value.reason == reason and words in caught.value.message


def test_response_is_raw_contents_that_tritonclient_reads():
    request = decode_infer_request(pb.ModelInferRequest(
        inputs=[Tensor(name="x", datatype="FP64", shape=[1], contents=pb.InferTensorContents(fp64_contents=[1.0]))],
        outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name="prediction_id"), pb.ModelInferRequest.InferRequestedOutputTensor(name="p")],
        id="r1",
    ))
    outputs = [TensorOutput("p", "FP64", np.array([[0.25, 0.75]])), TensorOutput("prediction_id", "BYTES", np.array(["a-1"], dtype=object)),
               TensorOutput("label", "INT64", np.array([1]))]
    response = encode_infer_response("m", "2", request, outputs)
    assert (response.model_name, response.model_version, response.id) == ("m", "2", "r1")
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("prediction_id", "BYTES", [1]), ("p", "FP64", [1, 2])]
    assert deserialize_bytes_tensor(response.raw_output_contents[0]).tolist() == [b"a-1"]
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[1], "<f8"), [0.25, 0.75])


def test_the_listen_address_brackets_an_ipv6_host():
    assert listen_address("127.0.0.1", 8081) == "127.0.0.1:8081"
    assert listen_address("::", 8081) == "[::]:8081"
    assert listen_address("[::1]", 8081) == "[::1]:8081"
