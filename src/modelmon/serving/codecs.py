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


def decode_infer_request(body: bytes, header_length: str | None) -> InferRequest:
    json_end = len(body)
    if header_length is not None:
        try:
            json_end = int(header_length)
        except ValueError:
            raise MalformedRequestError("Inference-Header-Content-Length is not an integer") from None
        _require(0 < json_end <= len(body), "Inference-Header-Content-Length exceeds the body")
    payload = loads(body[:json_end])
    _require(isinstance(payload, dict), "the request body must be a JSON object")
    raw_inputs = payload.get("inputs")
    _require(isinstance(raw_inputs, list) and raw_inputs, "'inputs' must be a non-empty list")
    request_id = payload.get("id")
    _require(request_id is None or isinstance(request_id, str), "'id' must be a string")
    parameters = payload.get("parameters") or {}
    _require(isinstance(parameters, dict), "'parameters' must be an object")

    offset = json_end
    inputs = []
    for i, raw in enumerate(raw_inputs):
        _require(isinstance(raw, dict), f"inputs[{i}] must be an object")
        name, shape, datatype = raw.get("name"), raw.get("shape"), raw.get("datatype")
        _require(isinstance(name, str) and name, f"inputs[{i}] needs a 'name' string")
        _require(
            isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape),
            f"input {name!r}: 'shape' must be a list of non-negative integers",
        )
        if datatype not in V2_NUMPY_TYPES:
            raise InvalidInputError(
                f"input {name!r}: unknown datatype {datatype!r}; expected one of "
                f"{sorted(V2_NUMPY_TYPES)}",
                reason="wrong_datatype",
            )
        input_parameters = raw.get("parameters") or {}
        binary_size = input_parameters.get("binary_data_size") if isinstance(input_parameters, dict) else None
        if binary_size is not None:
            _require(isinstance(binary_size, int) and binary_size >= 0, f"input {name!r}: bad binary_data_size")
            _require(offset + binary_size <= len(body), f"input {name!r}: binary data runs past the body")
            data = decode_binary(body[offset : offset + binary_size], datatype, name)
            offset += binary_size
        else:
            data = raw.get("data")
            _require(isinstance(data, list), f"input {name!r}: 'data' must be a list")
        inputs.append(TensorInput(name=name, shape=shape, datatype=datatype, data=data))
    _require(offset == len(body), "the body has bytes after the last binary input")

    requested, binary_outputs = None, set()
    raw_outputs = payload.get("outputs")
    if raw_outputs is not None:
        _require(isinstance(raw_outputs, list), "'outputs' must be a list")
        requested = []
        for raw in raw_outputs:
            _require(isinstance(raw, dict) and isinstance(raw.get("name"), str), "each output needs a 'name'")
            requested.append(raw["name"])
            if (raw.get("parameters") or {}).get("binary_data"):
                binary_outputs.add(raw["name"])
    return InferRequest(
        id=request_id,
        inputs=inputs,
        requested_outputs=requested,
        binary_outputs=binary_outputs,
        binary_by_default=bool(parameters.get("binary_data_output")),
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
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when any output is binary."""
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
    header = dumps(
        {
            "model_name": model_name,
            "model_version": model_version,
            "id": request.id,
            "outputs": response_outputs,
        }
    )
    if not binary_parts:
        return header, None
    return header + b"".join(binary_parts), len(header)


_REQUEST_ID_PREFIX = uuid.uuid4().hex[:16]
_request_counter = itertools.count(1)


def new_request_id() -> str:
    """An id for a request that came without one: a random per-process prefix and a counter
    (unique like a uuid4, at a tenth of its cost on the request path)."""
    return f"{_REQUEST_ID_PREFIX}-r{next(_request_counter)}"
