"""Registering a model version: learn its signature, prove it runs, store it.

Everything that can be known about a model is worked out here, once, so that serving only
loads and runs: feature types come from the model where it records them (an encoder's text
categories, an ONNX graph's string inputs), else from the reference data; whether a feature
may be missing comes from asking the model, and the fast ONNX graph is kept only if it agrees.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelmon.errors import RegistryError
from modelmon.monitoring.metrics import CONFIDENCE_BUCKETS
from modelmon.monitoring.profile import (
    ProfileSettings,
    ReferenceProfile,
    build_profile,
    prediction_profile,
    save_sample,
)
from modelmon.quality.calibration import calibrate
from modelmon.registry.artifacts import (
    ONNX_SUFFIX,
    PICKLE_SUFFIXES,
    SKOPS_SUFFIX,
    dump_skops,
    load_model_file,
    sha256_of,
)
from modelmon.registry.card import ArtifactInfo, ModelCard
from modelmon.registry.data import DataArg, guesses_types, read_table
from modelmon.registry.onnx_export import export_to_onnx
from modelmon.registry.predictors import (
    OnnxPredictor,
    Predictor,
    SklearnPredictor,
    onnx_class_labels,
    onnx_session,
    probability_output,
)
from modelmon.registry.signature import (
    FeatureBatch,
    FeatureSpec,
    Signature,
    feature_specs_from_frame,
)
from modelmon.registry.store import Registry, check_model_name

#: Rows of the registration data used to prove the model runs and to check an ONNX export.
CHECK_ROWS = 2000
#: Rows, and at most how many number-looking columns, tried when the model fails on the
#: registration data, to name the columns it wanted as text.
DIAGNOSE_ROWS = 20
DIAGNOSE_COLUMNS = 100

#: Text columns a model records: name -> its categories (None when not known).
TextColumns = dict[str, list[str] | None]


def register_model(
    model: Any,
    *,
    name: str,
    reference: DataArg = None,
    target: str | None = None,
    validation: DataArg = None,
    registry: Registry | str | Path | None = None,
    trust_pickle: bool = False,
    trusted_types: list[str] | None = None,
    convert_to_onnx: bool = True,
    description: str = "",
    profile_settings: ProfileSettings | None = None,
    run: Any = None,
    run_store: Any = None,
    categorical: Iterable[str] | str | None = None,
) -> ModelCard:
    """Store ``model`` as the next version of ``name`` and return its card.

    ``model`` is a fitted scikit-learn classifier or pipeline, or a path to a ``.skops``,
    ``.onnx`` or (with ``trust_pickle``) ``.pkl``/``.joblib`` file. ``reference`` is the
    training data (it gives the feature types and, later, the drift baseline) and
    ``validation`` held-out data with the ``target`` column, for the quality baseline.
    ``profile_settings`` tunes the reference profile (bins, categories) drift is measured on.
    ``run`` (a training run, or its id in ``run_store``) links the version to the run that
    produced it; the run's final validation metrics become the baseline when no validation
    data is given.

    Which features are categorical is read from the model where it records it (the
    ``categories_`` of the encoders in a pipeline or ColumnTransformer, the string inputs of
    an ONNX graph), else from the reference data's column types. ``categorical`` names
    further columns that hold text categories (a list, or one comma-separated string): it is
    needed only when neither can tell, e.g. codes such as ``19`` in a CSV file feeding a
    custom transformer.
    """
    check_model_name(name)
    registry = registry if isinstance(registry, Registry) else Registry(registry)
    trusted = list(trusted_types or [])
    named_categorical = column_list(categorical)

    # The model first: what it knows about its inputs decides how CSV files are read.
    source_path = Path(model) if isinstance(model, (str, Path)) else None
    loaded = (
        load_model_file(source_path, trust_pickle=trust_pickle, trusted_types=trusted)
        if source_path is not None
        else model
    )
    flavor = "onnx" if isinstance(loaded, bytes) else "sklearn"
    text_columns = onnx_text_columns(loaded) if flavor == "onnx" else sklearn_text_columns(loaded)
    for column in named_categorical:
        text_columns.setdefault(column, None)

    reference_frame = read_table(reference, "reference", text_columns)
    validation_frame = read_table(validation, "validation", text_columns)
    if validation_frame is not None and (target is None or target not in validation_frame):
        raise RegistryError(
            f"validation data needs the target column (--target); got target={target!r}"
        )

    if flavor == "onnx":
        signature = onnx_signature(loaded, reference_frame, target, text_columns)
        predictor: Predictor = OnnxPredictor(loaded, signature)
    else:
        signature = sklearn_signature(loaded, reference_frame, target, text_columns)
        predictor = SklearnPredictor(loaded, signature)
    unknown = [c for c in named_categorical if c not in signature.feature_names]
    if unknown:
        raise RegistryError(
            f"--categorical names {unknown}, which the model does not take; its features are "
            f"{signature.feature_names[:20]}"
        )

    check_data = sample_batch(signature, reference_frame, validation_frame)
    check_frame = next((f for f in (validation_frame, reference_frame) if f is not None and len(f)), None)
    check_source = validation if check_frame is validation_frame else reference

    def advice() -> str:
        return failure_advice(
            loaded if flavor == "sklearn" else None, signature, check_frame,
            reference_given=reference is not None, from_text_file=guesses_types(check_source),
        )

    check_runs(predictor, check_data, advice)
    probe_missing_values(predictor, signature, check_data)

    version, directory = registry.allocate_version(name)
    try:
        artifact = store_artifact(loaded, source_path, directory, flavor)
        serving_artifact, onnx_check = None, None
        if flavor == "sklearn" and convert_to_onnx:
            onnx_bytes, onnx_check = export_to_onnx(loaded, signature, check_data)
            if onnx_bytes is not None:
                (directory / "model.onnx").write_bytes(onnx_bytes)
                serving_artifact = ArtifactInfo(
                    path="model.onnx", sha256=sha256_of(directory / "model.onnx"), format="onnx"
                )
        outputs = validation_outputs(predictor, signature, validation_frame, target)
        profile = reference_profile(
            predictor, signature, reference_frame, outputs, profile_settings or ProfileSettings(), directory
        )
        baseline = validation_baseline(outputs)
        if run is not None and baseline is None:
            from modelmon.tracking import run_baseline

            baseline = run_baseline(run, run_store)
        card = ModelCard(
            name=name,
            version=version,
            flavor=flavor,
            created_at=datetime.now(UTC),
            description=description,
            signature=signature,
            artifact=artifact,
            serving_artifact=serving_artifact,
            onnx_check=onnx_check,
            baseline=baseline,
            calibration=calibrate(outputs.proba, outputs.truth) if outputs is not None else None,
            reference_profile=profile,
        )
        registry.write_card(card)
        if run is not None:
            from modelmon.tracking import link_model_version

            link_model_version(run, card.name, card.version, run_store)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return card


def store_artifact(loaded: Any, source: Path | None, directory: Path, flavor: str) -> ArtifactInfo:
    if flavor == "onnx":
        path = directory / f"model{ONNX_SUFFIX}"
        path.write_bytes(loaded)
        return ArtifactInfo(path=path.name, sha256=sha256_of(path), format="onnx")
    if source is not None and source.suffix.lower() in PICKLE_SUFFIXES:
        # Re-save as skops where possible so that serving never unpickles.
        path = directory / f"model{SKOPS_SUFFIX}"
        try:
            trusted = dump_skops(loaded, path)
            return ArtifactInfo(path=path.name, sha256=sha256_of(path), format="skops", trusted_types=trusted)
        except RegistryError:
            path.unlink(missing_ok=True)
            path = directory / "model.joblib"
            shutil.copyfile(source, path)
            return ArtifactInfo(path=path.name, sha256=sha256_of(path), format="pickle")
    path = directory / f"model{SKOPS_SUFFIX}"
    trusted = dump_skops(loaded, path)
    return ArtifactInfo(path=path.name, sha256=sha256_of(path), format="skops", trusted_types=trusted)


def _python_label(value: Any) -> str | int | bool:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)


def _feature_columns(frame: pd.DataFrame, target: str | None) -> list[str]:
    return [str(c) for c in frame.columns if c != target]


def column_list(columns: Iterable[str] | str | None) -> list[str]:
    """Column names from a list (names as given), or one comma-separated string; in order,
    once each."""
    if columns is None:
        return []
    names = columns.split(",") if isinstance(columns, str) else [str(c) for c in columns]
    return list(dict.fromkeys(n.strip() for n in names if n.strip()))


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


def onnx_text_columns(model_bytes: bytes) -> TextColumns:
    """The inputs of an ONNX graph that take strings (one input per feature)."""
    return {i.name: None for i in onnx_session(model_bytes).get_inputs() if i.type == "tensor(string)"}


def sklearn_signature(
    estimator: Any, reference: pd.DataFrame | None, target: str | None,
    text_columns: TextColumns | None = None,
) -> Signature:
    if not hasattr(estimator, "classes_"):
        raise RegistryError(
            f"{type(estimator).__name__} has no classes_: register a fitted classifier"
        )
    classes = [_python_label(c) for c in estimator.classes_]
    names_in = getattr(estimator, "feature_names_in_", None)
    n_in = getattr(estimator, "n_features_in_", None)
    layout = "columns" if names_in is not None else "matrix"
    if names_in is not None:
        names = [str(n) for n in names_in]
    elif reference is not None:
        names = _feature_columns(reference, target)
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
    text_columns = text_columns or {}
    if reference is not None:
        specs = feature_specs_from_frame(reference, names, text_columns)
    else:
        specs = [_spec_without_data(n, text_columns) for n in names]
    if layout == "matrix" and any(s.is_categorical for s in specs):
        raise RegistryError(
            "the model was trained on an unnamed array that includes text columns; train it "
            "on a DataFrame so modelmon can pass named columns"
        )
    return Signature(features=specs, classes=classes, input_layout=layout)


def _spec_without_data(name: str, text_columns: TextColumns) -> FeatureSpec:
    if name not in text_columns:
        return FeatureSpec(name=name, dtype="float64")
    return FeatureSpec(name=name, dtype="string", categories=text_columns[name])


def onnx_signature(
    model_bytes: bytes, reference: pd.DataFrame | None, target: str | None,
    text_columns: TextColumns | None = None,
) -> Signature:
    session = onnx_session(model_bytes)
    inputs = session.get_inputs()
    if len(inputs) == 1 and len(inputs[0].shape or []) == 2 and inputs[0].type != "tensor(string)":
        width = inputs[0].shape[1]
        if reference is not None:
            names = _feature_columns(reference, target)
        elif isinstance(width, int):
            names = [f"x{i}" for i in range(width)]
        else:
            raise RegistryError(
                "the ONNX input has no fixed width: pass reference data to name the features"
            )
        if isinstance(width, int) and len(names) != width:
            raise RegistryError(
                f"the ONNX input takes {width} features but the reference data has {len(names)}"
            )
        if text_columns:
            raise RegistryError(
                f"the ONNX graph takes one numeric matrix, so it cannot take text columns "
                f"{sorted(text_columns)}"
            )
        layout = "matrix"
        specs = (
            feature_specs_from_frame(reference, names)
            if reference is not None
            else [FeatureSpec(name=n, dtype="float64") for n in names]
        )
    else:
        layout = "columns"
        names = [i.name for i in inputs]
        onnx_dtypes = {
            "tensor(string)": "string",
            "tensor(int64)": "int64",
            "tensor(int32)": "int32",
            "tensor(bool)": "bool",
            "tensor(double)": "float64",
        }
        if reference is not None:
            specs = feature_specs_from_frame(reference, names, text_columns or {})
        else:
            specs = [
                FeatureSpec(name=i.name, dtype=onnx_dtypes.get(i.type, "float64")) for i in inputs
            ]
    classes = onnx_class_labels(model_bytes)
    if classes is None:
        probe = Signature(features=specs, classes=[0], input_layout=layout)
        width = OnnxPredictor(model_bytes, probe).predict_proba(
            FeatureBatch(
                numeric=np.zeros((1, len(probe.numeric_features))),
                categorical=np.full((1, len(probe.categorical_features)), "", dtype=object),
            )
        ).shape[1]
        classes = list(range(width))
    probability_output(session)  # raises a clear error when there is none
    return Signature(features=specs, classes=classes, input_layout=layout)


def sample_batch(
    signature: Signature, reference: pd.DataFrame | None, validation: pd.DataFrame | None
) -> FeatureBatch:
    """Rows to prove the model on: registration data when given, else seeded made-up rows
    (standard normal numbers, known categories in turn), which still show whether two
    implementations of the model agree."""
    for frame in (validation, reference):
        if frame is not None and len(frame):
            return FeatureBatch.from_frame(frame.head(CHECK_ROWS), signature)
    rows = 256
    rng = np.random.default_rng(0)
    categorical = np.empty((rows, len(signature.categorical_features)), dtype=object)
    for j, spec in enumerate(signature.categorical_features):
        levels = spec.categories or [""]
        categorical[:, j] = [levels[i % len(levels)] for i in range(rows)]
    return FeatureBatch(
        numeric=rng.standard_normal((rows, len(signature.numeric_features))),
        categorical=categorical,
    )


def check_runs(predictor: Predictor, batch: FeatureBatch, advice: Callable[[], str] | None = None) -> None:
    """Raise a clear error unless the model answers ``batch`` with one probability per class;
    ``advice`` says, on failure, what to do about it."""
    try:
        proba = predictor.predict_proba(batch)
    except Exception as exc:
        hint = advice() if advice is not None else failure_advice(None, predictor.signature, None)
        raise RegistryError(
            f"the model failed on the registration data: {type(exc).__name__}: {exc}. {hint}"
        ) from exc
    classes = predictor.signature.classes
    if proba.shape != (batch.n_rows, len(classes)):
        raise RegistryError(
            f"predict_proba returned shape {proba.shape}, expected ({batch.n_rows}, {len(classes)})"
        )


def failure_advice(
    estimator: Any,
    signature: Signature,
    frame: pd.DataFrame | None,
    *,
    reference_given: bool = False,
    from_text_file: bool = False,
) -> str:
    """What to do when the model fails on the registration data.

    Without reference data every feature was taken as a number. With it, the likely cause
    is a column of text categories that look like numbers (codes such as ``19``) which the
    model does not record as text: the columns that make the model run once read as text are
    found by trying (scikit-learn models, on a few rows) and named."""
    parquet = ", or give the data as Parquet, which keeps column types" if from_text_file else ""
    if not reference_given:
        return (
            "If it takes text columns, pass --reference (the training data) so modelmon learns "
            f"the feature types, or name them with --categorical COL (Python: categorical=[...]){parquet}."
        )
    candidates = _number_columns(signature, frame)
    if not candidates:
        return (
            "Check that the data's columns have the types the model was trained on"
            + (" (Parquet keeps them; CSV makes pandas guess)." if from_text_file else ".")
        )
    needed = _columns_wanted_as_text(estimator, signature, frame, candidates) if estimator is not None else None
    if needed:
        options = " ".join(f"--categorical {c}" for c in needed)
        return (
            f"It runs once {_names(needed)} {'is' if len(needed) == 1 else 'are'} read as text: the "
            f"model takes {'it as a text category' if len(needed) == 1 else 'them as text categories'}, "
            f"but the values look like numbers and the model does not record that. Pass {options} "
            f"(Python: categorical={needed!r}){parquet}."
        )
    return (
        f"If some of the columns read as numbers ({_names(candidates[:10])}"
        f"{', ...' if len(candidates) > 10 else ''}) hold text categories such as codes, name "
        f"them with --categorical COL (Python: categorical=[...]){parquet}."
    )


def _names(columns: list[str]) -> str:
    return ", ".join(repr(c) for c in columns)


def _number_columns(signature: Signature, frame: pd.DataFrame | None) -> list[str]:
    """Numeric features whose data are whole numbers: the ones that could be codes."""
    if frame is None:
        return []
    found = []
    for spec in signature.numeric_features:
        if spec.name not in frame.columns or spec.dtype == "bool":
            continue
        column = frame[spec.name]
        if pd.api.types.is_integer_dtype(column.dtype):
            found.append(spec.name)
        elif pd.api.types.is_float_dtype(column.dtype):
            values = column.dropna().to_numpy(dtype=np.float64)
            if len(values) and np.array_equal(values, np.round(values)):
                found.append(spec.name)
    return found


def _columns_wanted_as_text(
    estimator: Any, signature: Signature, frame: pd.DataFrame, candidates: list[str]
) -> list[str] | None:
    """A smallest set of ``candidates`` the model runs with once they are text (found by
    dropping, one at a time, those it runs without), or None if it does not run even then."""
    rows = frame.head(DIAGNOSE_ROWS)
    candidates = candidates[:DIAGNOSE_COLUMNS]

    def runs_with(text: list[str]) -> bool:
        chosen = set(text)
        features = [
            FeatureSpec(name=f.name, dtype="string", nullable=True) if f.name in chosen else f
            for f in signature.features
        ]
        trial = Signature(features=features, classes=signature.classes, input_layout=signature.input_layout)
        try:
            proba = SklearnPredictor(estimator, trial).predict_proba(FeatureBatch.from_frame(rows, trial))
        except Exception:
            return False
        return proba.shape == (len(rows), len(signature.classes)) and bool(np.isfinite(proba).all())

    if not runs_with(candidates):
        return None
    needed = list(candidates)
    for column in candidates:
        if runs_with([c for c in needed if c != column]):
            needed.remove(column)
    return needed


def probe_missing_values(predictor: Predictor, signature: Signature, batch: FeatureBatch) -> None:
    """Mark features nullable when the model gives finite answers with them missing.

    Asking the model is the only reliable way to know: a HistGradientBoosting model takes
    NaN, a LogisticRegression raises, an ONNX graph silently returns NaN."""
    one_row = FeatureBatch(numeric=batch.numeric[:1].copy(), categorical=batch.categorical[:1].copy())
    for kind in ("numeric", "categorical"):
        specs = signature.numeric_features if kind == "numeric" else signature.categorical_features
        if not specs or all(s.nullable for s in specs):
            continue
        probe = FeatureBatch(numeric=one_row.numeric.copy(), categorical=one_row.categorical.copy())
        if kind == "numeric":
            probe.numeric[:] = np.nan
        else:
            probe.categorical[:] = None
        try:
            accepted = bool(np.isfinite(predictor.predict_proba(probe)).all())
        except Exception:
            accepted = False
        if accepted:
            for spec in specs:
                spec.nullable = True


@dataclass
class ValidationOutputs:
    """The model's outputs on the validation data, computed once for everything that needs
    them: the quality baseline, the calibration, the prediction-drift baseline."""

    proba: np.ndarray
    truth: np.ndarray  # true class index per row
    y_true: np.ndarray
    y_pred: np.ndarray


def validation_outputs(
    predictor: Predictor, signature: Signature, validation: pd.DataFrame | None, target: str | None
) -> ValidationOutputs | None:
    if validation is None or target is None:
        return None
    proba = predictor.predict_proba(FeatureBatch.from_frame(validation, signature))
    classes = [str(c) for c in signature.classes]
    y_true_text = [str(_python_label(v)) for v in validation[target]]
    unknown = sorted(set(y_true_text) - set(classes))
    if unknown:
        raise RegistryError(
            f"the validation target {target!r} has labels the model does not predict: {unknown[:10]}; "
            f"its classes are {classes}"
        )
    index = {c: i for i, c in enumerate(classes)}
    truth = np.array([index[t] for t in y_true_text])
    class_array = np.asarray(signature.classes)
    return ValidationOutputs(proba=proba, truth=truth, y_true=class_array[truth], y_pred=class_array[proba.argmax(axis=1)])


def validation_baseline(outputs: ValidationOutputs | None) -> dict[str, float] | None:
    """The model's quality on held-out data, the yardstick for live quality."""
    if outputs is None:
        return None
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    y_true, y_pred = outputs.y_true, outputs.y_pred
    return {
        "rows": float(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "precision_macro": float(precision_score(y_true, y_pred, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(y_true, y_pred, average="macro", zero_division=0)),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def reference_profile(
    predictor: Predictor,
    signature: Signature,
    reference: pd.DataFrame | None,
    outputs: ValidationOutputs | None,
    settings: ProfileSettings,
    directory: Path,
) -> ReferenceProfile | None:
    """The training data's profile; the prediction baseline comes from the validation data
    (the model's outputs on its own training data would look too confident)."""
    if reference is None or len(reference) == 0:
        return None
    batch = FeatureBatch.from_frame(reference, signature)
    proba = outputs.proba if outputs is not None else predictor.predict_proba(batch)
    prediction = prediction_profile(proba, CONFIDENCE_BUCKETS)
    profile, sample = build_profile(signature, batch, settings, prediction)
    save_sample(directory, sample)
    return profile
