"""The two ways a registered model is run: scikit-learn in-process, or ONNX Runtime.

Both expose ``predict_proba(batch) -> float64 [N, C]`` in the order of ``signature.classes``,
so everything above them (batching, labels, monitoring) is flavour-blind.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from modelmon.errors import RegistryError
from modelmon.registry.signature import FeatureBatch, Signature


class Predictor(Protocol):
    signature: Signature

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray: ...


class SklearnPredictor:
    """A fitted scikit-learn classifier or pipeline."""

    def __init__(self, estimator: Any, signature: Signature) -> None:
        if not hasattr(estimator, "predict_proba"):
            raise RegistryError(
                f"{type(estimator).__name__} has no predict_proba: modelmon serves probabilistic "
                "classifiers (wrap it in CalibratedClassifierCV, or use SVC(probability=True))"
            )
        self.estimator = estimator
        self.signature = signature

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        if self.signature.input_layout == "columns":
            X = batch.to_frame(self.signature)
        else:
            X = batch.to_matrix(self.signature)
        return np.asarray(self.estimator.predict_proba(X), dtype=np.float64)


_ONNX_NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(string)": np.object_,
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


class OnnxPredictor:
    """An ONNX graph: either one ``[N, F]`` input, or one input per feature."""

    def __init__(self, model_bytes: bytes, signature: Signature) -> None:
        self.signature = signature
        self.session = onnx_session(model_bytes)
        self.inputs = self.session.get_inputs()
        self.input_dtypes = [_ONNX_NUMPY_TYPES.get(i.type) for i in self.inputs]
        if any(dtype is None for dtype in self.input_dtypes):
            raise RegistryError(f"unsupported ONNX input types: {[i.type for i in self.inputs]}")
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
            feeds[name] = column.astype(dtype)
        return feeds

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        (output,) = self.session.run([self.proba_output], self._feeds(batch))
        if isinstance(output, list):  # ZipMap: a list of {class: probability}
            classes = self.signature.classes
            return np.array([[row[c] for c in classes] for row in output], dtype=np.float64)
        return np.asarray(output, dtype=np.float64)


def probability_output(session: Any) -> str:
    """The output holding class probabilities: a 2-D float tensor, else a ZipMap sequence."""
    outputs = session.get_outputs()
    for output in outputs:
        if output.type in ("tensor(float)", "tensor(double)") and len(output.shape or []) == 2:
            return output.name
    for output in outputs:
        if output.type.startswith("seq(map"):
            return output.name
    raise RegistryError(
        "the ONNX graph has no probability output (a [N, C] float tensor or a ZipMap); "
        f"its outputs are {[(o.name, o.type, o.shape) for o in outputs]}"
    )
