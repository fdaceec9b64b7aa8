"""Moved: the shared types live in ``modelmon.types``, signature inference in the runtimes."""

from modelmon.runtimes.features import dtype_of_series, feature_specs_from_frame
from modelmon.types import (
    MAX_LEVELS_IN_SIGNATURE,
    Dtype,
    FeatureBatch,
    FeatureSpec,
    NumericDtype,
    Signature,
    text_values,
)

__all__ = [
    "MAX_LEVELS_IN_SIGNATURE", "Dtype", "FeatureBatch", "FeatureSpec", "NumericDtype", "Signature",
    "dtype_of_series", "feature_specs_from_frame", "text_values",
]
