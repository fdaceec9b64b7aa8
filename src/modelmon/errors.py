"""Errors that carry what the HTTP layer and the CLI need to report them.

Every error a client can cause maps to a 4xx status and to one *reason* from a bounded
set, because the reason becomes the ``reason`` label of ``modelmon_request_errors_total``
and label values must never come from request content.
"""

from __future__ import annotations


class ModelmonError(Exception):
    """Base class: a message meant for a person, an HTTP status and a metric reason."""

    status_code: int = 500
    reason: str = "internal_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if reason is not None:
            self.reason = reason


class RegistryError(ModelmonError):
    """A registration or load problem: bad artifact, bad data, unknown name."""

    status_code = 400
    reason = "registry_error"


class ModelNotFoundError(ModelmonError):
    status_code = 404
    reason = "model_not_found"


class InvalidInputError(ModelmonError):
    """The request body does not fit the model's signature."""

    status_code = 400
    reason = "invalid_input"


class MalformedRequestError(ModelmonError):
    status_code = 400
    reason = "malformed_request"


class PayloadTooLargeError(ModelmonError):
    status_code = 413
    reason = "body_too_large"


class ModelNotReadyError(ModelmonError):
    status_code = 503
    reason = "not_ready"


class StoreUnavailableError(ModelmonError):
    """The store did not answer; nothing was recorded, so the client may retry."""

    status_code = 503
    reason = "store_unavailable"


class UnauthorizedError(ModelmonError):
    status_code = 401
    reason = "unauthorized"


class FeedbackDisabledError(ModelmonError):
    status_code = 409
    reason = "feedback_disabled"


class InferenceError(ModelmonError):
    """The model itself failed on input that passed validation: a server-side fault."""

    status_code = 500
    reason = "inference_error"


#: Every value the ``reason`` label can take. Counters are created at zero for each.
ERROR_REASONS: tuple[str, ...] = (
    "malformed_request",
    "body_too_large",
    "model_not_found",
    "missing_feature",
    "unknown_feature",
    "wrong_shape",
    "wrong_datatype",
    "invalid_value",
    "missing_value",
    "invalid_input",
    "not_ready",
    "inference_error",
    "internal_error",
    "store_unavailable",
    "invalid_label",
    "feedback_disabled",
    "unauthorized",
)


class RolloutInputError(ModelmonError):
    """A rollout command or endpoint got a value it cannot use; nothing was changed."""

    status_code = 400
    reason = "invalid_rollout"


class RolloutConflictError(ModelmonError):
    """The rollout is not in a state the command can act on (none running, one running
    already, or it moved since it was read); nothing was changed."""

    status_code = 409
    reason = "rollout_conflict"
