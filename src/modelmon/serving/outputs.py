"""How a model's answers are written in responses, decided by its task, in one place.

A V2 response carries one tensor per output; a records response one object per row; the
model metadata describes both. Each task has one class here, registered for the tasks it
serves; the request handlers ask the served version's instance and never the task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from modelmon.errors import RegistryError
from modelmon.serving.codecs import TensorOutput
from modelmon.types import ModelOutput, Signature, Task

PREDICTION_ID = "prediction_id"


class TaskOutputs(ABC):
    tasks: ClassVar[tuple[Task, ...]]
    #: The V2 output names a client may ask for.
    names: ClassVar[tuple[str, ...]]

    def __init__(self, signature: Signature) -> None:
        self.signature = signature

    @abstractmethod
    def tensors(self, output: ModelOutput, ids: list[str]) -> list[TensorOutput]:
        """The V2 output tensors of a request's rows."""

    @abstractmethod
    def records(self, output: ModelOutput, ids: list[str]) -> list[dict[str, Any]]:
        """One JSON object per row, for the records endpoint."""

    @abstractmethod
    def metadata(self) -> list[dict[str, Any]]:
        """The outputs, as V2 model metadata describes them."""


_TASKS: dict[Task, type[TaskOutputs]] = {}


def register_outputs(cls: type[TaskOutputs]) -> type[TaskOutputs]:
    for task in cls.tasks:
        _TASKS[task] = cls
    return cls


def outputs_for(signature: Signature) -> TaskOutputs:
    try:
        return _TASKS[signature.task](signature)
    except KeyError:
        raise RegistryError(f"modelmon does not serve {signature.task} models yet") from None


def _v2_datatype(values: np.ndarray) -> str:
    if values.dtype.kind == "b":
        return "BOOL"
    return "BYTES" if values.dtype.kind in "OUS" else "INT64"


@register_outputs
class ClassificationOutputs(TaskOutputs):
    """``label`` (the predicted class), ``probabilities`` ([N, C] in the order of the
    classes) and ``prediction_id`` (to send the true label back with)."""

    tasks = (Task.BINARY, Task.MULTICLASS)
    names = ("label", "probabilities", PREDICTION_ID)

    def __init__(self, signature: Signature) -> None:
        super().__init__(signature)
        self.classes = np.asarray(signature.class_labels)
        self.class_names = [str(c) for c in self.classes.tolist()]
        self.label_datatype = _v2_datatype(self.classes)

    def labels(self, output: ModelOutput) -> np.ndarray:
        return self.classes[output.predicted]

    @staticmethod
    def _probabilities(output: ModelOutput) -> np.ndarray:
        if output.probabilities is None:
            raise TypeError("a classifier's output needs probabilities")
        return output.probabilities

    def tensors(self, output: ModelOutput, ids: list[str]) -> list[TensorOutput]:
        return [
            TensorOutput("label", self.label_datatype, self.labels(output)),
            TensorOutput("probabilities", "FP64", self._probabilities(output)),
            TensorOutput(PREDICTION_ID, "BYTES", np.array(ids, dtype=object)),
        ]

    def records(self, output: ModelOutput, ids: list[str]) -> list[dict[str, Any]]:
        names = self.class_names
        return [
            {"id": pid, "label": label, "probabilities": dict(zip(names, row, strict=True))}
            for pid, label, row in zip(ids, self.labels(output).tolist(), self._probabilities(output).tolist(), strict=True)
        ]

    def metadata(self) -> list[dict[str, Any]]:
        return [
            {"name": "label", "datatype": self.label_datatype, "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(self.classes)],
             "parameters": {"classes": self.classes.tolist()}},
            {"name": PREDICTION_ID, "datatype": "BYTES", "shape": [-1]},
        ]


@register_outputs
class RegressionOutputs(TaskOutputs):
    """``prediction`` (the predicted value, FP64) and ``prediction_id`` (to send the true
    value back with)."""

    tasks = (Task.REGRESSION,)
    names = ("prediction", PREDICTION_ID)

    def tensors(self, output: ModelOutput, ids: list[str]) -> list[TensorOutput]:
        return [
            TensorOutput("prediction", "FP64", np.asarray(output.predicted, dtype=np.float64)),
            TensorOutput(PREDICTION_ID, "BYTES", np.array(ids, dtype=object)),
        ]

    def records(self, output: ModelOutput, ids: list[str]) -> list[dict[str, Any]]:
        return [
            {"id": pid, "prediction": value}
            for pid, value in zip(ids, np.asarray(output.predicted, dtype=np.float64).tolist(), strict=True)
        ]

    def metadata(self) -> list[dict[str, Any]]:
        return [
            {"name": "prediction", "datatype": "FP64", "shape": [-1]},
            {"name": PREDICTION_ID, "datatype": "BYTES", "shape": [-1]},
        ]
