"""Registering a model version: learn its signature, prove it runs, store it.

Everything that can be known about a model is worked out here, once, so that serving only
loads and runs: feature types come from the model where it records them (an encoder's text
categories, an ONNX graph's string inputs), else from the reference data; whether a feature
may be missing comes from asking the model, and a fast ONNX graph is kept only if it agrees.
What differs between frameworks is the runtime's (``modelmon.runtimes``); nothing here names
a framework.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modelmon.errors import RegistryError
from modelmon.registry.calibration import calibrate
from modelmon.registry.card import ModelCard
from modelmon.registry.data import DataArg, guesses_types, read_table
from modelmon.registry.profile import (
    CONFIDENCE_BUCKETS,
    ProfileSettings,
    ReferenceProfile,
    build_profile,
    prediction_profile,
    save_sample,
)
from modelmon.registry.store import Registry, check_model_name
from modelmon.runtimes.base import (
    ReadOptions,
    Runtime,
    artifact_for,
    runtime_for_file,
    runtime_for_object,
)
from modelmon.runtimes.features import python_label
from modelmon.types import FeatureBatch, FeatureSpec, ModelOutput, Signature, Task

#: Rows of the registration data used to prove the model runs and to check an ONNX export.
CHECK_ROWS = 2000
#: Rows, and at most how many number-looking columns, tried when the model fails on the
#: registration data, to name the columns it wanted as text.
DIAGNOSE_ROWS = 20
DIAGNOSE_COLUMNS = 100

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
    if source_path is not None:
        runtime = runtime_for_file(source_path)
        loaded = runtime.read(source_path, ReadOptions(trust_pickle=trust_pickle, trusted_types=trusted))
    else:
        runtime = runtime_for_object(model)
        loaded = model
    text_columns = runtime.text_columns(loaded)
    for column in named_categorical:
        text_columns.setdefault(column, None)

    reference_frame = read_table(reference, "reference", text_columns)
    validation_frame = read_table(validation, "validation", text_columns)
    if validation_frame is not None and (target is None or target not in validation_frame):
        raise RegistryError(
            f"validation data needs the target column (--target); got target={target!r}"
        )

    signature = runtime.infer_signature(loaded, reference_frame, target, text_columns)
    predictor = runtime.wrap(loaded, signature)
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
            predictor, signature, check_frame,
            reference_given=reference is not None, from_text_file=guesses_types(check_source),
        )

    check_runs(predictor, check_data, advice)
    probe_missing_values(predictor, signature, check_data)

    version, directory = registry.allocate_version(name)
    try:
        artifact = runtime.save(loaded, source_path, directory)
        serving_artifact, onnx_check = None, None
        converted = runtime.to_onnx(loaded, signature, check_data) if convert_to_onnx else None
        if converted is not None:
            onnx_bytes, onnx_check = converted
            if onnx_bytes is not None:
                (directory / "model.onnx").write_bytes(onnx_bytes)
                serving_artifact = artifact_for(directory / "model.onnx", "onnx")
        settings = profile_settings or ProfileSettings()
        calibration = None
        if signature.task is Task.REGRESSION:
            values = regression_outputs(predictor, signature, validation_frame, target)
            profile = regression_profile(predictor, signature, reference_frame, values, settings, directory)
            baseline = regression_baseline(values)
            fit_loss_estimator(predictor, signature, values, reference_frame, target, directory)
        else:
            outputs = validation_outputs(predictor, signature, validation_frame, target)
            profile = reference_profile(predictor, signature, reference_frame, outputs, settings, directory)
            baseline = validation_baseline(outputs)
            calibration = calibrate(outputs.proba, outputs.truth) if outputs is not None else None
        if run is not None and baseline is None:
            from modelmon.tracking import run_baseline

            baseline = run_baseline(run, run_store)
        card = ModelCard(
            name=name,
            version=version,
            flavor=runtime.name,
            created_at=datetime.now(UTC),
            description=description,
            signature=signature,
            artifact=artifact,
            serving_artifact=serving_artifact,
            onnx_check=onnx_check,
            baseline=baseline,
            calibration=calibration,
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


def column_list(columns: Iterable[str] | str | None) -> list[str]:
    """Column names from a list (names as given), or one comma-separated string; in order,
    once each."""
    if columns is None:
        return []
    names = columns.split(",") if isinstance(columns, str) else [str(c) for c in columns]
    return list(dict.fromkeys(n.strip() for n in names if n.strip()))


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


def check_runs(predictor: Runtime, batch: FeatureBatch, advice: Callable[[], str] | None = None) -> None:
    """Raise a clear error unless the model answers ``batch`` with one probability per class
    (a regressor: one value per row); ``advice`` says, on failure, what to do about it."""
    try:
        answers = _answers(predictor, batch)
    except RegistryError:
        raise
    except Exception as exc:
        hint = advice() if advice is not None else failure_advice(None, predictor.signature, None)
        raise RegistryError(
            f"the model failed on the registration data: {type(exc).__name__}: {exc}. {hint}"
        ) from exc
    expected = _answer_shape(predictor.signature, batch.n_rows)
    if answers.shape != expected:
        what = "predict" if predictor.signature.task is Task.REGRESSION else "predict_proba"
        raise RegistryError(f"{what} returned shape {answers.shape}, expected {expected}")


def failure_advice(
    predictor: Runtime | None,
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
    # candidates come from the frame, so it is not None here
    needed = _columns_wanted_as_text(predictor, signature, frame, candidates) if predictor is not None and frame is not None else None
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
    predictor: Runtime, signature: Signature, frame: pd.DataFrame, candidates: list[str]
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
        trial = Signature(features=features, task=signature.task, classes=signature.classes, input_layout=signature.input_layout)
        try:
            answers = _answers(type(predictor).wrap(predictor.model, trial), FeatureBatch.from_frame(rows, trial))
        except Exception:
            return False
        return answers.shape == _answer_shape(signature, len(rows)) and bool(np.isfinite(answers).all())

    if not runs_with(candidates):
        return None
    needed = list(candidates)
    for column in candidates:
        if runs_with([c for c in needed if c != column]):
            needed.remove(column)
    return needed


def probe_missing_values(predictor: Runtime, signature: Signature, batch: FeatureBatch) -> None:
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
            accepted = bool(np.isfinite(_scores(predictor.predict(probe))).all())
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
    predictor: Runtime, signature: Signature, validation: pd.DataFrame | None, target: str | None
) -> ValidationOutputs | None:
    if validation is None or target is None:
        return None
    proba = _probabilities(predictor, FeatureBatch.from_frame(validation, signature))
    classes = [str(c) for c in signature.class_labels]
    y_true_text = [str(python_label(v)) for v in validation[target]]
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
    predictor: Runtime,
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
    proba = outputs.proba if outputs is not None else _probabilities(predictor, batch)
    prediction = prediction_profile(proba, CONFIDENCE_BUCKETS)
    profile, sample = build_profile(signature, batch, settings, prediction, predictions_from_validation=outputs is not None)
    save_sample(directory, sample)
    return profile


# -- regression -----------------------------------------------------------------------------


@dataclass
class RegressionOutputs:
    """A regressor's predictions on the validation rows and their target, computed once for
    the baseline, the prediction and target profiles and the error estimator."""

    batch: FeatureBatch
    predicted: np.ndarray
    target: np.ndarray


def numeric_target(frame: pd.DataFrame, target: str) -> np.ndarray:
    """The target column as float64; a regressor's target must be finite numbers."""
    column = frame[target]
    if column.dtype.kind not in "iuf":
        raise RegistryError(f"the target {target!r} of a regression model must be numbers; its dtype is {column.dtype}")
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise RegistryError(f"the target {target!r} has {len(bad)} missing or infinite value(s), first in row {int(bad[0])}")
    return values


def regression_outputs(
    predictor: Runtime, signature: Signature, validation: pd.DataFrame | None, target: str | None
) -> RegressionOutputs | None:
    if validation is None or target is None:
        return None
    batch = FeatureBatch.from_frame(validation, signature)
    return RegressionOutputs(batch, predictor.predict(batch).predicted, numeric_target(validation, target))


def regression_baseline(outputs: RegressionOutputs | None) -> dict[str, float] | None:
    """MAE, RMSE, R² and the mean error (bias: predicted minus true) on held-out data."""
    if outputs is None:
        return None
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    y_true, y_pred = outputs.target, outputs.predicted
    return {
        "rows": float(len(y_true)),
        "mae": float(mean_absolute_error(y_true, y_pred)),
        "rmse": float(np.sqrt(mean_squared_error(y_true, y_pred))),
        "r2": float(r2_score(y_true, y_pred)),
        "mean_error": float(np.mean(y_pred - y_true)),
    }


def regression_profile(
    predictor: Runtime,
    signature: Signature,
    reference: pd.DataFrame | None,
    outputs: RegressionOutputs | None,
    settings: ProfileSettings,
    directory: Path,
) -> ReferenceProfile | None:
    """The training data's profile, with the predictions binned (from the validation data,
    else the reference data) and, with validation data, the target."""
    if reference is None or len(reference) == 0:
        return None
    batch = FeatureBatch.from_frame(reference, signature)
    predicted = outputs.predicted if outputs is not None else predictor.predict(batch).predicted
    target = outputs.target if outputs is not None else None
    profile, sample = build_profile(signature, batch, settings, None, predicted_values=predicted, target=target,
                                    predictions_from_validation=outputs is not None)
    save_sample(directory, sample)
    return profile


def fit_loss_estimator(
    predictor: Runtime,
    signature: Signature,
    outputs: RegressionOutputs | None,
    reference: pd.DataFrame | None,
    target: str | None,
    directory: Path,
) -> bool:
    """Fit the label-free error estimate on the validation rows (else the reference rows,
    when they hold the target) and save it into the version directory; False when there are
    no labelled rows to fit it on."""
    if outputs is None and reference is not None and target is not None and target in reference:
        batch = FeatureBatch.from_frame(reference, signature)
        outputs = RegressionOutputs(batch, predictor.predict(batch).predicted, numeric_target(reference, target))
    if outputs is None or len(outputs.target) == 0:
        return False
    try:
        from modelmon.registry.loss_estimator import LossEstimator
    except ModuleNotFoundError as exc:  # written by its own change (issue 18): until then, none
        if exc.name != "modelmon.registry.loss_estimator":
            raise
        return False
    LossEstimator.fit(outputs.batch, outputs.predicted, outputs.target, signature).save(directory)
    return True


def _answer_shape(signature: Signature, rows: int) -> tuple[int, ...]:
    return (rows,) if signature.task is Task.REGRESSION else (rows, len(signature.class_labels))


def _answers(predictor: Runtime, batch: FeatureBatch) -> np.ndarray:
    """A classifier's probabilities, a regressor's predicted values."""
    output: ModelOutput = predictor.predict(batch)
    if predictor.signature.task is Task.REGRESSION:
        return np.asarray(output.predicted)
    if output.probabilities is None:
        raise RegistryError(f"modelmon monitors classifiers with probabilities; {predictor.name} gave none")
    return output.probabilities


def _scores(output: Any) -> np.ndarray:
    """What a model answered, as numbers to check for finiteness."""
    return output.probabilities if output.probabilities is not None else output.predicted


def _probabilities(predictor: Runtime, batch: FeatureBatch) -> np.ndarray:
    proba = predictor.predict(batch).probabilities
    if proba is None:
        raise RegistryError(f"modelmon monitors classifiers with probabilities; {predictor.name} gave none")
    return proba
