"""The error of the tracking API: a misuse it can name, such as lengths that differ."""

from __future__ import annotations

from modelmon.errors import ModelmonError


class TrackingError(ModelmonError):
    status_code = 400
    reason = "tracking_error"
