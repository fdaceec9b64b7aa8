"""The package's metadata: extras a user can ask for."""

from __future__ import annotations

import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def _extras() -> dict[str, list[str]]:
    return tomllib.loads(PYPROJECT.read_text())["project"]["optional-dependencies"]


def test_all_extra_names_every_user_facing_extra():
    extras = _extras()
    assert "all" in extras, "pip install 'modelmon[all]' is the spelling people try first"
    (spec,) = extras["all"]
    named = set(spec.removeprefix("modelmon[").removesuffix("]").split(","))
    # Every extra but the test tooling and 'all' itself, so a new extra cannot be forgotten.
    assert named == set(extras) - {"all", "test"}
