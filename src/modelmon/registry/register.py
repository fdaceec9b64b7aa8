"""Registering a model version: learn its signature, prove it runs, store it.

Everything that can be known about a model is worked out here, once, so that serving only
loads and runs: feature types come from the reference data, whether a feature may be missing
comes from asking the model, and the fast ONNX graph is kept only if it agrees.
"""

from __future__ import annotations

import shutil
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
from modelmon.registry.data import DataArg, read_table
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
    """
    check_model_name(name)
    registry = registry if isinstance(registry, Registry) else Registry(registry)
    trusted = list(trusted_types or [])
    reference_frame = read_table(reference, "reference")
    validation_frame = read_table(validation, "validation")
    if validation_frame is not None and (target is None or target not in validation_frame):
        raise RegistryError(
            f"validation data needs the target column (--target); got target={target!r}"
        )

    source_path = Path(model) if isinstance(model, (str, Path)) else None
    loaded = (
        load_model_file(source_path, trust_pickle=trust_pickle, trusted_types=trusted)
        if source_path is not None
        else model
    )
    flavor = "onnx" if isinstance(loaded, bytes) else "sklearn"

    if flavor == "onnx":
        signature = onnx_signature(loaded, reference_frame, target)
        predictor: Predictor = OnnxPredictor(loaded, signature)
    else:
        signature = sklearn_signature(loaded, reference_frame, target)
        predictor = SklearnPredictor(loaded, signature)

    check_data = sample_batch(signature, reference_frame, validation_frame)
    check_runs(predictor, check_data)
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


def sklearn_signature(
    estimator: Any, reference: pd.DataFrame | None, target: str | None
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
    if reference is not None:
        specs = feature_specs_from_frame(reference, names)
    else:
        specs = [FeatureSpec(name=n, dtype="float64") for n in names]
    if layout == "matrix" and any(s.is_categorical for s in specs):
        raise RegistryError(
            "the model was trained on an unnamed array that includes text columns; train it "
            "on a DataFrame so modelmon can pass named columns"
        )
    return Signature(features=specs, classes=classes, input_layout=layout)


def onnx_signature(
    model_bytes: bytes, reference: pd.DataFrame | None, target: str | None
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
            specs = feature_specs_from_frame(reference, names)
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


def check_runs(predictor: Predictor, batch: FeatureBatch) -> None:
    try:
        proba = predictor.predict_proba(batch)
    except Exception as exc:
        raise RegistryError(
            f"the model failed on the registration data: {type(exc).__name__}: {exc}. If it "
            "takes text columns, pass --reference so modelmon learns the feature types."
        ) from exc
    classes = predictor.signature.classes
    if proba.shape != (batch.n_rows, len(classes)):
        raise RegistryError(
            f"predict_proba returned shape {proba.shape}, expected ({batch.n_rows}, {len(classes)})"
        )


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
