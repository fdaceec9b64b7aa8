"""A model's input signature, and the columnar batch every layer passes around.

A batch keeps numeric features in one float64 matrix and categorical features in one
object matrix. That shape is what the request path needs: validation writes into it,
batching concatenates it with one call per matrix, and the monitoring code counts bins
column by column without ever building a DataFrame.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field

from modelmon.errors import RegistryError

if TYPE_CHECKING:  # pandas is imported where used: a serving process rarely needs it
    import pandas as pd

NumericDtype = Literal["float64", "float32", "int64", "int32", "bool"]
Dtype = Literal["float64", "float32", "int64", "int32", "bool", "string"]

#: Categorical levels kept in the signature; beyond this a feature is still served, but
#: its metadata lists only the most frequent levels.
MAX_LEVELS_IN_SIGNATURE = 1000


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
    classes: list[str | int | bool] = Field(description="Output class labels, in column order.")
    input_layout: Literal["columns", "matrix"] = Field(
        description="'columns': the model takes named columns (a DataFrame or one ONNX input per "
        "feature); 'matrix': one 2-D array in feature order."
    )

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
        return self.numeric.shape[0]

    @staticmethod
    def concat(batches: list[FeatureBatch]) -> FeatureBatch:
        if len(batches) == 1:
            return batches[0]
        return FeatureBatch(
            numeric=np.concatenate([b.numeric for b in batches]),
            categorical=np.concatenate([b.categorical for b in batches]),
        )

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

    if isinstance(column.dtype, pd.StringDtype):  # already text: one conversion
        return column.to_numpy(dtype=object, na_value=None)
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        present = ~np.isnan(values)
        kept = values[present]
        if np.all(np.abs(kept) < 2**53) and np.array_equal(kept, np.round(kept)):
            out = np.full(len(values), None, dtype=object)
            out[present] = kept.astype(np.int64).astype(str).astype(object)
            return out
    column = column.astype(object)
    return np.where(column.isna(), None, column.astype(str))


def dtype_of_series(series: pd.Series) -> Dtype:
    """The signature dtype of a training column: numbers keep their width, anything else is
    a categorical string feature."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int32" if series.dtype.itemsize <= 4 else "int64"
    if pd.api.types.is_float_dtype(series):
        return "float32" if series.dtype == np.float32 else "float64"
    return "string"


def feature_specs_from_frame(
    frame: pd.DataFrame, names: list[str], text: Collection[str] = ()
) -> list[FeatureSpec]:
    """Feature specs typed by the training data; the features in ``text`` are categorical
    whatever their values look like (the model, or the user, said so)."""
    import pandas as pd

    specs = []
    for name in names:
        if name not in frame.columns:
            raise RegistryError(
                f"the model expects feature {name!r} but the reference data has no such column"
            )
        column = frame[name]
        dtype = "string" if name in text else dtype_of_series(column)
        categories = None
        if dtype == "string":
            counts = pd.Series(text_values(column)).dropna().value_counts(sort=True)
            categories = [str(c) for c in counts.index[:MAX_LEVELS_IN_SIGNATURE]]
        specs.append(
            FeatureSpec(
                name=name, dtype=dtype, categories=categories, nullable=bool(column.isna().any())
            )
        )
    return specs
