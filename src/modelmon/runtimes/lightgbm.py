"""LightGBM classifiers and regressors: model files in LightGBM's text format (``.txt``, as
``Booster.save_model`` writes them), and ``LGBMClassifier`` / ``Booster`` objects (saved in
that format). Never pickle.

The model file is the signature: its feature names (``Column_0``, ``Column_1``, ... for a
model trained on an unnamed array, whose names then come from the reference data), its
categorical features (``[categorical_feature: ...]`` and the ``feature_infos`` line) and,
for a model trained on pandas ``category`` columns, their categories in code order
(``pandas_categorical``). Those features are served as text and mapped to the codes as
LightGBM maps a DataFrame (an unknown level is a missing value); categorical features
without recorded categories take their integer codes, as numbers. A model mixing pandas
categories with integer-coded categorical features is refused: the file does not say which
is which.

The ``binary`` and ``multiclass`` objectives are served (LightGBM predicts their
probabilities), and the regression objectives (one value per row, the objective's transform
applied, as ``predict`` does); others (ranking, ``multiclassova``, whose per-class
probabilities do not sum to one, custom objectives) are refused. A model trained with early
stopping answers with its best iteration, as ``predict`` does, and only those trees are
saved.

At registration the model is converted to ONNX (onnxmltools) and the graph is kept only
when its probabilities agree within 1e-5: LightGBM compares float64 inputs with float64
thresholds, the graph float32 with float32, so a feature whose values lie closer to a
threshold than float32 resolves (large magnitudes, say) makes the two disagree, and the
model is then served by LightGBM. Models with categorical features are served natively.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Mapping
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
from modelmon.runtimes.features import python_label
from modelmon.runtimes.xgboost import (
    ONNX_OPSET,
    FeatureMatrix,
    TreeInputs,
    categorical_refusal,
    class_probabilities,
    convert_trees,
    framework_message,
    level_text,
    onnx_agreement,
    tree_signature,
)
from modelmon.types import FeatureBatch, ModelOutput, Signature, Task

if TYPE_CHECKING:
    import pandas as pd

SUFFIX = ".txt"
FORMAT = "lightgbm-text"
#: Objectives whose prediction is class probabilities.
OBJECTIVES = ("binary", "multiclass")
#: Objectives whose prediction is one value per row (a regressor).
_REGRESSION = (
    "regression", "regression_l1", "huber", "fair", "poisson", "quantile", "mape", "gamma",
    "tweedie", "cross_entropy", "cross_entropy_lambda",
)
#: Names LightGBM gives the features of a model trained on an unnamed array.
_UNNAMED = "Column_{}"


@register_runtime
class LightGBMRuntime(Runtime):
    """A LightGBM booster, predicting class probabilities from one float matrix."""

    name = "lightgbm"
    suffixes = (SUFFIX,)
    extra = "lightgbm"

    def __init__(self, model: Any, signature: Signature, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(booster_of(model), signature)
        options = options or model_options(model)
        self.matrix = FeatureMatrix(signature, options.get("categories", {}))

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        # One thread: a replica is one process on a shared machine, as ONNX Runtime is run.
        return class_probabilities(self.model.predict(self.matrix(batch), num_threads=1), "probability")

    def predict_values(self, batch: FeatureBatch) -> np.ndarray:
        """A regressor's predictions."""
        return np.asarray(self.model.predict(self.matrix(batch), num_threads=1), dtype=np.float64).reshape(-1)

    def predict(self, batch: FeatureBatch) -> ModelOutput:
        if self.signature.task is Task.REGRESSION:
            return ModelOutput.from_values(self.predict_values(batch))
        return ModelOutput.from_probabilities(self.predict_proba(batch))

    # -- registration ------------------------------------------------------------------

    @classmethod
    def recognises(cls, model: Any) -> bool:
        """A ``Booster`` or a model of LightGBM's scikit-learn API (by type: LightGBM is
        imported already whenever such an object exists)."""
        lgb = sys.modules.get("lightgbm")
        if lgb is None or not hasattr(lgb, "Booster"):
            return False
        return isinstance(model, (lgb.Booster, lgb.LGBMModel))

    @classmethod
    def reads(cls, path: Path) -> bool:
        """A ``.txt`` file that holds a LightGBM model (its first line is ``tree``), not any
        text file."""
        if path.suffix.lower() != SUFFIX or not path.is_file():
            return False
        with path.open("rb") as f:
            return f.readline(64).strip() == b"tree"

    @classmethod
    def read(cls, path: Path, options: ReadOptions) -> Any:
        """The booster in the file: LightGBM's text format is data, loading it runs no code."""
        lgb = cls.require("lightgbm")
        try:
            return lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise RegistryError(f"LightGBM cannot load {path.name}: {framework_message(exc)}") from None

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
        if options["objective"] in _REGRESSION:
            return tree_signature(model_inputs(model), None, reference, target, text_columns)
        if isinstance(model, cls.require("lightgbm").LGBMModel):
            classes = [python_label(c) for c in model.classes_]
        else:
            classes = list(range(options["n_classes"]))
        if len(classes) != options["n_classes"]:
            raise RegistryError(f"the model has {len(classes)} classes but its booster predicts {options['n_classes']}")
        return tree_signature(model_inputs(model), classes, reference, target, text_columns)

    @classmethod
    def wrap(cls, model: Any, signature: Signature) -> LightGBMRuntime:
        return cls(model, signature, model_options(model))

    @classmethod
    def save(cls, model: Any, source: Path | None, directory: Path) -> ArtifactInfo:
        """The user's file as it is, or the booster in LightGBM's text format (its best
        iteration, when trained with early stopping)."""
        path = directory / f"model{SUFFIX}"
        if source is not None:
            shutil.copyfile(source, path)
        else:
            booster_of(model).save_model(str(path))
        return artifact_for(path, FORMAT, options=model_options(model))

    @classmethod
    def load(cls, path: Path, artifact: ArtifactInfo, signature: Signature) -> LightGBMRuntime:
        if artifact.format != FORMAT:
            raise RegistryError(
                f"the lightgbm runtime loads LightGBM text model files only, not a {artifact.format!r} artifact"
            )
        return cls(cls.read(path, ReadOptions()), signature, artifact.options or None)

    @classmethod
    def to_onnx(
        cls, model: Any, signature: Signature, check_data: FeatureBatch
    ) -> tuple[bytes | None, OnnxCheck]:
        if check_data.n_rows == 0:
            return None, OnnxCheck(used=False, reason="no reference or validation data to verify on")
        if signature.categorical_features:
            return None, categorical_refusal(signature, "LightGBM")
        lgb = cls.require("lightgbm")
        # The trees the model answers with: the text holds the best iteration only.
        booster = lgb.Booster(model_str=booster_of(model).model_to_string())

        def convert(onnxmltools: Any, initial_types: list[tuple[str, Any]]) -> Any:
            return onnxmltools.convert_lightgbm(
                booster, initial_types=initial_types, zipmap=False, target_opset=ONNX_OPSET
            )

        graph = convert_trees(convert, len(signature.features))
        if isinstance(graph, OnnxCheck):
            return None, graph
        native = cls.wrap(model, signature)
        answers = native.predict_values if signature.task is Task.REGRESSION else native.predict_proba
        return onnx_agreement(answers, graph, signature, check_data)


# -- What a LightGBM model records -------------------------------------------------------


def booster_of(model: Any) -> Any:
    """The booster of a scikit-learn API model, or the booster itself."""
    if hasattr(model, "fit"):  # LGBMModel; a Booster has no fit
        try:
            return model.booster_
        except Exception as exc:  # LGBMNotFittedError
            raise RegistryError(f"{type(model).__name__} is not fitted: register a trained model ({exc})") from None
    return model


def model_text(model: Any) -> tuple[dict[str, str], dict[str, str]]:
    """The model file's header (``key=value`` lines before the trees) and its parameters
    section (``[key: value]`` lines)."""
    text = booster_of(model).model_to_string()
    head, _, rest = text.partition("\nTree=")
    header = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    parameters: dict[str, str] = {}
    _, found, section = rest.partition("\nparameters:\n")
    if found:
        for line in section.split("\nend of parameters", 1)[0].splitlines():
            if line.startswith("[") and line.endswith("]") and ": " in line:
                key, value = line[1:-1].split(": ", 1)
                parameters[key] = value
    return header, parameters


def model_inputs(model: Any) -> TreeInputs:
    booster = booster_of(model)
    header, parameters = model_text(booster)
    names = header.get("feature_names", "").split()
    n_features = int(header.get("max_feature_idx", len(names) - 1)) + 1
    infos = header.get("feature_infos", "").split()
    categorical = {int(i) for i in parameters.get("categorical_feature", "").split(",") if i.strip().isdigit()}
    categorical |= {i for i, info in enumerate(infos) if info != "none" and not info.startswith("[")}
    levels: dict[int, list[str] | None] = dict.fromkeys(sorted(categorical))
    pandas_categorical = booster.pandas_categorical or []
    if pandas_categorical:
        if len(pandas_categorical) != len(categorical):
            raise RegistryError(
                f"the model has {len(categorical)} categorical features but records the categories of "
                f"{len(pandas_categorical)} pandas columns: modelmon cannot tell which features take "
                "text and which take integer codes. Train it with all categorical features as pandas "
                "'category' columns, or all as integer codes"
            )
        for i, values in zip(sorted(categorical), pandas_categorical, strict=True):
            levels[i] = [level_text(v) for v in values]
    unnamed = names == [_UNNAMED.format(i) for i in range(len(names))]
    return TreeInputs(names=None if unnamed else names, n_features=n_features, categorical=levels)


def model_options(model: Any) -> dict[str, Any]:
    """What serving needs to know about the model: its objective, the number of classes,
    the categories of text features in code order."""
    header, _ = model_text(model)
    objective = header.get("objective", "").split(" ", 1)[0]
    if objective not in OBJECTIVES and objective not in _REGRESSION:
        raise RegistryError(objective_refusal(objective))
    n_classes = 2 if objective == "binary" else 0 if objective in _REGRESSION else int(header.get("num_class", "0"))
    inputs = model_inputs(model)
    categories = {
        inputs.names[i]: list(levels)
        for i, levels in inputs.categorical.items()
        if levels is not None and inputs.names is not None
    }
    return {"objective": objective, "n_classes": n_classes, "categories": categories}


def objective_refusal(objective: str) -> str:
    if objective in ("lambdarank", "rank_xendcg"):
        return f"the model's objective {objective!r} ranks: modelmon serves classifiers"
    if objective == "multiclassova":
        return (
            "the model's objective 'multiclassova' gives one-vs-all scores that do not sum to one: "
            "train it with objective='multiclass'"
        )
    return (
        f"the model's objective {objective or 'custom'!r} gives no class probabilities: modelmon "
        f"serves LightGBM classifiers trained with {' or '.join(OBJECTIVES)}"
    )
