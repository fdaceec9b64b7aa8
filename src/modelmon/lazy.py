"""Package attributes imported on first use (PEP 562), so that importing one module of a
package does not import all of it: `modelmon serve` must not pay for scikit-learn, pandas
and scipy, which only training, registration and reports use."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, modules: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that imports ``modules[name]`` when ``name`` is first used."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            return getattr(importlib.import_module(modules[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
