"""Describing a model's inputs from its training data, for the runtimes' ``infer_signature``."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import numpy as np

from modelmon.errors import RegistryError
from modelmon.runtimes.base import TextColumns
from modelmon.types import MAX_LEVELS_IN_SIGNATURE, ClassLabel, Dtype, FeatureSpec, text_values

if TYPE_CHECKING:
    import pandas as pd


def feature_columns(frame: pd.DataFrame, target: str | None) -> list[str]:
    """The data's columns besides the target, as feature names."""
    return [str(c) for c in frame.columns if c != target]


def matrix_feature_names(reference: pd.DataFrame | None, target: str | None, width: object, what: str) -> list[str]:
    """The feature names of a model's one ``[N, F]`` input (``what`` names that input in
    errors): the reference data's columns besides the target, which must be as many as a
    fixed width, else ``x0 .. x{F-1}``."""
    if reference is not None:
        names = feature_columns(reference, target)
    elif isinstance(width, int):
        names = [f"x{i}" for i in range(width)]
    else:
        raise RegistryError(f"{what} has no fixed width: pass reference data to name the features")
    if isinstance(width, int) and len(names) != width:
        raise RegistryError(
            f"{what} takes {width} features but the reference data has {len(names)} "
            f"columns besides the target {target!r}: {names[:10]}"
        )
    return names


def python_label(value: Any) -> ClassLabel:
    """A class label as JSON can hold it: numpy scalars unwrapped, whole floats as ints."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return str(value)


def dtype_of_series(series: pd.Series) -> Dtype:
    """The signature dtype of a training column: numbers keep their width, anything else is
    a categorical string feature."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int32" if getattr(series.dtype, "itemsize", 8) <= 4 else "int64"
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


def spec_without_data(name: str, text_columns: TextColumns) -> FeatureSpec:
    """A feature known by name only: text if the model says so, else a number."""
    if name not in text_columns:
        return FeatureSpec(name=name, dtype="float64")
    return FeatureSpec(name=name, dtype="string", categories=text_columns[name])


def regression_target(reference: pd.DataFrame | None, target: str | None) -> bool:
    """Whether a one-output model's target is a regressor's: numbers that are not class
    labels (some not whole, or more than two distinct values). Networks (torch, Keras) do
    not record whether their one output is a logit or a value; their target tells."""
    if reference is None or target is None or target not in reference.columns:
        return False
    column = reference[target].dropna()
    if column.dtype.kind not in "iuf":
        return False
    values = column.to_numpy(dtype=np.float64)
    return not np.array_equal(values, np.round(values)) or len(np.unique(values)) > 2
