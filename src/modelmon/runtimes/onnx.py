"""ONNX graphs, run by ONNX Runtime: registered as ``.onnx`` files, and the fast serving form
other runtimes convert to (``Runtime.to_onnx``).

A graph takes either one ``[N, F]`` input or one input per feature; a classifier answers
with a ``[N, C]`` probability tensor or a ZipMap, a regressor with one float tensor of one
value per row (``[N]`` or ``[N, 1]``). A graph is a regressor when it records no class
labels and its float output has one value per row. Loading a graph runs no Python code.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelmon.errors import InvalidInputError, RegistryError
from modelmon.runtimes.base import (
    ArtifactInfo,
    ReadOptions,
    Runtime,
    TextColumns,
    artifact_for,
    register_runtime,
)
from modelmon.runtimes.features import feature_columns, feature_specs_from_frame
from modelmon.types import FeatureBatch, FeatureSpec, ModelOutput, Signature, Task

if TYPE_CHECKING:
    import pandas as pd

SUFFIX = ".onnx"

_ONNX_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
}

#: Signature dtypes of per-feature inputs, when no reference data says more.
_SIGNATURE_DTYPES: dict[str, Any] = {
    "tensor(string)": "string",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(double)": "float64",
}

_CLASSIFIER_OPS = {
    "LinearClassifier",
    "TreeEnsembleClassifier",
    "SVMClassifier",
    "ZipMap",
    "TreeEnsemble",
}


def onnx_session(model_bytes: bytes) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    # One replica is one process on a shared machine: a small model gains nothing from
    # more than one intra-op thread and loses a lot to thread wake-ups.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def onnx_class_labels(model_bytes: bytes) -> list[str | int] | None:
    """Class labels stored in a converted classifier's nodes, when the graph has them."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    for node in model.graph.node:
        if node.op_type not in _CLASSIFIER_OPS:
            continue
        for attribute in node.attribute:
            if attribute.name == "classlabels_strings" and attribute.strings:
                return [s.decode() for s in attribute.strings]
            if attribute.name in ("classlabels_int64s", "classlabels_ints") and attribute.ints:
                return [int(i) for i in attribute.ints]
    return None


def probability_output(session: Any) -> str:
    """The output holding class probabilities: a 2-D float tensor, else a ZipMap sequence."""
    outputs = session.get_outputs()
    for output in outputs:
        if output.type in ("tensor(float)", "tensor(double)") and len(output.shape or []) == 2:
            return str(output.name)
    for output in outputs:
        if output.type.startswith("seq(map"):
            return str(output.name)
    raise RegistryError(
        "the ONNX graph has no probability output (a [N, C] float tensor or a ZipMap); "
        f"its outputs are {[(o.name, o.type, o.shape) for o in outputs]}"
    )


def value_output(session: Any) -> str | None:
    """A regressor's output: the one float tensor whose shape is ``[N]`` or ``[N, 1]``
    (a symbolic width counts), or None."""
    for output in session.get_outputs():
        shape = output.shape or []
        one_wide = len(shape) == 1 or (len(shape) == 2 and (shape[1] == 1 or not isinstance(shape[1], int)))
        if output.type in ("tensor(float)", "tensor(double)") and one_wide:
            return str(output.name)
    return None


@register_runtime
class OnnxRuntime(Runtime):
    name = "onnx"
    suffixes = (SUFFIX,)

    def __init__(self, model: bytes, signature: Signature) -> None:
        super().__init__(model, signature)
        self.session = onnx_session(model)
        self.inputs = self.session.get_inputs()
        self.input_dtypes = [_ONNX_NUMPY_TYPES.get(i.type) for i in self.inputs]
        if any(dtype is None for dtype in self.input_dtypes):
            raise RegistryError(f"unsupported ONNX input types: {[i.type for i in self.inputs]}")
        self.regression = signature.task is Task.REGRESSION
        if self.regression:
            found = value_output(self.session)
            if found is None:
                raise RegistryError(
                    "the ONNX graph has no output of one value per row ([N] or [N, 1] float) to serve "
                    f"as a regressor; its outputs are {[(o.name, o.type, o.shape) for o in self.session.get_outputs()]}"
                )
            self.value_output = found
        else:
            self.proba_output = probability_output(self.session)
        by_name = {i.name: k for k, i in enumerate(self.inputs)}
        # The graph decides how it is fed: one input per feature, or one [N, F] matrix.
        self.matrix_input = not all(n in by_name for n in signature.feature_names)
        if self.matrix_input and len(self.inputs) != 1:
            missing = [n for n in signature.feature_names if n not in by_name]
            raise RegistryError(f"the ONNX graph has no input for feature(s) {missing}")
        if not self.matrix_input:
            positions = {
                f.name: (False, i) for i, f in enumerate(signature.numeric_features)
            } | {f.name: (True, j) for j, f in enumerate(signature.categorical_features)}
            self._column_plan = [
                (i.name, self.input_dtypes[by_name[i.name]], *positions[i.name])
                for i in self.inputs
            ]

    def _feeds(self, batch: FeatureBatch) -> dict[str, np.ndarray]:
        if self.matrix_input:
            return {self.inputs[0].name: batch.to_matrix(self.signature).astype(self.input_dtypes[0])}
        feeds = {}
        for name, dtype, is_categorical, index in self._column_plan:
            source = batch.categorical if is_categorical else batch.numeric
            column = source[:, index : index + 1]
            if is_categorical:
                column = np.where(column == None, "", column)  # noqa: E711 - elementwise
            elif dtype not in (np.float32, np.float64):
                # An integer or boolean input has no missing value: NaN would be cast to garbage.
                if np.isnan(column).any():
                    raise InvalidInputError(f"the graph's {name!r} input cannot take a missing value", reason="missing_value")
                # Nor a value beyond its type: the cast would wrap 1e30 to -2**63 with only a
                # RuntimeWarning. The validator refuses these for an int feature (a 400); this
                # guards a graph whose input type differs from its feature's.
                if dtype is not np.bool_ and not _fits(column, dtype):
                    raise InvalidInputError(f"the graph's {name!r} input ({np.dtype(dtype).name}) cannot take "
                                            f"the value(s) sent: outside its range or not whole numbers", reason="invalid_value")
            feeds[name] = column.astype(dtype)
        return feeds

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        (output,) = self.session.run([self.proba_output], self._feeds(batch))
        if isinstance(output, list):  # ZipMap: a list of {class: probability}
            classes = self.signature.class_labels
            return np.array([[row[c] for c in classes] for row in output], dtype=np.float64)
        return np.asarray(output, dtype=np.float64)

    def predict_values(self, batch: FeatureBatch) -> np.ndarray:
        (output,) = self.session.run([self.value_output], self._feeds(batch))
        return np.asarray(output, dtype=np.float64).reshape(-1)

    def predict(self, batch: FeatureBatch) -> ModelOutput:
        if self.regression:
            return ModelOutput.from_values(self.predict_values(batch))
        return ModelOutput.from_probabilities(self.predict_proba(batch))

    # -- registration ------------------------------------------------------------------

    @classmethod
    def recognises(cls, model: Any) -> bool:
        """Serialized graph bytes, or an ``onnx.ModelProto``."""
        return isinstance(model, bytes) or type(model).__name__ == "ModelProto"

    @classmethod
    def as_bytes(cls, model: Any) -> bytes:
        return model if isinstance(model, bytes) else bytes(model.SerializeToString())

    @classmethod
    def wrap(cls, model: Any, signature: Signature) -> OnnxRuntime:
        return cls(cls.as_bytes(model), signature)

    @classmethod
    def read(cls, path: Path, options: ReadOptions) -> bytes:
        return path.read_bytes()

    @classmethod
    def text_columns(cls, model: Any) -> TextColumns:
        """The inputs that take strings (a graph with one input per feature)."""
        inputs = onnx_session(cls.as_bytes(model)).get_inputs()
        return {i.name: None for i in inputs if i.type == "tensor(string)"}

    @classmethod
    def infer_signature(
        cls, model: Any, reference: pd.DataFrame | None, target: str | None, text_columns: TextColumns
    ) -> Signature:
        model = cls.as_bytes(model)
        session = onnx_session(model)
        inputs = session.get_inputs()
        specs: list[FeatureSpec]
        if len(inputs) == 1 and len(inputs[0].shape or []) == 2 and inputs[0].type != "tensor(string)":
            width = inputs[0].shape[1]
            if reference is not None:
                names = feature_columns(reference, target)
            elif isinstance(width, int):
                names = [f"x{i}" for i in range(width)]
            else:
                raise RegistryError(
                    "the ONNX input has no fixed width: pass reference data to name the features"
                )
            if isinstance(width, int) and len(names) != width:
                raise RegistryError(
                    f"the ONNX input takes {width} features but the reference data has {len(names)}"
                )
            if text_columns:
                raise RegistryError(
                    f"the ONNX graph takes one numeric matrix, so it cannot take text columns "
                    f"{sorted(text_columns)}"
                )
            layout = "matrix"
            specs = (
                feature_specs_from_frame(reference, names)
                if reference is not None
                else [FeatureSpec(name=n, dtype="float64") for n in names]
            )
        else:
            layout = "columns"
            if reference is not None:
                specs = feature_specs_from_frame(reference, [i.name for i in inputs], text_columns)
            else:
                specs = [FeatureSpec(name=i.name, dtype=_SIGNATURE_DTYPES.get(i.type, "float64")) for i in inputs]
        classes: list[Any] | None = onnx_class_labels(model)
        if classes is None and _answers_one_value(model, specs, layout):
            return Signature(features=specs, task=Task.REGRESSION, input_layout=layout)
        probability_output(session)  # raises a clear error when there is none
        if classes is None:  # a graph without labels: its probability columns are the classes
            probe = Signature(features=specs, task=Task.BINARY, classes=[0, 1], input_layout=layout)
            width = cls(model, probe).predict_proba(_probe_batch(probe)).shape[1]
            classes = list(range(width))
        if len(classes) < 2:
            raise RegistryError(
                f"the ONNX graph's output has {len(classes)} column: a classifier needs a "
                "probability per class"
            )
        return Signature(features=specs, task=Task.for_classes(classes), classes=classes, input_layout=layout)

    @classmethod
    def save(cls, model: Any, source: Path | None, directory: Path) -> ArtifactInfo:
        path = directory / f"model{SUFFIX}"
        path.write_bytes(cls.as_bytes(model))
        return artifact_for(path, "onnx")

    @classmethod
    def load(cls, path: Path, artifact: ArtifactInfo, signature: Signature) -> OnnxRuntime:
        if artifact.format != "onnx":
            raise RegistryError(f"the onnx runtime cannot load a {artifact.format!r} artifact")
        return cls(path.read_bytes(), signature)


def _probe_batch(signature: Signature) -> FeatureBatch:
    return FeatureBatch(
        numeric=np.zeros((1, len(signature.numeric_features))),
        categorical=np.full((1, len(signature.categorical_features)), "", dtype=object),
    )


def _answers_one_value(model: bytes, specs: list[FeatureSpec], layout: Any) -> bool:
    """Whether a graph without class labels is a regressor: it has a float output of one
    value per row, and answers one value for one row."""
    probe = Signature(features=specs, task=Task.REGRESSION, input_layout=layout)
    try:
        runtime = OnnxRuntime(model, probe)
        return runtime.predict_values(_probe_batch(probe)).shape == (1,)
    except Exception:  # no such output, or the graph does not run on zeros: not decided here
        return False


def _fits(column: np.ndarray, dtype: Any) -> bool:
    """Whether float values cast to the integer dtype unchanged: whole and in range (the
    float bounds are powers of two, exact)."""
    info = np.iinfo(dtype)
    return bool(float(info.min) <= column.min() and column.max() < float(info.max) + 1
                and not np.count_nonzero(np.fmod(column, 1.0)))
