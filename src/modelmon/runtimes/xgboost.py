"""XGBoost classifiers and regressors: Booster files in XGBoost's own JSON (``.json``) or UBJSON (``.ubj``)
format, and ``XGBClassifier`` / ``Booster`` objects (saved as UBJSON). Never pickle.

What the model records is the signature: its feature names (a model trained on a DataFrame),
which features are categorical, and, for a model trained with ``enable_categorical`` by
XGBoost 3.1 or later, the categories themselves, in the order of their codes. Those
features are served as text and mapped to the model's codes; a level the model never saw is
a missing value to the trees (XGBoost itself raises on one). A categorical feature whose
categories the model does not record (XGBoost < 3.1, or trained on codes) takes the codes,
as numbers.

Probabilities come from the booster's objective: ``binary:logistic`` and
``multi:softprob`` predict them, ``binary:logitraw`` and ``multi:softmax`` predict margins
(their sigmoid / softmax are the probabilities, as ``XGBClassifier.predict_proba`` computes
them). Regression objectives (``reg:*`` but quantiles, ``count:poisson``) predict one value
per row, with the objective's transform (as ``XGBRegressor.predict``). Ranking, hinge and
survival objectives are refused. Which trees answer is what
the framework's own prediction uses: all of them for a Booster (as ``Booster.predict``), up
to ``best_iteration`` for a model of the scikit-learn API trained with early stopping (as
``XGBClassifier.predict_proba``), recorded at registration.

At registration the model is converted to ONNX (onnxmltools) and the graph is kept only
when its probabilities agree within 1e-5 (models with categorical features are served
natively: the converter has no categorical splits).

This module also holds what the two tree-ensemble runtimes share (``TreeInputs``,
``tree_signature``, ``FeatureMatrix``, ``onnx_agreement``): the LightGBM runtime uses them.
Neither framework is imported before a method needs it (``Runtime.require``).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
from modelmon.runtimes.features import feature_columns, feature_specs_from_frame, python_label
from modelmon.runtimes.onnx import OnnxRuntime
from modelmon.types import ClassLabel, FeatureBatch, FeatureSpec, ModelOutput, Signature, Task

if TYPE_CHECKING:
    import pandas as pd

#: The file formats XGBoost saves models in, by suffix, as ``ArtifactInfo.format`` names them.
FORMATS = {".json": "xgboost-json", ".ubj": "xgboost-ubj"}
#: Largest absolute difference in any class probability for a converted graph to be kept.
PROBABILITY_TOLERANCE = 1e-5
#: For a regressor: the largest difference, as a share of the largest predicted magnitude
#: (at least 1), for a converted graph to be kept (the graph computes in float32).
VALUE_TOLERANCE = 1e-5
#: The highest ONNX opset onnxmltools converts trees to.
ONNX_OPSET = 15
#: Rows of the check data given missing values to compare a converted graph on.
MISSING_CHECK_ROWS = 256

#: How a classification objective's prediction becomes probabilities: predicted as they
#: are ("probability"), or from margins ("sigmoid", "softmax").
_OUTPUTS = {
    "binary:logistic": "probability",
    "binary:logitraw": "sigmoid",
    "multi:softprob": "probability",
    "multi:softmax": "softmax",
    # Regression: one value per row, the objective's transform applied ("value").
    "reg:squarederror": "value",
    "reg:squaredlogerror": "value",
    "reg:pseudohubererror": "value",
    "reg:absoluteerror": "value",
    "reg:gamma": "value",
    "reg:tweedie": "value",
    "count:poisson": "value",
}


@register_runtime
class XGBoostRuntime(Runtime):
    """An XGBoost booster, predicting class probabilities in place from one float matrix."""

    name = "xgboost"
    suffixes = tuple(FORMATS)
    extra = "xgboost"

    def __init__(self, model: Any, signature: Signature, options: Mapping[str, Any] | None = None) -> None:
        booster = booster_of(model)
        super().__init__(booster, signature)
        options = options or model_options(model)
        self.output: str = options["output"]
        self.iteration_range = (int(options["iteration_range"][0]), int(options["iteration_range"][1]))
        self.matrix = FeatureMatrix(signature, options.get("categories", {}))
        self._predict_type = "value" if self.output in ("probability", "value") else "margin"

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        raw = self.model.inplace_predict(
            self.matrix(batch),
            iteration_range=self.iteration_range,
            predict_type=self._predict_type,
            validate_features=False,
        )
        return class_probabilities(raw, self.output)

    def predict_values(self, batch: FeatureBatch) -> np.ndarray:
        """A regressor's predictions."""
        raw = self.model.inplace_predict(
            self.matrix(batch), iteration_range=self.iteration_range, predict_type="value", validate_features=False
        )
        return np.asarray(raw, dtype=np.float64).reshape(-1)

    def predict(self, batch: FeatureBatch) -> ModelOutput:
        if self.output == "value":
            return ModelOutput.from_values(self.predict_values(batch))
        return ModelOutput.from_probabilities(self.predict_proba(batch))

    # -- registration ------------------------------------------------------------------

    @classmethod
    def recognises(cls, model: Any) -> bool:
        """A ``Booster`` or a model of XGBoost's scikit-learn API (by type: XGBoost is
        imported already whenever such an object exists)."""
        xgb = sys.modules.get("xgboost")
        if xgb is None or not hasattr(xgb, "Booster"):
            return False
        return isinstance(model, (xgb.Booster, xgb.XGBModel))

    @classmethod
    def reads(cls, path: Path) -> bool:
        """A ``.json`` / ``.ubj`` file that holds an XGBoost model (its ``learner`` object
        comes first), not any JSON file."""
        suffix = path.suffix.lower()
        if suffix not in FORMATS or not path.is_file():
            return False
        with path.open("rb") as f:
            head = f.read(256)
        if suffix == ".json":
            return head.lstrip().startswith(b"{") and b'"learner"' in head
        return head.startswith(b"{") and b"learner" in head

    @classmethod
    def read(cls, path: Path, options: ReadOptions) -> Any:
        """The booster in the file: JSON and UBJSON are data, loading them runs no code."""
        xgb = cls.require("xgboost")
        try:
            return xgb.Booster(model_file=bytearray(path.read_bytes()))
        except xgb.core.XGBoostError as exc:
            raise RegistryError(f"XGBoost cannot load {path.name}: {framework_message(exc)}") from None

    @classmethod
    def text_columns(cls, model: Any) -> TextColumns:
        inputs = model_inputs(model)
        if inputs.names is None:
            return {}
        return {inputs.names[i]: list(levels) for i, levels in inputs.categorical.items() if levels is not None}

    @classmethod
    def infer_signature(
        cls, model: Any, reference: pd.DataFrame | None, target: str | None, text_columns: TextColumns
    ) -> Signature:
        options = model_options(model)
        if options["output"] == "value":
            return tree_signature(model_inputs(model), None, reference, target, text_columns)
        if isinstance(model, cls.require("xgboost").XGBModel):
            classes = [python_label(c) for c in model.classes_]
        else:
            classes = list(range(options["n_classes"]))
        if len(classes) != options["n_classes"]:
            raise RegistryError(
                f"the model has {len(classes)} classes but its booster predicts {options['n_classes']}"
            )
        return tree_signature(model_inputs(model), classes, reference, target, text_columns)

    @classmethod
    def wrap(cls, model: Any, signature: Signature) -> XGBoostRuntime:
        return cls(model, signature, model_options(model))

    @classmethod
    def save(cls, model: Any, source: Path | None, directory: Path) -> ArtifactInfo:
        """The user's file as it is, or the booster as UBJSON; with what loading needs
        (the objective's output, the trees to use, the categories)."""
        # Not model.json: that is the card's name in a version directory.
        if source is not None:
            path = directory / f"booster{source.suffix.lower()}"
            shutil.copyfile(source, path)
        else:
            path = directory / "booster.ubj"
            booster_of(model).save_model(str(path))
        return artifact_for(path, FORMATS[path.suffix], options=model_options(model))

    @classmethod
    def load(cls, path: Path, artifact: ArtifactInfo, signature: Signature) -> XGBoostRuntime:
        if artifact.format not in FORMATS.values():
            raise RegistryError(
                f"the xgboost runtime loads XGBoost JSON or UBJSON files only, not a "
                f"{artifact.format!r} artifact"
            )
        booster = cls.read(path, ReadOptions())
        # One replica is one process on a shared machine (as ONNX Runtime is configured):
        # trees on a few rows gain nothing from more threads.
        booster.set_param({"nthread": 1})
        return cls(booster, signature, artifact.options or None)

    @classmethod
    def to_onnx(
        cls, model: Any, signature: Signature, check_data: FeatureBatch
    ) -> tuple[bytes | None, OnnxCheck]:
        if check_data.n_rows == 0:
            return None, OnnxCheck(used=False, reason="no reference or validation data to verify on")
        if signature.categorical_features:
            return None, categorical_refusal(signature, "XGBoost")
        options = model_options(model)
        xgb = cls.require("xgboost")
        booster = booster_of(model)
        # The converter names features f0, f1, ...: convert a copy without names, cut to
        # the trees the model answers with.
        copy = xgb.Booster(model_file=bytearray(booster.save_raw("ubj")))
        start, stop = options["iteration_range"]
        if stop:
            copy = copy[start:stop]
        copy.feature_names = None
        copy.feature_types = None

        def convert(onnxmltools: Any, initial_types: list[tuple[str, Any]]) -> Any:
            return onnxmltools.convert_xgboost(copy, initial_types=initial_types, target_opset=ONNX_OPSET)

        graph = convert_trees(convert, len(signature.features))
        if isinstance(graph, OnnxCheck):
            return None, graph
        native = cls.wrap(model, signature)
        answers = native.predict_values if signature.task is Task.REGRESSION else native.predict_proba
        return onnx_agreement(answers, graph, signature, check_data)


# -- What an XGBoost model records -------------------------------------------------------


def booster_of(model: Any) -> Any:
    """The booster of a scikit-learn API model, or the booster itself."""
    if hasattr(model, "get_booster"):
        try:
            return model.get_booster()
        except Exception as exc:  # NotFittedError, XGBoostError
            raise RegistryError(f"{type(model).__name__} is not fitted: register a trained model ({exc})") from None
    return model


def model_options(model: Any) -> dict[str, Any]:
    """What serving needs to know about the model: the objective and how its output becomes
    probabilities, the number of classes, the trees to use, the categories of text features."""
    booster = booster_of(model)
    learner = json.loads(booster.save_config())["learner"]
    objective = str(learner["objective"]["name"])
    output = _OUTPUTS.get(objective)
    if output is None:
        raise RegistryError(objective_refusal(objective))
    n_classes = int(float(learner["learner_model_param"].get("num_class", "0") or 0))
    n_classes = 2 if objective.startswith("binary:") else n_classes
    if output == "value":
        n_classes = 0
    elif n_classes < 2:
        raise RegistryError(f"the {objective} model predicts {n_classes} classes: it needs 2 or more")
    attributes = booster.attributes()
    stop = 0
    from_sklearn_api = hasattr(model, "get_booster") or "scikit_learn" in attributes
    if from_sklearn_api and "best_iteration" in attributes and learner["gradient_booster"]["name"] != "gblinear":
        stop = int(attributes["best_iteration"]) + 1
    inputs = model_inputs(booster)
    categories = {
        inputs.names[i]: list(levels)
        for i, levels in inputs.categorical.items()
        if levels is not None and inputs.names is not None
    }
    return {
        "objective": objective,
        "output": output,
        "n_classes": n_classes,
        "iteration_range": [0, stop],
        "categories": categories,
    }


def objective_refusal(objective: str) -> str:
    if objective.startswith(("reg:", "count:", "survival:")):
        return (
            f"the model's objective {objective!r} is not served: modelmon serves regressors trained "
            f"with {', '.join(sorted(o for o, out in _OUTPUTS.items() if out == 'value'))}"
        )
    if objective.startswith("rank:"):
        return f"the model's objective {objective!r} ranks: modelmon serves classifiers"
    return (
        f"the model's objective {objective!r} gives no class probabilities: modelmon serves "
        f"classifiers trained with {', '.join(sorted(_OUTPUTS))}"
    )


def model_inputs(model: Any) -> TreeInputs:
    booster = booster_of(model)
    names = booster.feature_names
    types = list(booster.feature_types or [])
    recorded = recorded_categories(booster)
    return TreeInputs(
        names=list(names) if names is not None else None,
        n_features=int(booster.num_features()),
        categorical={i: recorded.get(i) for i, t in enumerate(types) if t == "c"},
        integer={i for i, t in enumerate(types) if t == "int"},
    )


def recorded_categories(booster: Any) -> dict[int, list[str]]:
    """The categories XGBoost (3.1 or later) saved with the model, by feature index, in the
    order of their codes, as text."""
    if not hasattr(booster, "get_categories"):
        return {}
    categories = booster.get_categories(export_to_arrow=True)
    if categories.empty():
        return {}
    return {
        i: [level_text(v) for v in levels.to_pylist()]
        for i, (_, levels) in enumerate(categories.to_arrow())
        if levels is not None
    }


def framework_message(exc: BaseException) -> str:
    """A framework error's first line, without its timestamp and source location."""
    line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^\[[0-9:]+\] [^ ]+: ", "", line)


# -- Shared by the tree-ensemble runtimes (XGBoost, LightGBM) ----------------------------


@dataclass(frozen=True)
class TreeInputs:
    """What a tree ensemble records about its inputs."""

    names: list[str] | None  # None: trained on an unnamed array
    n_features: int
    #: Categorical features by index: their levels in code order, or None when the model
    #: takes the codes (it does not record what they stand for).
    categorical: dict[int, list[str] | None] = field(default_factory=dict)
    #: Features the model records as integers (used when there is no reference data).
    integer: set[int] = field(default_factory=set)


def tree_signature(
    inputs: TreeInputs,
    classes: list[ClassLabel] | None,
    reference: pd.DataFrame | None,
    target: str | None,
    text_columns: TextColumns,
) -> Signature:
    """The signature of a tree ensemble: feature names and categorical features from the
    model, dtypes and categories from the reference data (which must hold every feature, and
    text only where the model takes text). ``classes`` None: a regressor."""
    names = inputs.names
    layout = "columns" if names is not None else "matrix"
    if names is None:
        if reference is not None:
            names = feature_columns(reference, target)
            if len(names) != inputs.n_features:
                raise RegistryError(
                    f"the model takes {inputs.n_features} unnamed features but the reference data has "
                    f"{len(names)} columns besides the target {target!r}: {names[:10]}"
                )
        else:
            names = [f"x{i}" for i in range(inputs.n_features)]
    elif len(names) != inputs.n_features:
        raise RegistryError(f"the model names {len(names)} features but takes {inputs.n_features}")
    text = {names[i]: levels for i, levels in inputs.categorical.items() if levels is not None}
    asked = set(text) | set(text_columns)
    specs: list[FeatureSpec]
    if reference is not None:
        specs = feature_specs_from_frame(reference, names, asked)
    else:
        specs = [
            FeatureSpec(name=name, dtype="string", categories=text.get(name))
            if name in asked
            else FeatureSpec(name=name, dtype="int64" if i in inputs.integer else "float64")
            for i, name in enumerate(names)
        ]
    for i, spec in enumerate(specs):
        if spec.is_categorical and spec.name not in text:
            if i in inputs.categorical:
                raise RegistryError(
                    f"feature {spec.name!r} is categorical in the model, which does not record its "
                    "categories, only their codes: send the codes as numbers (the reference data "
                    "or --categorical gives it as text)"
                )
            raise RegistryError(
                f"the model takes feature {spec.name!r} as a number, but the reference data "
                "(or --categorical) gives it as text"
            )
    if classes is None:
        return Signature(features=specs, task=Task.REGRESSION, input_layout=layout)
    if len(classes) < 2:
        raise RegistryError(f"the model predicts {len(classes)} class: a classifier needs 2 or more")
    return Signature(features=specs, task=Task.for_classes(classes), classes=classes, input_layout=layout)


def level_text(value: Any) -> str:
    """A category as the signature and requests spell it: whole numbers without a decimal
    point (as ``types.text_values`` writes codes read as floats)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class FeatureMatrix:
    """A batch as a tree ensemble's input: one float64 ``[N, F]`` matrix in the model's
    feature order, text categories replaced by the model's codes (a missing or unknown
    level: NaN, a missing value to the trees)."""

    def __init__(self, signature: Signature, categories: Mapping[str, list[str]]) -> None:
        features = signature.features
        self.width = len(features)
        self.numeric_positions = np.array(
            [i for i, f in enumerate(features) if not f.is_categorical], dtype=np.intp
        )
        self.codes: list[tuple[int, dict[str, float]]] = []
        for i, spec in enumerate(features):
            if spec.is_categorical:
                levels = categories.get(spec.name)
                if levels is None:
                    raise RegistryError(f"the model records no categories for the text feature {spec.name!r}")
                self.codes.append((i, {level: float(code) for code, level in enumerate(levels)}))

    def __call__(self, batch: FeatureBatch) -> np.ndarray:
        if not self.codes:
            return batch.numeric
        n = batch.n_rows
        out = np.empty((n, self.width), dtype=np.float64)
        out[:, self.numeric_positions] = batch.numeric
        for j, (i, codes) in enumerate(self.codes):
            column = batch.categorical[:, j]
            out[:, i] = np.fromiter((codes.get(v, math.nan) for v in column), dtype=np.float64, count=n)
        return out


def class_probabilities(raw: Any, output: str) -> np.ndarray:
    """``[N, C]`` probabilities from a booster's prediction: probabilities of the positive
    class ``[N]`` or of every class, or margins (``output`` "sigmoid" / "softmax")."""
    values = np.asarray(raw, dtype=np.float64)
    if output == "softmax":
        shifted = np.exp(values - values.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    if output == "sigmoid":
        values = 1.0 / (1.0 + np.exp(-values.reshape(-1)))
    if values.ndim == 1 or values.shape[1] == 1:
        positive = values.reshape(-1)
        return np.column_stack([1.0 - positive, positive])
    return values


def categorical_refusal(signature: Signature, framework: str) -> OnnxCheck:
    names = [f.name for f in signature.categorical_features]
    return OnnxCheck(
        used=False,
        reason=f"categorical features {names} are served by {framework} itself: the converted "
        "graph would take category codes, not text",
    )


def convert_trees(convert: Callable[[Any, list[tuple[str, Any]]], Any], width: int) -> bytes | OnnxCheck:
    """A tree ensemble converted by onnxmltools to a graph with one ``[N, width]`` float
    input, or the record of why it could not be."""
    try:
        import onnxmltools
        from onnxmltools.convert.common.data_types import FloatTensorType
    except ImportError:
        return OnnxCheck(used=False, reason="onnxmltools is not installed: the model is served natively")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = convert(onnxmltools, [("input", FloatTensorType([None, width]))])
    except Exception as exc:  # the converters raise many types for what they cannot convert
        return OnnxCheck(used=False, reason=f"conversion failed: {type(exc).__name__}: {exc}"[:500])
    return bytes(graph.SerializeToString())


def with_missing_values(batch: FeatureBatch, signature: Signature) -> FeatureBatch | None:
    """Some of ``batch``'s rows with the features the model accepts missing set missing, a
    few at a time and all at once: a converted graph must send them down the same branches."""
    nullable = [j for j, spec in enumerate(signature.numeric_features) if spec.nullable]
    if not nullable or batch.n_rows == 0:
        return None
    rows = min(batch.n_rows, MISSING_CHECK_ROWS)
    numeric = batch.numeric[:rows].copy()
    for r in range(rows):
        numeric[r, nullable[r % len(nullable)]] = np.nan
    numeric[::7, nullable] = np.nan
    return FeatureBatch(numeric=numeric, categorical=batch.categorical[:rows].copy())


def onnx_agreement(
    native: Callable[[FeatureBatch], np.ndarray],
    graph: bytes,
    signature: Signature,
    check_data: FeatureBatch,
) -> tuple[bytes | None, OnnxCheck]:
    """The graph and its record when its probabilities agree with the framework's within
    ``PROBABILITY_TOLERANCE`` (a regressor's values within ``VALUE_TOLERANCE`` of their
    scale) on ``check_data`` and on those rows with missing values; else None and the record
    of why not."""
    regression = signature.task is Task.REGRESSION
    try:
        converted = OnnxRuntime(graph, signature)
    except Exception as exc:
        return None, OnnxCheck(used=False, reason=f"the converted graph does not load: {exc}"[:500])
    batches: Iterable[FeatureBatch | None] = (check_data, with_missing_values(check_data, signature))
    rows, worst, scale = 0, 0.0, 1.0
    for batch in batches:
        if batch is None:
            continue
        expected = native(batch)
        try:
            actual = converted.predict_values(batch) if regression else converted.predict_proba(batch)
        except Exception as exc:
            return None, OnnxCheck(used=False, rows_compared=rows, reason=f"the converted graph failed: {exc}"[:500])
        if actual.shape != expected.shape:
            return None, OnnxCheck(
                used=False, rows_compared=rows,
                reason=f"the graph's output shape {actual.shape} differs from {expected.shape}",
            )
        difference = float(np.max(np.abs(actual - expected)))
        rows += batch.n_rows
        if not np.isfinite(difference):
            return None, OnnxCheck(used=False, rows_compared=rows, reason="the graph's probabilities are not finite")
        worst = max(worst, difference)
        scale = max(scale, float(np.max(np.abs(expected)))) if expected.size else scale
    allowed = VALUE_TOLERANCE * scale if regression else PROBABILITY_TOLERANCE
    if worst > allowed:
        return None, OnnxCheck(
            used=False,
            rows_compared=rows,
            max_abs_difference=worst,
            reason=f"{'predictions' if regression else 'probabilities'} differ by {worst:.3g} > {allowed:.3g} "
            "(the graph compares float32 inputs with float32 thresholds)",
        )
    return graph, OnnxCheck(used=True, rows_compared=rows, max_abs_difference=worst)
