"""V2 gRPC messages to and from the types of the REST path (``codecs.InferRequest``,
``codecs.TensorOutput``), so that both protocols share one validation and one model path.

Every field of a request is checked here, with the REST codec's errors and reasons, each
naming the field by its path (``inputs[0].contents``); what the signature decides (shapes,
datatypes of features, values) is left to ``RequestValidator`` as for REST.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelmon.errors import InvalidInputError, MalformedRequestError
from modelmon.serving import codecs
from modelmon.serving.grpc_v2 import grpc_predict_v2_pb2 as pb

#: The InferTensorContents field that carries each datatype's values, and the numpy dtype of
#: that field's elements (INT8 travels in int32s: its range is checked on the way in).
CONTENTS_FIELDS: dict[str, tuple[str, Any]] = {
    "BOOL": ("bool_contents", np.bool_),
    "INT8": ("int_contents", np.int32),
    "INT16": ("int_contents", np.int32),
    "INT32": ("int_contents", np.int32),
    "INT64": ("int64_contents", np.int64),
    "UINT8": ("uint_contents", np.uint32),
    "UINT16": ("uint_contents", np.uint32),
    "UINT32": ("uint_contents", np.uint32),
    "UINT64": ("uint64_contents", np.uint64),
    "FP32": ("fp32_contents", np.float32),
    "FP64": ("fp64_contents", np.float64),
    "BYTES": ("bytes_contents", None),
}
ALL_CONTENTS_FIELDS = tuple(dict.fromkeys(field for field, _ in CONTENTS_FIELDS.values()))


def decode_infer_request(message: pb.ModelInferRequest) -> codecs.InferRequest:
    """The request's inputs, requested outputs and id; parameters are accepted and ignored,
    as no option of modelmon reads them."""
    inputs = message.inputs
    if not inputs:
        raise MalformedRequestError("inputs is empty: a request needs at least one input tensor")
    raw = message.raw_input_contents
    if raw and len(raw) != len(inputs):
        raise MalformedRequestError(
            f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs: it needs one per input, in order"
        )
    tensors = []
    for i, tensor in enumerate(inputs):
        path = f"inputs[{i}]"
        name, datatype = tensor.name, tensor.datatype
        if not name:
            raise MalformedRequestError(f"{path}.name is missing: it must be a non-empty string")
        if not datatype:
            raise MalformedRequestError(f"{path}.datatype is missing: it must be one of {sorted(codecs.V2_NUMPY_TYPES)}")
        if datatype not in codecs.V2_NUMPY_TYPES:
            raise InvalidInputError(
                f"{path}.datatype: input {name!r} has unknown datatype {datatype!r:.40}; "
                f"expected one of {sorted(codecs.V2_NUMPY_TYPES)}",
                reason="wrong_datatype",
            )
        shape = list(tensor.shape)
        for j, dim in enumerate(shape):
            if dim < 0:
                raise MalformedRequestError(f"{path}.shape[{j}] must be a non-negative integer, got {dim}")
        if raw:
            if tensor.HasField("contents"):
                raise MalformedRequestError(
                    f"{path}.contents is set and so is raw_input_contents: send each input's data in one of them"
                )
            data = codecs.decode_binary(raw[i], datatype, name)
        else:
            data = _typed_contents(tensor, path)
        tensors.append(codecs.TensorInput(name=name, shape=shape, datatype=datatype, data=data))
    requested = None
    if message.outputs:
        requested = []
        for j, output in enumerate(message.outputs):
            if not output.name:
                raise MalformedRequestError(f"outputs[{j}].name is missing: it must be a non-empty string")
            requested.append(output.name)
    return codecs.InferRequest(id=message.id or None, inputs=tensors, requested_outputs=requested)


def _typed_contents(tensor: pb.ModelInferRequest.InferInputTensor, path: str) -> np.ndarray:
    """The values of ``contents``, from the one field that matches the datatype."""
    datatype = tensor.datatype
    if datatype not in CONTENTS_FIELDS:  # FP16: protobuf has no 16-bit float
        raise InvalidInputError(
            f"{path} ({tensor.name!r}): {datatype} has no typed contents; send it in raw_input_contents",
            reason="wrong_datatype",
        )
    field, dtype = CONTENTS_FIELDS[datatype]
    contents = tensor.contents
    for other in ALL_CONTENTS_FIELDS:
        if other != field and len(getattr(contents, other)):
            raise InvalidInputError(
                f"{path}.contents.{other}: input {tensor.name!r} is {datatype}, whose values go in contents.{field}",
                reason="wrong_datatype",
            )
    values = getattr(contents, field)
    if dtype is None:
        return _decode_strings(values, tensor.name)
    array = np.array(values, dtype=dtype)
    target = np.dtype(codecs.V2_NUMPY_TYPES[datatype])
    if target != array.dtype and array.size:
        info = np.iinfo(target)
        outside = (array < info.min) | (array > info.max)
        if outside.any():
            k = int(np.argmax(outside))
            raise InvalidInputError(
                f"{path}.contents.{field}: input {tensor.name!r} value {array[k]} at index {k} is out of range for {datatype}",
                reason="invalid_value",
            )
    return array


def _decode_strings(values: Any, name: str) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    for k, value in enumerate(values):
        try:
            out[k] = value.decode()
        except UnicodeDecodeError:
            raise InvalidInputError(f"input {name!r}: BYTES element {k} is not UTF-8", reason="invalid_value") from None
    return out


def encode_infer_response(
    model_name: str, model_version: str, request: codecs.InferRequest, outputs: list[codecs.TensorOutput]
) -> pb.ModelInferResponse:
    """The outputs asked for (all when none were), each in raw_output_contents, as Triton
    answers: one bytes per output, BYTES as length-prefixed elements (``codecs.encode_binary``)."""
    if request.requested_outputs is not None:
        by_name = {o.name: o for o in outputs}
        outputs = [by_name[n] for n in request.requested_outputs]
    response = pb.ModelInferResponse(model_name=model_name, model_version=model_version, id=request.id or "")
    for output in outputs:
        response.outputs.add(name=output.name, datatype=output.datatype, shape=output.array.shape)
        response.raw_output_contents.append(codecs.encode_binary(output.array, output.datatype))
    return response


def metadata_message(metadata: dict[str, Any]) -> pb.ModelMetadataResponse:
    """The REST model metadata (``app.model_metadata``) as a message; the message has no
    place for the tensors' parameters (categories, nullable), which REST's metadata gives."""
    response = pb.ModelMetadataResponse(
        name=metadata["name"], versions=metadata["versions"], platform=metadata["platform"]
    )
    for kind in ("inputs", "outputs"):
        for tensor in metadata[kind]:
            getattr(response, kind).add(name=tensor["name"], datatype=tensor["datatype"], shape=tensor["shape"])
    return response
