"""The types every layer shares: the task, the signature, a batch of features, a model output.

This module imports nothing of modelmon's but its errors, so any package may import it (the
bottom of the layers in docs/architecture.md).

A batch keeps numeric features in one float64 matrix and categorical features in one
object matrix. That shape is what the request path needs: validation writes into it,
batching concatenates it with one call per matrix, and the monitoring code counts bins
column by column without ever building a DataFrame.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

from modelmon.errors import RegistryError

if TYPE_CHECKING:  # pandas is imported where used: a serving process rarely needs it
    import pandas as pd

NumericDtype = Literal["float64", "float32", "int64", "int32", "bool"]
Dtype = Literal["float64", "float32", "int64", "int32", "bool", "string"]
ClassLabel = str | int | bool

#: Categorical levels kept in the signature; beyond this a feature is still served, but
#: its metadata lists only the most frequent levels.
MAX_LEVELS_IN_SIGNATURE = 1000


class Task(StrEnum):
    """What a model predicts; it decides what monitoring counts (``monitoring.tasks``)."""

    BINARY = "binary"
    MULTICLASS = "multiclass"
    REGRESSION = "regression"

    @property
    def is_classification(self) -> bool:
        return self is not Task.REGRESSION

    @staticmethod
    def for_classes(classes: list[Any]) -> Task:
        return Task.BINARY if len(classes) == 2 else Task.MULTICLASS


class FeatureSpec(BaseModel):
    name: str
    dtype: Dtype
    categories: list[str] | None = Field(
        default=None, description="Known levels of a categorical feature, most frequent first."
    )
    nullable: bool = Field(
        default=False, description="Whether the model accepts a missing value (null / NaN)."
    )

    @property
    def is_categorical(self) -> bool:
        return self.dtype == "string"


class Signature(BaseModel):
    features: list[FeatureSpec]
    task: Task = Field(description="binary, multiclass or regression.")
    classes: list[ClassLabel] | None = Field(
        default=None, description="Output class labels, in column order (classification only)."
    )
    input_layout: Literal["columns", "matrix"] = Field(
        description="'columns': the model takes named columns (a DataFrame or one ONNX input per "
        "feature); 'matrix': one 2-D array in feature order."
    )

    @model_validator(mode="before")
    @classmethod
    def _task_from_classes(cls, data: Any) -> Any:
        """Cards written before tasks existed name only classes: they are classifiers."""
        if isinstance(data, dict) and data.get("task") is None and data.get("classes"):
            return {**data, "task": Task.for_classes(data["classes"])}
        return data

    @model_validator(mode="after")
    def _classes_fit_the_task(self) -> Signature:
        if self.task.is_classification:
            if not self.classes:
                raise ValueError(f"a {self.task} model needs its classes")
            if self.task is Task.BINARY and len(self.classes) != 2:
                raise ValueError(f"a binary model has 2 classes, got {len(self.classes)}")
        elif self.classes is not None:
            raise ValueError("a regression model has no classes")
        return self

    @property
    def class_labels(self) -> list[ClassLabel]:
        """The classes of a classifier (an empty list for regression)."""
        return list(self.classes or [])

    @cached_property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @cached_property
    def numeric_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if not f.is_categorical]

    @cached_property
    def categorical_features(self) -> list[FeatureSpec]:
        return [f for f in self.features if f.is_categorical]


@dataclass(slots=True)
class FeatureBatch:
    """Rows of features: ``numeric`` is float64 ``[N, n_numeric]`` (NaN = missing),
    ``categorical`` is object ``[N, n_categorical]`` holding ``str`` or ``None``."""

    numeric: np.ndarray
    categorical: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.numeric.shape[0])

    @staticmethod
    def concat(batches: list[FeatureBatch]) -> FeatureBatch:
        if len(batches) == 1:
            return batches[0]
        numeric = np.concatenate([b.numeric for b in batches])
        if not batches[0].categorical.shape[1]:  # no categorical features: nothing to join
            return FeatureBatch(numeric=numeric, categorical=np.empty((len(numeric), 0), dtype=object))
        return FeatureBatch(numeric=numeric, categorical=np.concatenate([b.categorical for b in batches]))

    def to_frame(self, signature: Signature) -> pd.DataFrame:
        """A DataFrame in signature order, with each numeric column in its trained dtype
        where that dtype can hold the values (ints with missing values stay float)."""
        columns: dict[str, np.ndarray] = {}
        num_i = cat_i = 0
        for spec in signature.features:
            if spec.is_categorical:
                columns[spec.name] = self.categorical[:, cat_i]
                cat_i += 1
            else:
                column = self.numeric[:, num_i]
                if spec.dtype != "float64" and not np.isnan(column).any():
                    column = column.astype(spec.dtype)
                columns[spec.name] = column
                num_i += 1
        import pandas as pd

        return pd.DataFrame(columns, copy=False)

    def to_matrix(self, signature: Signature) -> np.ndarray:
        """One 2-D array in signature order: float64 when all features are numeric."""
        if not signature.categorical_features:
            return self.numeric
        return self.to_frame(signature).to_numpy(dtype=object)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, signature: Signature) -> FeatureBatch:
        """Trusted, offline data (reference, validation) as a batch; raises on missing columns."""
        import pandas as pd

        missing = [name for name in signature.feature_names if name not in frame.columns]
        if missing:
            raise RegistryError(f"data has no column for feature(s) {missing}")
        n = len(frame)
        numeric = np.empty((n, len(signature.numeric_features)), dtype=np.float64)
        for i, spec in enumerate(signature.numeric_features):
            numeric[:, i] = pd.to_numeric(frame[spec.name], errors="raise").to_numpy(
                dtype=np.float64, na_value=np.nan
            )
        categorical = np.empty((n, len(signature.categorical_features)), dtype=object)
        for j, spec in enumerate(signature.categorical_features):
            categorical[:, j] = text_values(frame[spec.name])
        return cls(numeric=numeric, categorical=categorical)


def text_values(column: pd.Series) -> np.ndarray:
    """A column as categories: an object array of ``str``, ``None`` where missing.

    Whole numbers in a float column are written without a decimal point: a column of codes
    with a missing value is read as floats, and its category is ``"19"``, not ``"19.0"``."""
    import pandas as pd

    if isinstance(column.dtype, pd.StringDtype):  # already text
        return _none_where(column.isna().to_numpy(), column.to_numpy(dtype=object))
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        present = ~np.isnan(values)
        kept = values[present]
        if np.all(np.abs(kept) < 2**53) and np.array_equal(kept, np.round(kept)):
            out = np.full(len(values), None, dtype=object)
            out[present] = kept.astype(np.int64).astype(str).astype(object)
            return out
    return _none_where(column.isna().to_numpy(), column.astype(object).astype(str).to_numpy(dtype=object))


def _none_where(missing: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = values.astype(object)
    out[missing] = None
    return out


@dataclass(slots=True)
class ModelOutput:
    """A model's answers for N rows, in the form every runtime returns.

    ``predicted`` holds one value per row: for a classifier the index of the predicted class
    in ``Signature.classes`` (int64), for a regressor the predicted number (float64).
    ``probabilities`` is a classifier's ``[N, C]`` float64 matrix in the order of the
    classes, and None for a regressor. The batcher, prediction ids and the prediction log
    carry outputs without interpreting them; the task (``monitoring.tasks``) and the codecs
    read them."""

    predicted: np.ndarray
    probabilities: np.ndarray | None = None

    @classmethod
    def from_probabilities(cls, probabilities: np.ndarray) -> ModelOutput:
        proba = np.asarray(probabilities, dtype=np.float64)
        return cls(predicted=proba.argmax(axis=1), probabilities=proba)

    @classmethod
    def from_values(cls, values: np.ndarray) -> ModelOutput:
        return cls(predicted=np.asarray(values, dtype=np.float64).reshape(-1))

    @property
    def n_rows(self) -> int:
        return int(self.predicted.shape[0])

    def rows(self, start: int, stop: int) -> ModelOutput:
        """Rows ``start:stop`` (views, not copies)."""
        proba = self.probabilities
        return ModelOutput(self.predicted[start:stop], None if proba is None else proba[start:stop])

    @staticmethod
    def concat(outputs: list[ModelOutput]) -> ModelOutput:
        if len(outputs) == 1:
            return outputs[0]
        probabilities = [o.probabilities for o in outputs]
        return ModelOutput(
            predicted=np.concatenate([o.predicted for o in outputs]),
            probabilities=None if probabilities[0] is None else np.concatenate(probabilities),  # type: ignore[arg-type]  # one task per version: all or none have them
        )
