"""Open Inference Protocol (V2) request and response bodies, JSON and binary.

Binary tensor data is the KServe/Triton extension that standard V2 clients (tritonclient)
use by default: the JSON header comes first, its length in the
``Inference-Header-Content-Length`` HTTP header, then each tensor's raw bytes in input
order, each input naming its size in ``parameters.binary_data_size``.
"""

from __future__ import annotations

import itertools
import json
import struct
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from modelmon.errors import InvalidInputError, MalformedRequestError

HEADER_LENGTH = "inference-header-content-length"

#: V2 datatype -> numpy dtype of its binary encoding.
V2_NUMPY_TYPES: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
    "BYTES": np.object_,
}
NUMERIC_DATATYPES = frozenset(V2_NUMPY_TYPES) - {"BYTES"}


#: JSON's whitespace (RFC 8259): ``bytes.strip()`` would also take form feeds and vertical
#: tabs, which are not JSON, so a body of b"\x0c" passed for an empty one (schemathesis).
JSON_WHITESPACE = b" \t\n\r"


def loads_or_empty(body: bytes) -> Any:
    """``loads``, with an empty body (or one of JSON whitespace alone) read as ``{}``: the
    admin endpoints whose parameters are all optional."""
    return loads(body) if body.strip(JSON_WHITESPACE) else {}


def loads(body: bytes) -> Any:
    """Parse JSON; accepts the ``NaN``/``Infinity`` literals Python's json module writes, so
    that a NaN reaches validation and is reported by feature instead of as bad JSON."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except RecursionError:
        raise MalformedRequestError("request body is nested too deeply (JSON depth over 1000)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedRequestError(f"request body is not valid JSON: {exc}") from None


def dumps(content: Any) -> bytes:
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


@dataclass(slots=True)
class TensorInput:
    name: str
    shape: list[int]
    datatype: str
    data: Any  # a JSON list, or a numpy array decoded from binary data


@dataclass(slots=True)
class InferRequest:
    id: str | None
    inputs: list[TensorInput]
    #: Outputs asked for (None = all), and which of them to send as binary data.
    requested_outputs: list[str] | None = None
    binary_outputs: set[str] = field(default_factory=set)
    binary_by_default: bool = False


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise MalformedRequestError(message)


_JSON_TYPE_NAMES = {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer",
                    float: "number", type(None): "null"}


def _describe(value: Any) -> str:
    """What a client sent, for an error message: the JSON type, with the value when it is a
    short scalar (``-1``, ``true``), never the content of a string or container."""
    kind = _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
    if isinstance(value, (bool, int, float)):
        text = "true" if value is True else "false" if value is False else repr(value)
        return f"{kind} {text:.30}"
    if isinstance(value, str) and not value:
        return "an empty string"
    return kind


#: What ``dict.get`` returns for a required field that is absent (None is JSON null).
MISSING: Any = object()


def field_error(path: str, expected: str, value: Any) -> MalformedRequestError:
    """``inputs[0].datatype must be a string, got object``: a field missing or of the wrong
    JSON type, a client mistake counted as ``malformed_request``."""
    if value is MISSING:
        return MalformedRequestError(f"{path} is missing: it must be {expected}")
    return MalformedRequestError(f"{path} must be {expected}, got {_describe(value)}")


def _flag(parameters: dict[str, Any], key: str, path: str) -> bool:
    value = parameters.get(key)
    if value is None or value is False:
        return False
    if value is True:
        return True
    raise field_error(f"{path}.{key}", "a boolean", value)


def _check_shape(shape: Any, path: str) -> None:
    if not isinstance(shape, list):
        raise field_error(path, "a list of non-negative integers", shape)
    for j, dim in enumerate(shape):
        # type() rather than isinstance(): true and false are not dimensions.
        if type(dim) is not int or dim < 0:
            raise field_error(f"{path}[{j}]", "a non-negative integer", dim)


def decode_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    """The request, every field of it type-checked: a field of the wrong JSON type is a
    MalformedRequestError naming it by its path (``inputs[0].datatype``), never a crash
    further on. Checking a field is an isinstance() or two: the fast path stays fast."""
    json_end = len(body)
    if header_length is not None:
        header_length = header_length.strip()
        _require(header_length.isascii() and header_length.isdigit() and len(header_length) < 20,
                 "Inference-Header-Content-Length must be a non-negative integer (the JSON "
                 f"header's length in bytes), got {header_length!r:.30}")
        json_end = int(header_length)
        _require(0 < json_end <= len(body), "Inference-Header-Content-Length exceeds the body")
    payload = loads(body[:json_end])
    if not isinstance(payload, dict):
        raise field_error("the request body", "a JSON object", payload)
    raw_inputs = payload.get("inputs", MISSING)
    if not isinstance(raw_inputs, list):
        raise field_error("inputs", "a non-empty list", raw_inputs)
    _require(len(raw_inputs) > 0, "inputs must be a non-empty list, got an empty list")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise field_error("id", "a string", request_id)
    parameters = payload.get("parameters")
    binary_by_default = False
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise field_error("parameters", "an object", parameters)
        binary_by_default = _flag(parameters, "binary_data_output", "parameters")

    offset = json_end
    inputs = []
    for i, raw in enumerate(raw_inputs):
        if not isinstance(raw, dict):
            raise field_error(f"inputs[{i}]", "an object", raw)
        name, shape, datatype = raw.get("name", MISSING), raw.get("shape", MISSING), raw.get("datatype", MISSING)
        if not isinstance(name, str) or not name:
            raise field_error(f"inputs[{i}].name", "a non-empty string", name)
        _check_shape(shape, f"inputs[{i}].shape")
        if not isinstance(datatype, str):
            raise field_error(f"inputs[{i}].datatype", "a string", datatype)
        if datatype not in V2_NUMPY_TYPES:
            raise InvalidInputError(
                f"inputs[{i}].datatype: input {name!r} has unknown datatype {datatype!r:.40}; "
                f"expected one of {sorted(V2_NUMPY_TYPES)}",
                reason="wrong_datatype",
            )
        input_parameters = raw.get("parameters")
        binary_size = None
        if input_parameters is not None:
            if not isinstance(input_parameters, dict):
                raise field_error(f"inputs[{i}].parameters", "an object", input_parameters)
            binary_size = input_parameters.get("binary_data_size")
        if binary_size is not None:
            if type(binary_size) is not int or binary_size < 0:
                raise field_error(f"inputs[{i}].parameters.binary_data_size", "a non-negative integer", binary_size)
            _require(offset + binary_size <= len(body), f"input {name!r}: binary data runs past the body")
            data = decode_binary(body[offset : offset + binary_size], datatype, name)
            offset += binary_size
        else:
            data = raw.get("data", MISSING)
            if not isinstance(data, list):
                raise field_error(f"inputs[{i}].data", "a list (or binary data, with parameters.binary_data_size)", data)
        inputs.append(TensorInput(name=name, shape=shape, datatype=datatype, data=data))
    _require(offset == len(body), "the body has bytes after the last binary input")

    requested, binary_outputs = None, set()
    raw_outputs = payload.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise field_error("outputs", "a list", raw_outputs)
        requested = []
        for j, raw in enumerate(raw_outputs):
            if not isinstance(raw, dict):
                raise field_error(f"outputs[{j}]", "an object", raw)
            output_name = raw.get("name", MISSING)
            if not isinstance(output_name, str) or not output_name:
                raise field_error(f"outputs[{j}].name", "a non-empty string", output_name)
            requested.append(output_name)
            output_parameters = raw.get("parameters")
            if output_parameters is not None:
                if not isinstance(output_parameters, dict):
                    raise field_error(f"outputs[{j}].parameters", "an object", output_parameters)
                if _flag(output_parameters, "binary_data", f"outputs[{j}].parameters"):
                    binary_outputs.add(output_name)
    return InferRequest(
        id=request_id,
        inputs=inputs,
        requested_outputs=requested,
        binary_outputs=binary_outputs,
        binary_by_default=binary_by_default,
    )


def decode_binary(raw: bytes, datatype: str, name: str) -> np.ndarray:
    if datatype != "BYTES":
        dtype = np.dtype(V2_NUMPY_TYPES[datatype])
        if len(raw) % dtype.itemsize:
            raise MalformedRequestError(
                f"input {name!r}: {len(raw)} bytes is not a whole number of {datatype} values"
            )
        return np.frombuffer(raw, dtype=dtype)
    values, position = [], 0
    while position < len(raw):
        if position + 4 > len(raw):
            raise MalformedRequestError(f"input {name!r}: truncated BYTES element")
        (length,) = struct.unpack_from("<I", raw, position)
        position += 4
        if position + length > len(raw):
            raise MalformedRequestError(f"input {name!r}: truncated BYTES element")
        try:
            values.append(raw[position : position + length].decode())
        except UnicodeDecodeError:
            raise InvalidInputError(f"input {name!r}: BYTES element is not UTF-8", reason="invalid_value") from None
        position += length
    return np.array(values, dtype=object)


def encode_binary(array: np.ndarray, datatype: str) -> bytes:
    if datatype != "BYTES":
        return np.ascontiguousarray(array, dtype=V2_NUMPY_TYPES[datatype]).tobytes()
    parts = []
    for value in array.ravel():
        encoded = str(value).encode()
        parts.append(struct.pack("<I", len(encoded)))
        parts.append(encoded)
    return b"".join(parts)


@dataclass(slots=True)
class TensorOutput:
    name: str
    datatype: str
    array: np.ndarray


def check_requested_outputs(request: InferRequest, available: tuple[str, ...]) -> None:
    unknown = [n for n in request.requested_outputs or [] if n not in available]
    if unknown:
        raise InvalidInputError(
            f"unknown output(s) {unknown}; this model returns {list(available)}", reason="invalid_input"
        )


def encode_infer_response(
    model_name: str,
    model_version: str,
    request: InferRequest,
    outputs: list[TensorOutput],
    parameters: dict[str, Any] | None = None,
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when any output is binary;
    ``parameters``: the response's V2 parameters, if any."""
    if request.requested_outputs is not None:
        check_requested_outputs(request, tuple(o.name for o in outputs))
        by_name = {o.name: o for o in outputs}
        outputs = [by_name[n] for n in request.requested_outputs]
    response_outputs, binary_parts = [], []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.array.shape),
        }
        binary = output.name in request.binary_outputs or (
            request.requested_outputs is None and request.binary_by_default
        )
        if binary:
            raw = encode_binary(output.array, output.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            binary_parts.append(raw)
        else:
            data = output.array.ravel()
            # orjson serialises numeric numpy arrays natively, but not strings.
            entry["data"] = data.tolist() if data.dtype.kind in "OUS" else data
        response_outputs.append(entry)
    response: dict[str, Any] = {
        "model_name": model_name,
        "model_version": model_version,
        "id": request.id,
        "outputs": response_outputs,
    }
    if parameters:
        response["parameters"] = parameters
    header = dumps(response)
    if not binary_parts:
        return header, None
    return header + b"".join(binary_parts), len(header)


_REQUEST_ID_PREFIX = uuid.uuid4().hex[:16]
_request_counter = itertools.count(1)


def new_request_id() -> str:
    """An id for a request that came without one: a random per-process prefix and a counter
    (unique like a uuid4, at a tenth of its cost on the request path)."""
    return f"{_REQUEST_ID_PREFIX}-r{next(_request_counter)}"
