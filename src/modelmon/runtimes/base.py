"""The one base class every runtime implements, and the registry of runtimes.

A runtime knows one kind of model (a framework, or a file format): it recognises the model
as a Python object or a file, reads what the model records about its inputs, infers the
signature, saves the model into a version directory, loads it back without running code
from the file, and predicts into a ``ModelOutput``. Everything above (registration,
serving, monitoring) talks to runtimes only through this class, so adding a framework is
one module here plus one row in the conformance suite (tests/conformance).

The class methods work at registration (the framework and pandas may be imported); an
instance is a loaded model, ready to serve.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field

from modelmon.errors import RegistryError
from modelmon.types import FeatureBatch, ModelOutput, Signature

if TYPE_CHECKING:
    import pandas as pd

#: Text columns a model records: name -> its categories (None when not known).
TextColumns = dict[str, list[str] | None]


class ArtifactInfo(BaseModel):
    path: str = Field(description="File name inside the version directory.")
    sha256: str
    format: str = Field(description="The file's format, as the runtime that wrote it names it.")
    trusted_types: list[str] = Field(
        default_factory=list, description="Types beyond skops' defaults that loading may build."
    )
    options: dict[str, Any] = Field(
        default_factory=dict,
        description="What the runtime decided at registration and needs again to load and run "
        "the file (for example whether a network's outputs are logits).",
    )


class OnnxCheck(BaseModel):
    """Whether a graph converted at registration is served, and how closely it agreed."""

    used: bool
    rows_compared: int = 0
    max_abs_difference: float | None = None
    reason: str = ""


@dataclass(slots=True)
class ReadOptions:
    """What the user allowed when registering a file."""

    trust_pickle: bool = False
    trusted_types: list[str] = field(default_factory=list)


class Runtime(ABC):
    """A loaded model of one kind, and (class methods) how to register that kind."""

    #: The name stored in ``model.json`` (``flavor``) and the ``flavor`` label of
    #: ``modelmon_model_info``.
    name: ClassVar[str]
    #: File suffixes this runtime reads at registration (lower case, with the dot).
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: The pip extra that installs the framework, named in the error when it is missing.
    extra: ClassVar[str | None] = None
    #: Recognises objects by their API rather than their type (scikit-learn's duck typing):
    #: asked last, so that a framework's own runtime wins for its estimators.
    generic: ClassVar[bool] = False

    def __init__(self, model: Any, signature: Signature) -> None:
        self.model = model
        self.signature = signature

    # -- serving -----------------------------------------------------------------------

    @abstractmethod
    def predict(self, batch: FeatureBatch) -> ModelOutput:
        """The model's answers for ``batch``'s rows (called from one thread at a time per
        batcher, possibly not the event loop's)."""

    # -- registration ------------------------------------------------------------------

    @classmethod
    @abstractmethod
    def recognises(cls, model: Any) -> bool:
        """Whether ``model`` (a Python object, or the bytes ``read`` returned) is this kind."""

    @classmethod
    def reads(cls, path: Path) -> bool:
        """Whether this runtime reads the file at ``path``."""
        return path.suffix.lower() in cls.suffixes

    @classmethod
    @abstractmethod
    def read(cls, path: Path, options: ReadOptions) -> Any:
        """The model in a user's file, as registration works with it; refuses files whose
        loading would run code unless ``options`` allow it."""

    @classmethod
    def text_columns(cls, model: Any) -> TextColumns:
        """Input columns the model records as text, with their categories where known."""
        return {}

    @classmethod
    @abstractmethod
    def infer_signature(
        cls, model: Any, reference: pd.DataFrame | None, target: str | None, text_columns: TextColumns
    ) -> Signature:
        """The model's inputs and outputs: from the model where it records them, else from
        the reference data (``target`` is not a feature)."""

    @classmethod
    @abstractmethod
    def save(cls, model: Any, source: Path | None, directory: Path) -> ArtifactInfo:
        """Write the model into ``directory`` (``source``: the file it was read from)."""

    @classmethod
    @abstractmethod
    def load(cls, path: Path, artifact: ArtifactInfo, signature: Signature) -> Runtime:
        """The saved model, ready to predict; never runs code stored in the file unless the
        artifact's format is one the user trusted at registration."""

    @classmethod
    def to_onnx(
        cls, model: Any, signature: Signature, check_data: FeatureBatch
    ) -> tuple[bytes | None, OnnxCheck] | None:
        """An ONNX graph of the model that agrees with it on ``check_data`` (with the
        check's record), or None when this runtime has no converter."""
        return None

    @classmethod
    def wrap(cls, model: Any, signature: Signature) -> Runtime:
        """A model object in hand (at registration) as a runtime instance."""
        return cls(model, signature)

    @classmethod
    def require(cls, module: str) -> Any:
        """Import the framework, or say which extra installs it."""
        try:
            return importlib.import_module(module)
        except ImportError:
            extra = f"pip install 'modelmon[{cls.extra}]'" if cls.extra else f"pip install {module}"
            raise RegistryError(f"the {cls.name} runtime needs {module}: {extra}") from None


_RUNTIMES: dict[str, type[Runtime]] = {}
#: Modules of this package that are not runtimes.
_NOT_RUNTIMES = frozenset({"base", "features"})
_loaded = False


def register_runtime(cls: type[Runtime]) -> type[Runtime]:
    """Class decorator: make a runtime known by its name."""
    if cls.name in _RUNTIMES and _RUNTIMES[cls.name] is not cls:
        raise ValueError(f"two runtimes are named {cls.name!r}")
    _RUNTIMES[cls.name] = cls
    return cls


def _load_builtins() -> None:
    """Import every runtime module of this package once: adding a runtime is adding its
    module. A module whose framework is not installed still imports (frameworks are
    imported where used), so every runtime is known and can say which extra it needs."""
    global _loaded
    if _loaded:
        return
    package = importlib.import_module(__package__ or "modelmon.runtimes")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in _NOT_RUNTIMES:
            importlib.import_module(f"{package.__name__}.{module.name}")
    _loaded = True


def _in_asking_order() -> list[type[Runtime]]:
    return sorted(_RUNTIMES.values(), key=lambda cls: (cls.generic, cls.name))


def runtime_names() -> list[str]:
    _load_builtins()
    return list(_RUNTIMES)


def runtime_named(name: str) -> type[Runtime]:
    _load_builtins()
    try:
        return _RUNTIMES[name]
    except KeyError:
        raise RegistryError(f"unknown runtime {name!r}; known: {sorted(_RUNTIMES)}") from None


def runtime_for_file(path: Path) -> type[Runtime]:
    _load_builtins()
    if not path.exists():
        raise RegistryError(f"model file {path} does not exist")
    for cls in _in_asking_order():
        if cls.reads(path):
            return cls
    known = sorted({s for cls in _RUNTIMES.values() for s in cls.suffixes})
    raise RegistryError(
        f"unknown model file type {path.suffix.lower()!r}: expected one of {', '.join(known)} "
        "(.pkl/.joblib need --trust-pickle)"
    )


def runtime_for_object(model: Any) -> type[Runtime]:
    _load_builtins()
    for cls in _in_asking_order():
        if cls.recognises(model):
            return cls
    raise RegistryError(
        f"no runtime serves a {type(model).__module__}.{type(model).__name__}; "
        f"modelmon knows {sorted(_RUNTIMES)}"
    )


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def artifact_for(path: Path, format: str, **extra: Any) -> ArtifactInfo:
    """The record of a file just written into a version directory."""
    return ArtifactInfo(path=path.name, sha256=sha256_of(path), format=format, **extra)


def verified_path(directory: Path, artifact: ArtifactInfo) -> Path:
    """The artifact's path, after checking it is the file that was registered."""
    path = directory / artifact.path
    if not path.is_file():
        raise RegistryError(f"artifact {path} is missing")
    digest = sha256_of(path)
    if digest != artifact.sha256:
        raise RegistryError(
            f"artifact {path} has sha256 {digest[:16]}... but model.json records "
            f"{artifact.sha256[:16]}...: the file changed after registration; refusing to load it"
        )
    return path
