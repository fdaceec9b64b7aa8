"""Reading a request body within a limit, written once for every server modelmon runs (the
model server, notify-bridge)."""

from __future__ import annotations

from starlette.requests import Request

from modelmon.errors import MalformedRequestError, PayloadTooLargeError


async def read_limited_body(request: Request, limit: int) -> bytes:
    """The body, refused past ``limit`` bytes by its Content-Length or as it streams in
    (``PayloadTooLargeError``, a 413); a Content-Length that is not a number is a 400."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise MalformedRequestError("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLargeError(f"request body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
