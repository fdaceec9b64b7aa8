"""The OpenAPI document of the server (``GET /openapi.json``).

Written out by hand, next to the routes it describes, because the V2 protocol's shapes are
fixed by its specification rather than derived from our code. The schemathesis tests check
the live server against it: every status and body a client can see is listed here.
"""

from __future__ import annotations

from typing import Any

import modelmon
from modelmon.serving.codecs import V2_NUMPY_TYPES
from modelmon.serving.feedback import MAX_LABELS_PER_REQUEST
from modelmon.serving.rollout_gates import GATES

JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


ERROR_RESPONSES = {
    "400": _json(_ref("Error"), "Bad input: the message names the feature or field and the problem."),
    "401": _json(_ref("Error"), "Missing or wrong bearer token (only when a token is configured)."),
    "404": _json(_ref("Error"), "Unknown model or version."),
    "413": _json(_ref("Error"), "Body over the size limit."),
}

def _parameters(**known: dict[str, Any]) -> dict[str, Any]:
    """A V2 ``parameters`` object: the keys the server reads, typed; others are ignored.
    Optional fields may be null, which the server takes as absent."""
    return {"type": "object", "nullable": True,
            "properties": {key: {**schema, "nullable": True} for key, schema in known.items()}}


# What codecs.decode_infer_request accepts, no more: every request outside these schemas is
# a 400 (the schemathesis test sends such requests and checks that).
SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}},
    "TensorInput": {
        "type": "object",
        "required": ["name", "shape", "datatype"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": {"type": "string", "enum": sorted(V2_NUMPY_TYPES)},
            "parameters": _parameters(binary_data_size={"type": "integer", "minimum": 0}),
            "data": {"type": "array", "description": "Row-major values, flat or nested; omitted with binary data."},
        },
    },
    "RequestedOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1},
                       "parameters": _parameters(binary_data={"type": "boolean"})},
    },
    "InferRequest": {
        "type": "object",
        "required": ["inputs"],
        "properties": {
            "id": {"type": "string", "nullable": True},
            "parameters": _parameters(binary_data_output={"type": "boolean"}),
            "inputs": {"type": "array", "minItems": 1, "items": _ref("TensorInput")},
            "outputs": {"type": "array", "nullable": True, "items": _ref("RequestedOutput")},
        },
        "example": {"id": "request-1", "inputs": [{"name": "input-0", "shape": [1, 2], "datatype": "FP64",
                                                   "data": [[0.5, 1.5]]}]},
    },
    "TensorOutput": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {
            "name": {"type": "string"},
            "datatype": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer"}},
            "data": {"type": "array"},
            "parameters": {"type": "object"},
        },
    },
    "InferResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "id", "outputs"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "outputs": {"type": "array", "items": _ref("TensorOutput")},
            "parameters": {"type": "object", "properties": {"model_versions": {
                "type": "string", "description": "Only when a canary sticky by a feature split the rows "
                "between two versions: each row's version, comma-separated, in row order (docs/rollout.md)."}}},
        },
    },
    "RecordsRequest": {
        "type": "object",
        "required": ["instances"],
        "properties": {"instances": {"type": "array", "items": {"type": "object"}, "minItems": 1}},
        "example": {"instances": [{"feature_a": 1.5, "feature_b": "web"}]},
    },
    "RecordsResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "predictions"],
        "properties": {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "predictions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["id", "label", "probabilities"],
                    "properties": {"id": {"type": "string"}, "label": {}, "probabilities": {"type": "object"},
                                   "model_version": {"type": "string", "description": "Only when a canary sticky by a "
                                                     "feature split the rows between two versions: this row's."}},
                },
            },
        },
    },
    "FeedbackLabels": {
        "type": "array",
        "minItems": 1,
        # Not maxItems: a request over the body size limit is a 413, which schema checkers
        # do not take for the rejection of a too-long list.
        "description": f"At most {MAX_LABELS_PER_REQUEST} labels per request.",
        "items": {
            "type": "object",
            "required": ["id", "label"],
            "properties": {"id": {"type": "string"}, "label": {"oneOf": [{"type": "string"}, {"type": "integer"}]}},
        },
    },
    "FeedbackRequest": {
        "oneOf": [
            {"type": "object", "required": ["labels"], "properties": {"labels": _ref("FeedbackLabels")}},
            _ref("FeedbackLabels"),
        ],
        "description": '{"labels": [...]}, or the bare list.',
        "example": {"labels": [{"id": "<prediction_id from the inference response>", "label": "<class>"}]},
    },
    "FeedbackResponse": {
        "type": "object",
        "required": ["matched", "duplicate", "unknown", "duplicate_ids", "unknown_ids"],
        "properties": {
            "matched": {"type": "integer"},
            "duplicate": {"type": "integer"},
            "unknown": {"type": "integer"},
            "duplicate_ids": {"type": "array", "items": {"type": "string"}},
            "unknown_ids": {"type": "array", "items": {"type": "string"}},
        },
    },
    "RepositoryRequest": {
        "type": "object",
        "properties": {"parameters": {"type": "object", "properties": {"version": {
            "anyOf": [{"type": "string"}, {"type": "integer"}], "nullable": True,
            "description": "A version number, or 'latest'; null or absent is the latest."}}}},
    },
    "RolloutStart": {
        "type": "object",
        "required": ["candidate"],
        "additionalProperties": False,
        "description": "docs/rollout.md: only candidate is required; every field is checked, and a bad one changes nothing.",
        "properties": {
            "candidate": {"anyOf": [{"type": "string"}, {"type": "integer"}], "description": "The version to roll out."},
            "primary": {"anyOf": [{"type": "string"}, {"type": "integer"}], "description": "The version compared with [default: the one serving the model]."},
            "mode": {"type": "string", "enum": ["canary", "shadow"]},
            "steps": {"type": "array", "items": {"type": "number"}, "description": "The candidate's shares in percent, increasing, ending at 100."},
            "gates": {"type": "array", "items": {"type": "string", "enum": list(GATES)}},
            "margins": {"type": "object", "additionalProperties": {"type": "number"}},
            "alpha": {"type": "number", "description": "The rollout's false-alarm rate, split among its gates."},
            "min_requests": {"type": "integer", "description": "Requests the candidate answers in a step before it may pass."},
            "sticky_header": {"type": "string", "description": "Canary: the header whose value decides the version."},
            "sticky_feature": {"type": "string", "description": "Canary: the feature whose value decides each row's version (not with sticky_header)."},
        },
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": {"type": "string"}},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": {"type": "object"}},
            "outputs": {"type": "array", "items": {"type": "object"}},
        },
    },
}

def openapi_document(
    token_for_inference: bool, token_configured: bool, served: dict[str, list[str]], registered: list[str] | None = None
) -> dict[str, Any]:
    """The document for this server: its models (``served``: name -> versions) and which
    endpoints need a token. Other names and versions get the documented 404."""
    names = sorted(served) or ["model"]
    registered = sorted(registered or names)
    versions = sorted({v for vs in served.values() for v in vs} | {"latest"})
    name_parameter = {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": names}}
    version_parameter = {"name": "version", "in": "path", "required": True, "schema": {"type": "string", "enum": versions}}

    def _model_paths(suffix: str, operation: dict[str, Any], method: str) -> dict[str, Any]:
        return {
            f"/v2/models/{{name}}{suffix}": {method: {**operation, "parameters": [name_parameter]}},
            f"/v2/models/{{name}}/versions/{{version}}{suffix}": {
                method: {**operation, "parameters": [name_parameter, version_parameter]}
            },
        }

    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    write_security = bearer if token_configured else []
    inference_security = bearer if token_configured and token_for_inference else []
    infer = {
        "summary": "Open Inference Protocol (V2) inference",
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("InferRequest")}}},
        "security": inference_security,
        "responses": {
            "200": {"description": "Outputs label, probabilities and prediction_id.",
                    "content": {JSON: {"schema": _ref("InferResponse")}, "application/octet-stream": {}}},
            **ERROR_RESPONSES,
        },
    }
    feedback = {
        "summary": "Ground-truth labels, joined to predictions by id",
        "requestBody": {"required": True, "content": {JSON: {"schema": _ref("FeedbackRequest")}}},
        "security": write_security,
        "responses": {
            "200": _json(_ref("FeedbackResponse"), "What each label joined to."),
            **ERROR_RESPONSES,
            "409": _json(_ref("Error"), "The server runs without the prediction log."),
            "503": _json(_ref("Error"), "The store is unavailable; nothing was recorded."),
        },
    }
    metadata = {"summary": "Model metadata", "responses": {"200": _json(_ref("ModelMetadata"), "Inputs and outputs."), "404": ERROR_RESPONSES["404"]}}
    ready = {"summary": "Model readiness", "responses": {
        "200": _json({"type": "object"}, "Ready."), "404": ERROR_RESPONSES["404"],
        "503": _json(_ref("Error"), "Not ready.")}}
    paths: dict[str, Any] = {
        "/v2": {"get": {"summary": "Server metadata", "responses": {"200": _json({"type": "object"}, "Name, version, extensions.")}}},
        "/v2/health/live": {"get": {"summary": "Liveness", "responses": {"200": _json({"type": "object"}, "Live.")}}},
        "/v2/health/ready": {"get": {"summary": "Readiness", "responses": {
            "200": _json({"type": "object"}, "Ready."), "503": _json({"type": "object"}, "Loading or draining.")}}},
        "/v2/models": {"get": {"summary": "Served models", "responses": {"200": _json({"type": "object"}, "Names and versions.")}}},
        **_model_paths("", metadata, "get"),
        **_model_paths("/ready", ready, "get"),
        **_model_paths("/infer", infer, "post"),
        **_model_paths("/feedback", feedback, "post"),
        "/v1/models/{name}:predict": {"post": {
            "summary": "Records in, records out",
            "parameters": [name_parameter],
            "security": inference_security,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("RecordsRequest")}}},
            "responses": {"200": _json(_ref("RecordsResponse"), "One prediction per instance."), **ERROR_RESPONSES},
        }},
        "/v2/repository/index": {method: {"summary": "Registered versions and whether each is served",
            "responses": {"200": _json({"type": "array", "items": {"type": "object"}}, "name, version, state.")}}
            for method in ("post", "get")},
        "/v2/repository/models/{name}/load": {"post": {
            "summary": "Serve a registered version (the latest, or parameters.version)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": registered}}],
            "security": write_security,
            "requestBody": {"required": False, "content": {JSON: {"schema": _ref("RepositoryRequest")}}},
            "responses": {"200": _json({"type": "object"}, "Loaded (or already served)."),
                          **{k: v for k, v in ERROR_RESPONSES.items()}},
        }},
        "/v2/repository/models/{name}/unload": {"post": {
            "summary": "Stop serving a version (parameters.version) or every version of a model",
            "parameters": [name_parameter],
            "security": write_security,
            "requestBody": {"required": False, "content": {JSON: {"schema": _ref("RepositoryRequest")}}},
            "responses": {"200": _json({"type": "object"}, "Unloaded versions."), **ERROR_RESPONSES},
        }},
        "/v2/repository/models/{name}/rollout": {"get": {
            "summary": "The model's newest rollout, its decisions and this replica's gate statistics (docs/rollout.md)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}, "The rollout."), "404": _json(_ref("Error"), "No rollout of this model."),
                          "409": _json(_ref("Error"), "The server runs with --no-rollouts.")},
        }},
        "/v2/repository/models/{name}/rollout/start": {"post": {
            "summary": "Start a rollout of a candidate version: canary or shadow, gated (docs/rollout.md)",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": registered}}],
            "security": write_security,
            "requestBody": {"required": True, "content": {JSON: {"schema": _ref("RolloutStart")}}},
            "responses": {"200": _json({"type": "object"}, "The plan, at its first step."), **ERROR_RESPONSES,
                          "409": _json(_ref("Error"), "A rollout of the model is running already.")},
        }},
        **{f"/v2/repository/models/{{name}}/rollout/{action}": {"post": {
            "summary": summary,
            "parameters": [name_parameter],
            "security": write_security,
            "responses": {"200": _json({"type": "object"}, "The plan, ended."), **ERROR_RESPONSES,
                          "409": _json(_ref("Error"), "No rollout of the model is running.")},
        }} for action, summary in (("promote", "Promote the running rollout's candidate now"),
                                   ("abort", "Abort the running rollout: back to the primary"))},
        "/metrics": {"get": {"summary": "Prometheus exposition", "responses": {
            "200": {"description": "Text format 0.0.4.", "content": {"text/plain": {}}}}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI 3.")}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "modelmon", "version": modelmon.__version__,
                 "description": "Open Inference Protocol (V2) serving with monitoring."},
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
