"""The one bearer-token check (modelmon.secrets), used by notify-bridge and the model server."""

from __future__ import annotations

import pytest

from modelmon.secrets import bearer_matches


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Bearer s3cret", True),
        ("bearer s3cret", True),
        ("BEARER  s3cret ", True),
        ("Bearer s3cre", False),
        ("Bearer s3cret2", False),
        ("Basic s3cret", False),
        ("s3cret", False),
        ("", False),
        ("Bearer ", False),
    ],
)
def test_bearer_matches(header, expected):
    assert bearer_matches(header, "s3cret") is expected


def test_non_ascii_tokens_compare_as_utf8():
    assert bearer_matches("Bearer pässwörd", "pässwörd")
    assert not bearer_matches("Bearer passwort", "pässwörd")
