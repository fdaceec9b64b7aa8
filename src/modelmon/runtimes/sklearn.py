"""scikit-learn classifiers, regressors and pipelines, saved with skops.

skops is the default because it refuses to build any type it was not told to trust; pickle
and joblib run arbitrary code on load, so they need an explicit opt-in at registration, and
a pickled model is saved again with skops whenever skops can hold it. At registration the
model is converted to ONNX (skl2onnx) and the graph is served instead when it provably
agrees (``to_onnx``): ONNX Runtime answers a small model an order of magnitude faster.
"""

from __future__ import annotations

import math
import shutil
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from modelmon.errors import RegistryError
from modelmon.runtimes.base import (
    ArtifactInfo,
    OnnxCheck,
    ReadOptions,
    Runtime,
    TextColumns,
    artifact_for,
    register_runtime,
)
from modelmon.runtimes.features import (
    feature_columns,
    feature_specs_from_frame,
    python_label,
    spec_without_data,
)
from modelmon.runtimes.onnx import OnnxRuntime
from modelmon.types import FeatureBatch, ModelOutput, Signature, Task

if TYPE_CHECKING:
    import pandas as pd

SKOPS_SUFFIX = ".skops"
PICKLE_SUFFIXES = (".pkl", ".pickle", ".joblib")
#: Largest absolute difference in any class probability for a converted graph to be kept.
PROBABILITY_TOLERANCE = 1e-4
#: A regressor's converted graph is kept when its predictions differ from the model's by at
#: most this share of the largest predicted magnitude (at least 1): ONNX computes in float32,
#: whose rounding grows with the values (a Ridge on values around 20: about 2e-6).
VALUE_TOLERANCE = 1e-5
#: scikit-learn's vendored array-api adapter for torch: a package that imports torch.
_ARRAY_API_TORCH = "sklearn.externals.array_api_compat.torch"
_SKOPS_IMPORT = threading.Lock()


def skops_io() -> ModuleType:
    """``skops.io``, imported without importing torch.

    skops lists the scikit-learn types it trusts with ``all_estimators()``, whose
    ``pkgutil.walk_packages`` imports every sub-package of scikit-learn to look inside it,
    ``sklearn.externals.array_api_compat.torch`` too, and that imports torch when it is
    installed (the PyTorch runtime's extra). ``import skops.io`` took 2.9-3.3 s wall, 2.7-3.1 s
    CPU, against 1.7-2.1 s without torch; ``modelmon serve`` of a model kept in skops was ready
    after 4.2-6.6 s instead of 2.6-2.8 s (4.0 s CPU against 2.5 s). The walk skips a package
    that raises ImportError and never reads classes from ``externals``, so that package is
    hidden for the import: the trusted types are the same (tests/unit/test_runtime_sklearn.py).
    Only while torch is not loaded: without it there is no torch array for scikit-learn's
    array API to need the adapter for. One thread at a time: registering from several threads
    must not see another's placeholder come and go.
    """
    with _SKOPS_IMPORT:
        if "skops.io" in sys.modules or "torch" in sys.modules or _ARRAY_API_TORCH in sys.modules:
            import skops.io

            return skops.io
        sys.modules[_ARRAY_API_TORCH] = None  # type: ignore[assignment]  # import raises ImportError
        try:
            import skops.io
        finally:
            if sys.modules.get(_ARRAY_API_TORCH, ...) is None:
                del sys.modules[_ARRAY_API_TORCH]
        return skops.io


def untrusted_skops_types(path: Path) -> list[str]:
    return list(skops_io().get_untrusted_types(file=path))


def load_skops(path: Path, trusted: list[str]) -> Any:
    """Load a skops file, building only skops' default-safe types plus ``trusted``."""
    untrusted = set(untrusted_skops_types(path)) - set(trusted)
    if untrusted:
        raise RegistryError(
            f"{path.name} contains types that are not trusted: {sorted(untrusted)}. "
            "Review them, then pass each with --trust-type (Python: trusted_types=[...])."
        )
    return skops_io().load(path, trusted=list(trusted) or None)


def dump_skops(estimator: Any, path: Path) -> list[str]:
    """Write ``estimator`` with skops and return the types the file needs trusted on load.

    The estimator comes from the caller's own process, so its types are trusted by the act
    of registering it; we record them so a later load can be checked against the list."""
    try:
        skops_io().dump(estimator, path)
    except Exception as exc:  # skops raises TypeError and others for unsupported objects
        raise RegistryError(
            f"skops cannot save {type(estimator).__name__}: {exc}. "
            "Save it with joblib and register the file with --trust-pickle instead."
        ) from exc
    return untrusted_skops_types(path)


def load_pickle(path: Path) -> Any:
    import joblib

    return joblib.load(path)


@register_runtime
class SklearnRuntime(Runtime):
    """A fitted scikit-learn classifier, regressor or pipeline."""

    name = "sklearn"
    suffixes = (SKOPS_SUFFIX, *PICKLE_SUFFIXES)
    generic = True

    def __init__(self, model: Any, signature: Signature) -> None:
        self._regression = signature.task is Task.REGRESSION
        if self._regression and not hasattr(model, "predict"):
            raise RegistryError(f"{type(model).__name__} has no predict: register a fitted regressor")
        if not self._regression and not hasattr(model, "predict_proba"):
            raise RegistryError(
                f"{type(model).__name__} has no predict_proba: modelmon serves probabilistic "
                "classifiers (wrap it in CalibratedClassifierCV, or use SVC(probability=True))"
            )
        super().__init__(model, signature)
        self._columns = signature.input_layout == "columns"

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        X = batch.to_frame(self.signature) if self._columns else batch.to_matrix(self.signature)
        return np.asarray(self.model.predict_proba(X), dtype=np.float64)

    def predict_values(self, batch: FeatureBatch) -> np.ndarray:
        X = batch.to_frame(self.signature) if self._columns else batch.to_matrix(self.signature)
        return np.asarray(self.model.predict(X), dtype=np.float64).reshape(-1)

    def predict(self, batch: FeatureBatch) -> ModelOutput:
        if self._regression:
            return ModelOutput.from_values(self.predict_values(batch))
        return ModelOutput.from_probabilities(self.predict_proba(batch))

    # -- registration ------------------------------------------------------------------

    @classmethod
    def recognises(cls, model: Any) -> bool:
        """A scikit-learn estimator, or an object that follows its API (fit, get_params, and
        predict or predict_proba), as third-party estimators do."""
        from sklearn.base import BaseEstimator

        if isinstance(model, BaseEstimator):
            return True
        return hasattr(model, "fit") and hasattr(model, "get_params") and (
            hasattr(model, "predict_proba") or hasattr(model, "predict")
        )

    @classmethod
    def read(cls, path: Path, options: ReadOptions) -> Any:
        suffix = path.suffix.lower()
        if suffix in PICKLE_SUFFIXES:
            if not options.trust_pickle:
                raise RegistryError(
                    f"{path.name} is a pickle: loading it runs any code it contains. Save the model "
                    "with skops (skops.io.dump) or, if you trust this file, pass --trust-pickle."
                )
            return load_pickle(path)
        return load_skops(path, options.trusted_types)

    @classmethod
    def text_columns(cls, model: Any) -> TextColumns:
        return sklearn_text_columns(model)

    @classmethod
    def infer_signature(
        cls, model: Any, reference: pd.DataFrame | None, target: str | None, text_columns: TextColumns
    ) -> Signature:
        regression = _is_regressor(model)
        if not regression and not hasattr(model, "classes_"):
            raise RegistryError(
                f"{type(model).__name__} has no classes_ and is not a regressor: register a fitted "
                "classifier or regressor"
            )
        classes = None if regression else [python_label(c) for c in model.classes_]
        names_in = getattr(model, "feature_names_in_", None)
        n_in = getattr(model, "n_features_in_", None)
        layout = "columns" if names_in is not None else "matrix"
        if names_in is not None:
            names = [str(n) for n in names_in]
        elif reference is not None:
            names = feature_columns(reference, target)
        elif n_in is not None:
            names = [f"x{i}" for i in range(int(n_in))]
        else:
            raise RegistryError(
                "cannot tell the model's features: pass reference data (--reference) with one "
                "column per feature"
            )
        if n_in is not None and len(names) != int(n_in):
            raise RegistryError(
                f"the model takes {n_in} features but the reference data has {len(names)} "
                f"columns besides the target {target!r}: {names[:10]}..."
            )
        if reference is not None:
            specs = feature_specs_from_frame(reference, names, text_columns)
        else:
            specs = [spec_without_data(n, text_columns) for n in names]
        if layout == "matrix" and any(s.is_categorical for s in specs):
            raise RegistryError(
                "the model was trained on an unnamed array that includes text columns; train it "
                "on a DataFrame so modelmon can pass named columns"
            )
        task = Task.REGRESSION if classes is None else Task.for_classes(classes)
        return Signature(features=specs, task=task, classes=classes, input_layout=layout)

    @classmethod
    def save(cls, model: Any, source: Path | None, directory: Path) -> ArtifactInfo:
        path = directory / f"model{SKOPS_SUFFIX}"
        if source is not None and source.suffix.lower() in PICKLE_SUFFIXES:
            # Saved again as skops where possible, so that serving never unpickles.
            try:
                return artifact_for(path, "skops", trusted_types=dump_skops(model, path))
            except RegistryError:
                path.unlink(missing_ok=True)
                copy = directory / "model.joblib"
                shutil.copyfile(source, copy)
                return artifact_for(copy, "pickle")
        return artifact_for(path, "skops", trusted_types=dump_skops(model, path))

    @classmethod
    def load(cls, path: Path, artifact: ArtifactInfo, signature: Signature) -> SklearnRuntime:
        if artifact.format == "skops":
            return cls(load_skops(path, artifact.trusted_types), signature)
        if artifact.format == "pickle":  # the user trusted this file when registering it
            return cls(load_pickle(path), signature)
        raise RegistryError(f"the sklearn runtime cannot load a {artifact.format!r} artifact")

    @classmethod
    def to_onnx(
        cls, model: Any, signature: Signature, check_data: FeatureBatch
    ) -> tuple[bytes | None, OnnxCheck]:
        """The ONNX graph of ``model`` if it converts and agrees on ``check_data``."""
        if check_data.n_rows == 0:
            return None, OnnxCheck(used=False, reason="no reference or validation data to verify on")
        if signature.input_layout == "matrix" and signature.categorical_features:
            return None, OnnxCheck(used=False, reason="categorical features in a matrix input")
        # A lone estimator trained on a DataFrame takes one matrix in ONNX; a pipeline with a
        # ColumnTransformer takes one input per column. Try the natural one first.
        layouts = [signature.input_layout == "matrix"]
        if not signature.categorical_features and not layouts[0]:
            layouts.append(True)
        failures = []
        for matrix in layouts:
            try:
                model_bytes = _convert(model, _initial_types(signature, matrix))
                converted = OnnxRuntime(model_bytes, signature)
                break
            except Exception as exc:  # skl2onnx raises many types for unsupported models
                failures.append(f"{type(exc).__name__}: {exc}")
        else:
            return None, OnnxCheck(used=False, reason=f"conversion failed: {failures[-1]}"[:500])

        rows = check_data.n_rows
        native = cls(model, signature)
        try:
            if signature.task is Task.REGRESSION:
                expected = native.predict_values(check_data)
                actual = converted.predict_values(check_data)
            else:
                expected = native.predict_proba(check_data)
                actual = converted.predict_proba(check_data)
        except Exception as exc:
            return None, OnnxCheck(used=False, reason=f"converted graph failed: {exc}"[:500])
        if actual.shape != expected.shape:
            return None, OnnxCheck(used=False, reason=f"output shape {actual.shape} differs from {expected.shape}")
        difference = float(np.max(np.abs(actual - expected))) if rows else 0.0
        if signature.task is Task.REGRESSION:
            allowed = VALUE_TOLERANCE * max(1.0, float(np.max(np.abs(expected))) if rows else 1.0)
            what = "predictions"
        else:
            allowed, what = PROBABILITY_TOLERANCE, "probabilities"
        if not np.isfinite(difference) or difference > allowed:
            return None, OnnxCheck(
                used=False,
                rows_compared=rows,
                max_abs_difference=difference if np.isfinite(difference) else None,
                reason=f"{what} differ by {difference:.3g} > {allowed:.3g}",
            )
        return model_bytes, OnnxCheck(used=True, rows_compared=rows, max_abs_difference=difference)


def _is_regressor(model: Any) -> bool:
    """A scikit-learn regressor (or pipeline ending in one), or an estimator that predicts
    without classes or probabilities."""
    from sklearn.base import is_regressor

    if is_regressor(model):
        return True
    return not hasattr(model, "classes_") and not hasattr(model, "predict_proba") and hasattr(model, "predict")


def _initial_types(signature: Signature, matrix: bool) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    if matrix:
        return [("input", FloatTensorType([None, len(signature.features)]))]
    types: list[tuple[str, Any]] = []
    for spec in signature.features:
        if spec.is_categorical:
            types.append((spec.name, StringTensorType([None, 1])))
        elif spec.dtype in ("int64", "int32", "bool") and not spec.nullable:
            types.append((spec.name, Int64TensorType([None, 1])))
        else:
            types.append((spec.name, FloatTensorType([None, 1])))
    return types


def _convert(estimator: Any, initial_types: list[tuple[str, Any]]) -> bytes:
    from skl2onnx import to_onnx

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        onnx_model = to_onnx(
            estimator,
            initial_types=initial_types,
            options=None if _is_regressor(estimator) else {"zipmap": False},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    return bytes(onnx_model.SerializeToString())


# -- What a fitted model records about its input columns ---------------------------------


def sklearn_text_columns(estimator: Any) -> TextColumns:
    """The input columns a fitted scikit-learn model takes as text, with their categories.

    Read from the encoders (``OneHotEncoder``, ``OrdinalEncoder``, ``TargetEncoder``: any
    step with ``categories_``) and text vectorizers that see the raw columns: directly, or
    through a Pipeline, a ColumnTransformer's column lists, a FeatureUnion, and steps that
    map columns one to one (an imputer, a scaler). Only a model trained on a DataFrame names
    its columns; otherwise nothing is known."""
    names = getattr(estimator, "feature_names_in_", None)
    found: TextColumns = {}
    if names is not None:
        _collect_text_columns(estimator, [str(n) for n in names], True, found, depth=0)
    return found


def _collect_text_columns(step: Any, columns: list[str], raw: bool, found: TextColumns, depth: int) -> None:
    """Add to ``found`` the ``columns`` (what ``step`` is fed, in order) that ``step`` takes
    as text. ``raw``: the values reach ``step`` unchanged, so its categories are theirs."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if depth > 20 or not columns or step is None or isinstance(step, str):
        return
    own = getattr(step, "feature_names_in_", None)
    if own is not None:
        own = [str(n) for n in own]
        if not set(own) <= set(columns):
            return  # fed columns made by an earlier step: nothing to say about the inputs
        columns = own
    if isinstance(step, Pipeline):
        for _, sub in step.steps:
            if sub is None or isinstance(sub, str):
                continue
            _collect_text_columns(sub, columns, raw, found, depth + 1)
            next_columns = _one_to_one_outputs(sub, columns)
            if next_columns is None:
                return
            columns, raw = next_columns, raw and isinstance(sub, SimpleImputer)
        return
    if isinstance(step, ColumnTransformer):
        for _, sub, selection in getattr(step, "transformers_", []):
            _collect_text_columns(sub, _selected_columns(selection, columns), raw, found, depth + 1)
        return
    if isinstance(step, FeatureUnion):
        for _, sub in step.transformer_list:
            _collect_text_columns(sub, columns, raw, found, depth + 1)
        return
    categories = getattr(step, "categories_", None)
    if isinstance(categories, list) and len(categories) == len(columns):
        for column, levels in zip(columns, categories, strict=True):
            text = _text_levels(levels)
            if text is not None:
                found.setdefault(column, text if raw else None)
    elif hasattr(step, "build_analyzer") and len(columns) == 1:  # CountVectorizer & co.
        found.setdefault(columns[0], None)


def _one_to_one_outputs(step: Any, columns: list[str]) -> list[str] | None:
    """The columns ``step`` outputs when each is one of its inputs, else None."""
    try:
        out = [str(n) for n in step.get_feature_names_out(columns)]
    except Exception:  # no get_feature_names_out, or it cannot name them
        return None
    return out if set(out) <= set(columns) else None


def _selected_columns(selection: Any, columns: list[str]) -> list[str]:
    """A fitted ColumnTransformer's column selection as names among ``columns``."""
    if isinstance(selection, str):
        return [selection] if selection in columns else []
    if isinstance(selection, (int, np.integer)):
        return [columns[selection]] if -len(columns) <= selection < len(columns) else []
    if isinstance(selection, slice):
        if isinstance(selection.start, str) or isinstance(selection.stop, str):
            start = columns.index(selection.start) if selection.start in columns else 0
            stop = columns.index(selection.stop) + 1 if selection.stop in columns else len(columns)
            return columns[start:stop]
        return columns[selection]
    try:
        items = list(selection)
    except TypeError:
        return []
    if items and all(isinstance(i, (bool, np.bool_)) for i in items):
        return [c for c, keep in zip(columns, items, strict=False) if keep]
    if all(isinstance(i, (int, np.integer)) for i in items):
        return [columns[i] for i in items if -len(columns) <= i < len(columns)]
    return [str(i) for i in items if str(i) in columns]


def _text_levels(levels: Any) -> list[str] | None:
    """An encoder's categories for one column as text, or None when they are not text."""
    present = [
        v for v in np.asarray(levels, dtype=object)
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    if present and all(isinstance(v, str) for v in present):
        return [str(v) for v in present]
    return None
