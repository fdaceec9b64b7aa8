"""Reading model files safely.

skops is the default for scikit-learn because it refuses to build any type it was not told
to trust; pickle and joblib run arbitrary code on load, so they need an explicit opt-in.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from modelmon.errors import RegistryError

SKOPS_SUFFIX = ".skops"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
ONNX_SUFFIX = ".onnx"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def untrusted_skops_types(path: Path) -> list[str]:
    import skops.io

    return list(skops.io.get_untrusted_types(file=path))


def load_skops(path: Path, trusted: list[str]) -> Any:
    """Load a skops file, building only skops' default-safe types plus ``trusted``."""
    import skops.io

    untrusted = set(untrusted_skops_types(path)) - set(trusted)
    if untrusted:
        raise RegistryError(
            f"{path.name} contains types that are not trusted: {sorted(untrusted)}. "
            "Review them, then pass each with --trust-type (Python: trusted_types=[...])."
        )
    return skops.io.load(path, trusted=list(trusted) or None)


def dump_skops(estimator: Any, path: Path) -> list[str]:
    """Write ``estimator`` with skops and return the types the file needs trusted on load.

    The estimator comes from the caller's own process, so its types are trusted by the act
    of registering it; we record them so a later load can be checked against the list."""
    import skops.io

    try:
        skops.io.dump(estimator, path)
    except Exception as exc:  # skops raises TypeError and others for unsupported objects
        raise RegistryError(
            f"skops cannot save {type(estimator).__name__}: {exc}. "
            "Save it with joblib and register the file with --trust-pickle instead."
        ) from exc
    return untrusted_skops_types(path)


def load_pickle(path: Path) -> Any:
    import joblib

    return joblib.load(path)


def load_model_file(path: Path, *, trust_pickle: bool, trusted_types: list[str]) -> Any:
    """A scikit-learn object from a file, or the raw bytes of an ONNX graph."""
    if not path.exists():
        raise RegistryError(f"model file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ONNX_SUFFIX:
        return path.read_bytes()
    if suffix == SKOPS_SUFFIX:
        return load_skops(path, trusted_types)
    if suffix in PICKLE_SUFFIXES:
        if not trust_pickle:
            raise RegistryError(
                f"{path.name} is a pickle: loading it runs any code it contains. Save the model "
                "with skops (skops.io.dump) or, if you trust this file, pass --trust-pickle."
            )
        return load_pickle(path)
    raise RegistryError(
        f"unknown model file type {suffix!r}: expected .skops, .onnx, or .pkl/.joblib "
        "with --trust-pickle"
    )
