"""Checking a bearer token, written once for every server modelmon runs (the model server's
API token, notify-bridge's token). No modelmon imports: every layer may use it.

Named ``modelmon.secrets``; the standard library's ``secrets`` is unaffected (imports are
absolute).
"""

from __future__ import annotations

import hmac


def bearer_matches(authorization: str, token: str) -> bool:
    """True when an ``Authorization`` header value carries ``token`` as a bearer token
    (``Bearer <token>``, the scheme in any case). The token is compared in constant time, so
    the time taken says nothing about how much of it was right."""
    scheme, _, given = authorization.partition(" ")
    # Both sides are compared, whatever the scheme, so a wrong scheme costs the same time.
    matches = hmac.compare_digest(given.strip().encode(), token.encode())
    return scheme.lower() == "bearer" and matches
