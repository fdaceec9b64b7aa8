"""The conformance table: one row per (runtime, task), every check runs on every row.

Modelled on scikit-learn's ``parametrize_with_checks``: the checks (``test_*.py`` here)
are written once against the ``Built`` interface below, and ``for_every_case``
parametrizes each of them over ``CASES``. Supporting a new runtime, or a new task of an
existing one, is adding one row (a ``Case`` and the factory that builds its model).

A factory returns a fitted model as Python holds it (what ``register_model`` accepts), a
way to write it to a file of the runtime's format, the training and validation frames,
the target column, the model's classes and the framework's own prediction function.
That function must not go through modelmon: it is the reference the runtime is held to
(scikit-learn's ``predict_proba``; ONNX Runtime called directly on the graph).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modelmon.types import Task

#: Rows the models are trained on, and held out for validation (and for the checks).
TRAIN_ROWS = 300
VALIDATION_ROWS = 100
#: Opsets every ONNX graph here is converted to (what the ONNX runtime is known to run).
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
REGRESSION_PENDING = "regression task not implemented yet for this runtime (issue 18)"


@dataclass(frozen=True)
class Built:
    """One case's model, built: everything the checks need, nothing modelmon computed."""

    model: Any  # as register_model takes it from Python
    write: Callable[[Path], Path]  # writes the model into a directory, returns the file
    train: pd.DataFrame  # training frame, target included (the registration reference)
    validation: pd.DataFrame  # held-out frame, target included
    target: str
    classes: list[Any]  # the model's classes, in the order of its probability columns
    #: The framework's own answer for a frame of features: class probabilities ``[N, C]``
    #: in the order of ``classes`` (a regressor: predicted values ``[N]``).
    predict: Callable[[pd.DataFrame], np.ndarray]

    @property
    def features(self) -> list[str]:
        return [c for c in self.train.columns if c != self.target]


@dataclass(frozen=True)
class Case:
    runtime: str  # the runtime's registered name (Runtime.name), expected as card.flavor
    task: Task
    build: Callable[[], Built]
    #: Why the row is not run yet (it is skipped, with this reason), or None.
    pending: str | None = None

    @property
    def id(self) -> str:
        """The test id, and the model name the case is registered under."""
        return f"{self.runtime}-{self.task.value}"


# -- data -------------------------------------------------------------------------------


def numeric_data(seed: int) -> pd.DataFrame:
    """Four float features and an integer count; a binary 0/1 target ``churned`` and a
    numeric one ``spend`` (for regression)."""
    rng = np.random.default_rng(seed)
    n = TRAIN_ROWS + VALIDATION_ROWS
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(4)})
    frame["visits"] = rng.integers(0, 20, n)
    logit = 1.5 * frame.x0 - frame.x1 + 0.5 * frame.x2 * frame.x3 + 0.1 * (frame.visits - 10)
    frame["churned"] = (logit + rng.normal(scale=0.7, size=n) > 0).astype(np.int64)
    frame["spend"] = 3.0 * frame.x0 + frame.visits + rng.normal(size=n)
    return frame


def shop_data(seed: int) -> pd.DataFrame:
    """A float, an integer and two text features; three string classes in ``segment``."""
    rng = np.random.default_rng(seed)
    n = TRAIN_ROWS + VALIDATION_ROWS
    frame = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 30.0, n),
            "items": rng.integers(1, 10, n),
            "channel": rng.choice(["web", "app", "store"], n, p=[0.5, 0.3, 0.2]),
            "region": rng.choice(["north", "south", "east", "west"], n),
        }
    )
    score = frame.amount / 60 + (frame.channel == "app") * 1.5 - (frame.region == "south")
    score += 0.05 * frame["items"] + rng.normal(scale=0.3, size=n)
    frame["segment"] = np.where(score > 2.2, "gold", np.where(score > 1.0, "silver", "bronze"))
    return frame


def split(frame: pd.DataFrame, drop: tuple[str, ...] = ()) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The first TRAIN_ROWS rows to train on, the rest held out; ``drop``: other targets."""
    frame = frame.drop(columns=list(drop))
    return frame.iloc[:TRAIN_ROWS].reset_index(drop=True), frame.iloc[TRAIN_ROWS:].reset_index(drop=True)


# -- how each runtime's models are written ----------------------------------------------


def skops_writer(model: Any) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        import skops.io

        path = directory / "model.skops"
        skops.io.dump(model, path)
        return path

    return write


def onnx_writer(graph: Any) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        path = directory / "model.onnx"
        path.write_bytes(graph.SerializeToString())
        return path

    return write


def to_onnx(estimator: Any, initial_types: list[tuple[str, Any]], zipmap: bool | None) -> Any:
    """An ``onnx.ModelProto`` made by skl2onnx (the way users make ONNX from scikit-learn);
    ``zipmap`` None for a regressor, which has no such option."""
    import warnings

    from skl2onnx import to_onnx as convert

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return convert(
            estimator, initial_types=initial_types, options=None if zipmap is None else {"zipmap": zipmap},
            target_opset=TARGET_OPSET,
        )


def onnxruntime_session(graph: Any) -> Any:
    import onnxruntime as ort

    return ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])


# -- the factories ----------------------------------------------------------------------


def sklearn_binary() -> Built:
    """LogisticRegression on a DataFrame of floats and an integer; classes 0 and 1."""
    from sklearn.linear_model import LogisticRegression

    train, validation = split(numeric_data(1), drop=("spend",))
    features = [c for c in train.columns if c != "churned"]
    model = LogisticRegression(max_iter=1000).fit(train[features], train.churned)
    return Built(
        model=model,
        write=skops_writer(model),
        train=train,
        validation=validation,
        target="churned",
        classes=model.classes_.tolist(),
        predict=lambda frame: model.predict_proba(frame[features]),
    )


def sklearn_multiclass() -> Built:
    """A Pipeline: ColumnTransformer (StandardScaler, OneHotEncoder) and LogisticRegression;
    numeric and text features, classes bronze/gold/silver."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, validation = split(shop_data(2))
    features = [c for c in train.columns if c != "segment"]
    model = make_pipeline(
        make_column_transformer(
            (StandardScaler(), ["amount", "items"]),
            (OneHotEncoder(handle_unknown="ignore"), ["channel", "region"]),
        ),
        LogisticRegression(max_iter=1000),
    ).fit(train[features], train.segment)
    return Built(
        model=model,
        write=skops_writer(model),
        train=train,
        validation=validation,
        target="segment",
        classes=model.classes_.tolist(),
        predict=lambda frame: model.predict_proba(frame[features]),
    )


def sklearn_regression() -> Built:
    from sklearn.linear_model import Ridge

    train, validation = split(numeric_data(5), drop=("churned",))
    features = [c for c in train.columns if c != "spend"]
    model = Ridge().fit(train[features], train.spend)
    return Built(
        model=model,
        write=skops_writer(model),
        train=train,
        validation=validation,
        target="spend",
        classes=[],
        predict=lambda frame: model.predict(frame[features]),
    )


def onnx_binary() -> Built:
    """A gradient-boosted classifier as a graph with one ``[N, 5]`` float input and a ZipMap
    output (a list of {class: probability} per row); classes 0 and 1."""
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.ensemble import GradientBoostingClassifier

    train, validation = split(numeric_data(3), drop=("spend",))
    features = [c for c in train.columns if c != "churned"]
    estimator = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0)
    estimator.fit(train[features].to_numpy(np.float32), train.churned)
    graph = to_onnx(estimator, [("input", FloatTensorType([None, len(features)]))], zipmap=True)
    session = onnxruntime_session(graph)
    classes = estimator.classes_.tolist()

    def predict(frame: pd.DataFrame) -> np.ndarray:
        (zipmap,) = session.run(["output_probability"], {"input": frame[features].to_numpy(np.float32)})
        return np.array([[row[c] for c in classes] for row in zipmap], dtype=np.float64)

    return Built(
        model=graph, write=onnx_writer(graph), train=train, validation=validation,
        target="churned", classes=classes, predict=predict,
    )


def onnx_multiclass() -> Built:
    """A scikit-learn pipeline as a graph with one input per feature (float, int64 and two
    string inputs) and a ``[N, 3]`` probability tensor (no ZipMap); string classes."""
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train, validation = split(shop_data(4))
    estimator = make_pipeline(
        make_column_transformer(
            (StandardScaler(), ["amount", "items"]),
            (OneHotEncoder(handle_unknown="ignore"), ["channel", "region"]),
        ),
        LogisticRegression(max_iter=1000, C=0.5),
    ).fit(train.drop(columns="segment"), train.segment)
    inputs = {
        "amount": (FloatTensorType([None, 1]), np.float32),
        "items": (Int64TensorType([None, 1]), np.int64),
        "channel": (StringTensorType([None, 1]), object),
        "region": (StringTensorType([None, 1]), object),
    }
    graph = to_onnx(estimator, [(name, t) for name, (t, _) in inputs.items()], zipmap=False)
    session = onnxruntime_session(graph)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        feeds = {name: frame[[name]].to_numpy(dtype) for name, (_, dtype) in inputs.items()}
        (probabilities,) = session.run(["probabilities"], feeds)
        return np.asarray(probabilities, dtype=np.float64)

    return Built(
        model=graph, write=onnx_writer(graph), train=train, validation=validation,
        target="segment", classes=estimator.classes_.tolist(), predict=predict,
    )


def onnx_regression() -> Built:
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.linear_model import Ridge

    train, validation = split(numeric_data(6), drop=("churned",))
    features = [c for c in train.columns if c != "spend"]
    estimator = Ridge().fit(train[features].to_numpy(np.float32), train.spend)
    graph = to_onnx(estimator, [("input", FloatTensorType([None, len(features)]))], zipmap=None)
    session = onnxruntime_session(graph)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        (values,) = session.run(None, {"input": frame[features].to_numpy(np.float32)})
        return np.asarray(values, dtype=np.float64).reshape(-1)

    return Built(
        model=graph, write=onnx_writer(graph), train=train, validation=validation,
        target="spend", classes=[], predict=predict,
    )


# -- the table --------------------------------------------------------------------------

# Factories in their own modules, imported here at the end (they use the helpers above).
from tests.conformance import (  # noqa: E402
    cases_keras,
    cases_lightgbm,
    cases_tensorflow,
    cases_torch,
    cases_xgboost,
)

CASES = [
    Case("sklearn", Task.BINARY, sklearn_binary),
    Case("sklearn", Task.MULTICLASS, sklearn_multiclass),
    Case("sklearn", Task.REGRESSION, sklearn_regression),
    Case("onnx", Task.BINARY, onnx_binary),
    Case("onnx", Task.MULTICLASS, onnx_multiclass),
    Case("onnx", Task.REGRESSION, onnx_regression),
    Case("torch", Task.BINARY, cases_torch.torch_binary),
    Case("torch", Task.MULTICLASS, cases_torch.torch_multiclass),
    Case("torch", Task.REGRESSION, cases_torch.torch_regression),
    Case("keras", Task.BINARY, cases_keras.keras_binary),
    Case("keras", Task.MULTICLASS, cases_keras.keras_multiclass),
    Case("keras", Task.REGRESSION, cases_keras.keras_regression),
    Case("tensorflow", Task.BINARY, cases_tensorflow.tensorflow_binary),
    Case("tensorflow", Task.MULTICLASS, cases_tensorflow.tensorflow_multiclass),
    Case("tensorflow", Task.REGRESSION, cases_tensorflow.tensorflow_regression),
    Case("xgboost", Task.BINARY, cases_xgboost.xgboost_binary),
    Case("xgboost", Task.MULTICLASS, cases_xgboost.xgboost_multiclass),
    Case("xgboost", Task.REGRESSION, cases_xgboost.xgboost_regression),
    Case("lightgbm", Task.BINARY, cases_lightgbm.lightgbm_binary),
    Case("lightgbm", Task.MULTICLASS, cases_lightgbm.lightgbm_multiclass),
    Case("lightgbm", Task.REGRESSION, cases_lightgbm.lightgbm_regression),
]

#: The rows that run: registered together in one registry and served by one server.
ACTIVE_CASES = [case for case in CASES if case.pending is None]
PENDING_CASES = [case for case in CASES if case.pending is not None]


def case_params() -> list[Any]:
    return [
        pytest.param(case, id=case.id, marks=[pytest.mark.skip(reason=case.pending)] if case.pending else [])
        for case in CASES
    ]


#: Decorator: run a check once per row of the table (a pending row is reported as skipped).
for_every_case = pytest.mark.parametrize("case", case_params())
#: Decorator: run a check once per regression row.
for_every_regression_case = pytest.mark.parametrize(
    "case", [p for p in case_params() if p.values[0].task is Task.REGRESSION]
)
