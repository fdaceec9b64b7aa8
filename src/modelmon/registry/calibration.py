"""Transitional: calibration moves here from quality."""

from modelmon.quality.calibration import Calibration, apply, calibrate, expected_confusion

__all__ = ["Calibration", "apply", "calibrate", "expected_confusion"]
