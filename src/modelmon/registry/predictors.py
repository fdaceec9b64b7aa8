"""Transitional names for the runtimes (``modelmon.runtimes``)."""

from modelmon.runtimes.base import Runtime as Predictor
from modelmon.runtimes.onnx import OnnxRuntime as OnnxPredictor
from modelmon.runtimes.sklearn import SklearnRuntime as SklearnPredictor

__all__ = ["OnnxPredictor", "Predictor", "SklearnPredictor"]
