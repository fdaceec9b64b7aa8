"""Where modelmon keeps its files, resolved from the environment at call time."""

from __future__ import annotations

import os
from pathlib import Path


def modelmon_home() -> Path:
    """``$MODELMON_HOME``, or ``./.modelmon`` so a project keeps its state beside itself."""
    return Path(os.environ.get("MODELMON_HOME", ".modelmon"))


def default_registry_dir() -> Path:
    return modelmon_home() / "registry"
