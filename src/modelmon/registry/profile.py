"""Transitional: the reference profile moves here from monitoring."""

from modelmon.monitoring.metrics import CONFIDENCE_BUCKETS
from modelmon.monitoring.profile import (
    ProfileSettings,
    ReferenceProfile,
    build_profile,
    prediction_profile,
    save_sample,
)

__all__ = ["CONFIDENCE_BUCKETS", "ProfileSettings", "ReferenceProfile", "build_profile", "prediction_profile", "save_sample"]
