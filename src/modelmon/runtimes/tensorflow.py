"""TensorFlow SavedModel directories: classifiers and regressors served through their
serving signature.

A SavedModel (``tf.saved_model.save``, Keras' ``model.export``, TF Serving's format) is a
directory holding ``saved_model.pb``; ``modelmon register --model DIR`` and
``register_model(DIR)`` read it, and ``register_model`` also takes the object
``tf.saved_model.load`` returns (saved again as a SavedModel). TensorFlow is imported on
first use (``pip install 'modelmon[tensorflow]'``).

What is served, through the ``serving_default`` signature (or the only one there is):

- **Inputs**: one per feature, named after it, of shape ``[N]`` or ``[N, 1]`` (a ``tf.string``
  input is a text feature, fed the text itself; a missing value is the empty string), or one
  ``[N, F]`` numeric input whose feature names come from the reference data's columns.
- **Output**: one (or, among several, the one named ``probabilities``): ``[N, C]`` class
  probabilities (a softmax; C >= 2) or one ``[N, 1]`` / ``[N]`` sigmoid unit (the second class's
  probability). An output not made by a ``Softmax`` or ``Sigmoid`` op (a ``MatMul`` or
  ``BiasAdd``, say) is read as logits and the softmax or sigmoid applied; the decision and why
  are kept in the artifact's options.
- **Classes**: a SavedModel does not record class labels: the sorted labels of the reference
  data's target, as for Keras (``keras.classes_for``).
- **Regressors**: one output (``[N, 1]`` or ``[N]``) not made by a ``Sigmoid``, and a target
  of numbers that are not class labels (``features.regression_target``, as for Keras): the
  output is the predicted value, served as float64 ``[N]``.

Safe loading: ``tf.saved_model.load`` reads the graph (``saved_model.pb``: a protobuf of
TensorFlow operations and functions), the variables' checkpoint and the asset files (a
vocabulary, say); it unpickles nothing and runs no Python code from the directory (a
``tf.py_function`` is not saved with the model, and an op TensorFlow does not know fails to
load). The ops of the serving function do run when it is called, so registration refuses a
function that holds an op that reads or writes files or runs Python (``ReadFile``,
``WriteFile``, ``SaveV2``, ``PyFunc``, ... see ``REFUSED_OPS``). The directory is stored in the
version directory as one uncompressed tar (so its sha256 is checked like every artifact's) and
unpacked to a private temporary directory to load (``tarfile``'s ``data`` filter: no links out,
no devices).

At registration the signature is converted to ONNX with tf2onnx (when installed, the
``[tensorflow]`` extra installs it) and the graph is served when its probabilities agree within
1e-5 on the registration rows (a regressor's values within 1e-5 times their largest
magnitude, at least 1e-5, as for Keras); otherwise TensorFlow serves the model itself, in the batcher's
thread pool, on one intra-op and one inter-op thread, and the card's ``onnx_check`` says why.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tarfile
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelmon.errors import RegistryError
from modelmon.runtimes.base import (
    ArtifactInfo,
    OnnxCheck,
    ReadOptions,
    Runtime,
    TextColumns,
    artifact_for,
    register_runtime,
)
from modelmon.runtimes.features import (
    feature_specs_from_frame,
    matrix_feature_names,
    regression_target,
)
from modelmon.runtimes.keras import (
    PROBABILITY_TOLERANCE,
    PROBE_ROWS,
    _adapt_inputs,
    _adapt_output,
    classes_for,
    probabilities_from,
)
from modelmon.types import Dtype, FeatureBatch, FeatureSpec, ModelOutput, Signature, Task

if TYPE_CHECKING:
    import pandas as pd

FORMAT = "tensorflow-savedmodel-tar"
ARCHIVE = "saved_model.tar"
SIGNATURE_KEY = "serving_default"
#: The output picked among several.
PROBABILITIES = "probabilities"
#: ONNX opset tf2onnx converts to (what the ONNX runtime here runs; Keras' export uses 17 too).
ONNX_OPSET = 17
#: Ops that touch files or run Python when the serving function runs: a model to serve has
#: no business with them.
REFUSED_OPS = frozenset({
    "ReadFile", "WriteFile", "MatchingFiles", "DeleteFile", "Save", "SaveV2", "SaveSlices",
    "Restore", "RestoreV2", "RestoreSlice", "MergeV2Checkpoints", "WriteSummary",
    "WriteScalarSummary", "WriteHistogramSummary", "WriteAudioSummary", "WriteImageSummary",
    "WriteRawProtoSummary", "CreateSummaryFileWriter", "CreateSummaryDbWriter", "PrintV2", "Print",
    "PyFunc", "PyFuncStateless", "EagerPyFunc", "ImmutableConst", "LoadAndRemapMatrix",
    "TFRecordDataset", "TextLineDataset", "FixedLengthRecordDataset", "DatasetToTFRecord",
})
#: Ops whose output is read as probabilities, and ones read as logits.
PROBABILITY_OPS = frozenset({"Softmax", "Sigmoid"})
#: Ops passed through when looking for the op that makes the output.
_PASS_THROUGH = frozenset({"Identity", "IdentityN", "Reshape", "Squeeze", "ExpandDims", "Cast", "StopGradient"})
_CALLS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})

_SIGNATURE_DTYPES: dict[str, Dtype] = {
    "float32": "float32", "float64": "float64", "int32": "int32", "int64": "int64", "bool": "bool",
}


@dataclass
class SavedModel:
    """A SavedModel as registration and serving work with it: loaded, with its serving
    function's inputs and the output served."""

    directory: Path
    loaded: Any  # tf.saved_model.load's object: the function's variables live in it
    function: Any
    inputs: list[tuple[str, str, tuple[Any, ...]]]  # (name, dtype, shape), the function's order
    output: str
    width: int  # 1 for a sigmoid unit, else C
    last_op: str | None
    scratch: Any = field(default=None, repr=False)  # a TemporaryDirectory the directory lives in
    #: "probabilities", "logits" or "value" (a regressor's) and why, once decided (``decide_outputs``).
    decision: tuple[str, str] | None = None


#: Objects registered from Python, saved once as a SavedModel (registration asks several times).
_SAVED: weakref.WeakKeyDictionary[Any, SavedModel] = weakref.WeakKeyDictionary()


def tensorflow_module() -> Any:
    if "tensorflow" not in sys.modules:  # its C++ start-up notices (oneDNN, CPU features) are noise here
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return TensorFlowRuntime.require("tensorflow")


def load_saved_model(directory: Path, scratch: Any = None) -> SavedModel:
    """Load the SavedModel in ``directory`` and describe its serving function; refuse what
    modelmon cannot serve (no signature, several outputs, ops touching files)."""
    tf = tensorflow_module()
    try:
        loaded = tf.saved_model.load(str(directory))
    except Exception as exc:
        raise RegistryError(
            f"TensorFlow cannot load the SavedModel in {directory.name}: {type(exc).__name__}: {str(exc)[:500]}"
        ) from None
    signatures = dict(getattr(loaded, "signatures", {}) or {})
    if SIGNATURE_KEY in signatures:
        function = signatures[SIGNATURE_KEY]
    elif len(signatures) == 1:
        function = next(iter(signatures.values()))
    else:
        raise RegistryError(
            f"the SavedModel has no {SIGNATURE_KEY!r} signature to serve (it has {sorted(signatures) or 'none'}): "
            "save it with tf.saved_model.save(model, path, signatures={'serving_default': f}) or Keras' model.export"
        )
    refused = sorted(function_ops(function) & REFUSED_OPS)
    if refused:
        raise RegistryError(
            f"the SavedModel's serving function runs {refused}, which read or write files or run Python: "
            "modelmon serves functions of their inputs only"
        )
    specs = function.structured_input_signature[1]
    if function.structured_input_signature[0] or not specs:
        raise RegistryError("the serving signature takes no named inputs: a serving signature has named inputs")
    inputs = [(str(name), spec.dtype.name, tuple(spec.shape.as_list())) for name, spec in specs.items()]
    outputs = function.structured_outputs
    if not isinstance(outputs, dict) or not outputs:
        raise RegistryError("the serving signature has no named outputs")
    if len(outputs) == 1:
        output = next(iter(outputs))
    elif PROBABILITIES in outputs:
        output = PROBABILITIES
    else:
        raise RegistryError(
            f"the serving signature has {len(outputs)} outputs {sorted(outputs)}: modelmon serves one "
            f"(or the one named {PROBABILITIES!r}): [N, C] probabilities or one sigmoid unit"
        )
    shape = tuple(outputs[output].shape.as_list())
    if len(shape) == 1:
        width = 1
    elif len(shape) == 2 and isinstance(shape[1], int):
        width = shape[1]
    else:
        raise RegistryError(
            f"the output {output!r} has shape {shape}: modelmon serves [N, C] class probabilities or one [N, 1] unit"
        )
    return SavedModel(directory, loaded, function, inputs, str(output), width, output_op(function, output), scratch)


def function_ops(function: Any) -> set[str]:
    """Every op type the concrete function runs, in its graph and the functions it calls."""
    graph = function.graph.as_graph_def()
    ops = {node.op for node in graph.node}
    for library_function in graph.library.function:
        ops |= {node.op for node in library_function.node_def}
    return ops


def _reference(tensor: str) -> tuple[str, int]:
    """(node, output index) of a tensor reference: ``node:0`` in a graph, ``node:arg:0`` in
    a function body."""
    parts = tensor.split(":")
    return parts[0], int(parts[-1]) if len(parts) > 1 and parts[-1].isdigit() else 0


def output_op(function: Any, output: str) -> str | None:
    """The op that makes ``output``, looking through identities, reshapes and function
    calls (None when the graph cannot be followed)."""
    try:
        graph = function.graph.as_graph_def()
        library = {f.signature.name: f for f in graph.library.function}
        nodes = {node.name: node for node in graph.node}
        index = list(function.structured_outputs).index(output)
        name, position = _reference(function.outputs[index].name)
        for _ in range(100):
            node = nodes[name]  # a KeyError (a function's argument): the values decide
            if node.op in _CALLS:
                called = library[node.attr["f"].func.name]
                nodes = {n.name: n for n in called.node_def}
                name, position = _reference(called.ret[called.signature.output_arg[position].name])
            elif node.op in _PASS_THROUGH:
                name, position = _reference(node.input[0])
            else:
                return str(node.op)
        return None
    except Exception:  # an unusual graph: the values decide
        return None


def output_kind(model: SavedModel, scores: np.ndarray | None) -> tuple[str, str]:
    """``"probabilities"`` or ``"logits"``, and why: from the op that makes the output, else
    from its values on the reference rows."""
    if model.last_op in PROBABILITY_OPS:
        return "probabilities", f"the output is made by {model.last_op}"
    if model.last_op is not None:
        return "logits", f"the output is made by {model.last_op}, not Softmax or Sigmoid: read as logits"
    if scores is None or not len(scores):
        return "probabilities", "no rows to tell from: read as probabilities"
    finite = scores[np.isfinite(scores).all(axis=1)]
    inside = bool(len(finite)) and finite.min() >= 0.0 and finite.max() <= 1.0
    sums = model.width == 1 or (bool(len(finite)) and float(np.abs(finite.sum(axis=1) - 1).max()) <= 1e-3)
    if inside and sums:
        return "probabilities", f"values in [0, 1]{'' if model.width == 1 else ' summing to 1'} on {len(scores)} rows"
    return "logits", f"values outside [0, 1] or not summing to 1 on {len(scores)} rows: read as logits"


def as_saved_model(model: Any) -> SavedModel:
    """What registration works with: the read directory, or a loaded object saved once as a
    SavedModel and loaded back (what serving will load)."""
    if isinstance(model, SavedModel):
        return model
    with contextlib.suppress(TypeError):  # an object that cannot be weakly referenced
        if model in _SAVED:
            return _SAVED[model]
    tf = tensorflow_module()
    scratch = tempfile.TemporaryDirectory(prefix="modelmon-savedmodel-")
    directory = Path(scratch.name) / "model"
    try:
        tf.saved_model.save(model, str(directory), signatures=dict(model.signatures))
    except Exception as exc:
        scratch.cleanup()
        raise RegistryError(f"TensorFlow cannot save the model as a SavedModel: {type(exc).__name__}: {exc}") from None
    saved = load_saved_model(directory, scratch)
    with contextlib.suppress(TypeError):
        _SAVED[model] = saved
    return saved


@register_runtime
class TensorFlowRuntime(Runtime):
    """A TensorFlow SavedModel's serving function, answering class probabilities or a
    regressor's values."""

    name = "tensorflow"
    extra = "tensorflow"

    def __init__(self, model: Any, signature: Signature, outputs: str | None = None) -> None:
        saved = as_saved_model(model)
        super().__init__(saved, signature)
        self._tf = tensorflow_module()
        self._function = saved.function
        self._output = saved.output
        self._matrix = signature.input_layout == "matrix"
        positions = {f.name: (False, i) for i, f in enumerate(signature.numeric_features)} | {
            f.name: (True, j) for j, f in enumerate(signature.categorical_features)
        }
        self._plan: list[tuple[str, str, bool, int, bool]] = []
        if not self._matrix:
            for name, dtype, shape in saved.inputs:
                if name not in positions:
                    raise RegistryError(f"the signature has no feature for the model's input {name!r}")
                is_text, index = positions[name]
                if is_text != (dtype == "string"):
                    raise RegistryError(
                        f"feature {name!r} is {'text' if is_text else 'a number'} but the model's input "
                        f"{name!r} takes {dtype}"
                    )
                self._plan.append((name, dtype, is_text, index, len(shape) == 1))
        self.outputs = "value" if signature.task is Task.REGRESSION else outputs or output_kind(saved, None)[0]

    def _feeds(self, batch: FeatureBatch) -> dict[str, Any]:
        tf = self._tf
        if self._matrix:
            name, dtype, _ = self.model.inputs[0]
            return {name: tf.constant(batch.numeric.astype(dtype))}
        feeds = {}
        for name, dtype, is_text, index, flat in self._plan:
            if is_text:
                column = np.array([v if isinstance(v, str) else "" for v in batch.categorical[:, index]], dtype=object)
            else:
                column = batch.numeric[:, index]
                if not dtype.startswith("float") and np.isnan(column).any():
                    # An integer or boolean input has no missing value: NaN would be cast to garbage.
                    raise ValueError(f"the model's {name!r} input cannot take a missing value")
                column = column.astype(dtype)
            feeds[name] = tf.constant(column if flat else column.reshape(-1, 1))
        return feeds

    def raw_output(self, batch: FeatureBatch) -> np.ndarray:
        return np.asarray(self._function(**self._feeds(batch))[self._output].numpy())

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        return probabilities_from(self.raw_output(batch), self.outputs)

    def predict_values(self, batch: FeatureBatch) -> np.ndarray:
        """A regressor's predictions."""
        return self.raw_output(batch).astype(np.float64).reshape(-1)

    def predict(self, batch: FeatureBatch) -> ModelOutput:
        if self.outputs == "value":
            return ModelOutput.from_values(self.predict_values(batch))
        return ModelOutput.from_probabilities(self.predict_proba(batch))

    # -- registration ------------------------------------------------------------------

    @classmethod
    def recognises(cls, model: Any) -> bool:
        """A SavedModel read here, or an object with a serving signature (what
        ``tf.saved_model.load`` returns; a Keras model goes to the Keras runtime, asked first)."""
        if isinstance(model, SavedModel):
            return True
        tf = sys.modules.get("tensorflow")
        if tf is None or not hasattr(model, "signatures"):
            return False
        try:
            return isinstance(model, tf.Module) or bool(dict(model.signatures))
        except Exception:
            return False

    @classmethod
    def reads(cls, path: Path) -> bool:
        """A directory holding ``saved_model.pb``."""
        return path.is_dir() and (path / "saved_model.pb").is_file()

    @classmethod
    def read(cls, path: Path, options: ReadOptions) -> SavedModel:
        return load_saved_model(path)

    @classmethod
    def text_columns(cls, model: Any) -> TextColumns:
        saved = as_saved_model(model)
        if len(saved.inputs) == 1 and len(saved.inputs[0][2]) == 2 and saved.inputs[0][2][1] != 1:
            return {}
        return {name: None for name, dtype, _ in saved.inputs if dtype == "string"}

    @classmethod
    def infer_signature(
        cls, model: Any, reference: pd.DataFrame | None, target: str | None, text_columns: TextColumns
    ) -> Signature:
        saved = as_saved_model(model)
        regression = saved.width == 1 and regression_target(reference, target)
        if regression and saved.last_op in PROBABILITY_OPS:
            raise RegistryError(
                f"the target {target!r} holds numbers that are not class labels (some not whole, or more than "
                f"two values) but the model's one output is made by {saved.last_op}: a regressor's output is "
                "the value itself (no Sigmoid or Softmax)"
            )
        classes = None if regression else classes_for(saved.width, reference, target)
        name, _, shape = saved.inputs[0]
        matrix = len(saved.inputs) == 1 and len(shape) == 2 and (
            shape[1] != 1 or (reference is not None and name not in reference.columns)
        )
        specs = _matrix_specs(saved, reference, target) if matrix else _column_specs(saved, reference, text_columns)
        signature = Signature(
            features=specs, task=Task.REGRESSION if classes is None else Task.for_classes(classes), classes=classes,
            input_layout="matrix" if matrix else "columns",
        )
        kind, _ = decide_outputs(saved, signature, reference)
        if kind == "probabilities":
            _check_probabilities(cls(saved, signature, kind), signature, reference)
        return signature

    @classmethod
    def wrap(cls, model: Any, signature: Signature) -> TensorFlowRuntime:
        saved = as_saved_model(model)
        return cls(saved, signature, decide_outputs(saved, signature, None)[0])

    @classmethod
    def save(cls, model: Any, source: Path | None, directory: Path) -> ArtifactInfo:
        """The SavedModel directory as one tar, with the output decision."""
        saved = as_saved_model(model)
        path = directory / ARCHIVE
        with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as archive:
            for item in sorted(saved.directory.rglob("*")):
                if item.is_symlink():
                    raise RegistryError(f"the SavedModel holds a symbolic link ({item.name}): copy the file in instead")
                archive.add(item, arcname=str(item.relative_to(saved.directory)), recursive=False)
        tf = tensorflow_module()
        kind, why = saved.decision or output_kind(saved, None)
        options = {"output": saved.output, "outputs": kind, "outputs_why": why, "tensorflow_version": tf.__version__}
        return artifact_for(path, FORMAT, options=options)

    @classmethod
    def load(cls, path: Path, artifact: ArtifactInfo, signature: Signature) -> TensorFlowRuntime:
        """The saved model, unpacked into a private temporary directory and loaded, for
        serving on one intra-op and one inter-op thread (the batcher runs calls in its thread
        pool already; a small model only loses to threads contending for shared cores)."""
        if artifact.format != FORMAT:
            raise RegistryError(f"the tensorflow runtime cannot load a {artifact.format!r} artifact")
        tf = tensorflow_module()
        with contextlib.suppress(RuntimeError):  # TensorFlow already running: its threads are set
            tf.config.threading.set_intra_op_parallelism_threads(1)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        scratch = tempfile.TemporaryDirectory(prefix="modelmon-savedmodel-")
        directory = Path(scratch.name) / "model"
        with tarfile.open(path) as archive:
            archive.extractall(directory, filter="data")
        saved = load_saved_model(directory, scratch)
        return cls(saved, signature, outputs=artifact.options.get("outputs"))

    @classmethod
    def to_onnx(
        cls, model: Any, signature: Signature, check_data: FeatureBatch
    ) -> tuple[bytes | None, OnnxCheck]:
        """tf2onnx's graph of the serving function, fed and read as modelmon serves (a sigmoid
        unit as two columns, logits through their softmax or sigmoid, a regressor's value as
        it is), if it agrees on ``check_data``."""
        from modelmon.runtimes.onnx import OnnxRuntime

        if check_data.n_rows == 0:
            return None, OnnxCheck(used=False, reason="no reference or validation data to verify on")
        saved = as_saved_model(model)
        native = cls.wrap(saved, signature)
        try:
            model_bytes = _convert(saved, signature, native.outputs)
        except RegistryError as exc:
            return None, OnnxCheck(used=False, reason=str(exc))
        except Exception as exc:  # tf2onnx raises many types for unsupported graphs
            return None, OnnxCheck(used=False, reason=f"tf2onnx failed: {type(exc).__name__}: {exc}"[:500])
        regression = signature.task is Task.REGRESSION
        expected = native.predict_values(check_data) if regression else native.predict_proba(check_data)
        one_row = FeatureBatch(numeric=check_data.numeric[:1], categorical=check_data.categorical[:1])
        try:
            converted = OnnxRuntime(model_bytes, signature)
            answers = converted.predict_values if regression else converted.predict_proba
            actual, first = answers(check_data), answers(one_row)
        except Exception as exc:
            return None, OnnxCheck(used=False, reason=f"the converted graph failed: {exc}"[:500])
        if actual.shape != expected.shape:
            return None, OnnxCheck(used=False, reason=f"output shape {actual.shape} differs from {expected.shape}")
        difference = float(max(np.max(np.abs(actual - expected)), np.max(np.abs(first - expected[:1]))))
        # A regressor's values: the tolerance scales with their magnitude (float32 arithmetic), as Keras'.
        allowed = PROBABILITY_TOLERANCE * max(1.0, float(np.max(np.abs(expected)))) if regression else PROBABILITY_TOLERANCE
        if not np.isfinite(difference) or difference > allowed:
            return None, OnnxCheck(
                used=False, rows_compared=check_data.n_rows,
                max_abs_difference=difference if np.isfinite(difference) else None,
                reason=f"{'predictions' if regression else 'probabilities'} differ by {difference:.3g} > {allowed:.3g}",
            )
        return model_bytes, OnnxCheck(used=True, rows_compared=check_data.n_rows, max_abs_difference=difference)


def decide_outputs(saved: SavedModel, signature: Signature, reference: pd.DataFrame | None) -> tuple[str, str]:
    """Probabilities or logits (see ``output_kind``), decided once per SavedModel (at
    registration, with the reference rows; ``save`` records it)."""
    if signature.task is Task.REGRESSION:
        saved.decision = ("value", "one output and a target of numbers that are not class labels: a regressor")
        return saved.decision
    if saved.decision is not None:
        return saved.decision
    scores = None
    if saved.last_op is None and reference is not None and len(reference):
        runtime = TensorFlowRuntime(saved, signature, "probabilities")
        scores = runtime.raw_output(FeatureBatch.from_frame(reference.head(PROBE_ROWS), signature))
        scores = scores.reshape(len(scores), -1).astype(np.float64)
    saved.decision = output_kind(saved, scores)
    return saved.decision


def _check_probabilities(predictor: TensorFlowRuntime, signature: Signature, reference: pd.DataFrame | None) -> None:
    """Refuse an output read as probabilities whose values are not (a softmax's rows sum to one)."""
    if reference is None or not len(reference):
        return
    try:
        proba = predictor.predict_proba(FeatureBatch.from_frame(reference.head(PROBE_ROWS), signature))
    except Exception:
        return  # registration's own run of the model reports the failure
    finite = proba[np.isfinite(proba).all(axis=1)]
    if len(finite) and (
        finite.min() < -1e-6 or finite.max() > 1 + 1e-6 or np.abs(finite.sum(axis=1) - 1).max() > 1e-3
    ):
        raise RegistryError(
            f"the SavedModel's output {predictor.model.output!r} is made by {predictor.model.last_op} but its values "
            "are not class probabilities (they leave [0, 1] or do not sum to 1)"
        )


def _column_specs(saved: SavedModel, reference: pd.DataFrame | None, text_columns: TextColumns) -> list[FeatureSpec]:
    """One feature per input, in the reference data's column order (else the function's)."""
    for name, _, shape in saved.inputs:
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise RegistryError(
                f"the SavedModel's input {name!r} has shape {shape}: with several inputs each is one "
                "feature, of shape [N] or [N, 1]"
            )
    dtypes = {name: dtype for name, dtype, _ in saved.inputs}
    text = {name for name, dtype in dtypes.items() if dtype == "string"}
    if reference is None:
        return [
            FeatureSpec(name=name, dtype="string", categories=text_columns.get(name)) if name in text
            else FeatureSpec(name=name, dtype=_SIGNATURE_DTYPES.get(dtype, "float64"))
            for name, dtype, _ in saved.inputs
        ]
    missing = [name for name in dtypes if name not in reference.columns]
    if missing:
        raise RegistryError(f"the model expects feature(s) {missing} but the reference data has no such column")
    names = [str(c) for c in reference.columns if c in dtypes]
    specs = feature_specs_from_frame(reference, names, text)
    for spec in specs:
        if spec.is_categorical and spec.name not in text:
            raise RegistryError(
                f"feature {spec.name!r} holds text, but the model's input {spec.name!r} takes {dtypes[spec.name]}"
            )
    return specs


def _matrix_specs(saved: SavedModel, reference: pd.DataFrame | None, target: str | None) -> list[FeatureSpec]:
    name, dtype, shape = saved.inputs[0]
    if dtype == "string":
        raise RegistryError(f"the SavedModel's one input {name!r} takes [N, F] strings: give each feature its own input")
    width = shape[1]
    names = matrix_feature_names(reference, target, width, f"the SavedModel's input {name!r}")
    if reference is None:
        return [FeatureSpec(name=n, dtype=_SIGNATURE_DTYPES.get(dtype, "float64")) for n in names]
    specs = feature_specs_from_frame(reference, names)
    text = [s.name for s in specs if s.is_categorical]
    if text:
        raise RegistryError(
            f"the SavedModel takes one [N, {width}] numeric input, so it cannot take the text feature(s) {text}: "
            "give each feature its own input (tf.string for text)"
        )
    return specs


def _convert(saved: SavedModel, signature: Signature, outputs: str) -> bytes:
    """tf2onnx's conversion of the serving function (as its command line converts a saved
    model), with modelmon's input and output conventions (``keras._adapt_inputs`` and
    ``_adapt_output``)."""
    import onnx

    try:
        from tf2onnx import tf_loader
        from tf2onnx.convert import _convert_common
    except ImportError:
        raise RegistryError("tf2onnx is not installed (pip install 'modelmon[tensorflow]')") from None
    tf = tensorflow_module()
    quiet = io.StringIO()
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "tensorflow")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(quiet), contextlib.redirect_stderr(quiet):
            key = SIGNATURE_KEY if SIGNATURE_KEY in saved.loaded.signatures else next(iter(saved.loaded.signatures))
            graph_def, inputs, outputs_found, tables, renames = tf_loader.from_saved_model(
                str(saved.directory), None, None, "serve", [key], None, False,
                return_initialized_tables=True, return_tensors_to_rename=True,
            )
            chosen = [t for t in outputs_found if renames.get(t) == saved.output]
            with tf.device("/cpu:0"):
                proto, _ = _convert_common(
                    graph_def, name="modelmon", opset=ONNX_OPSET, input_names=inputs, output_names=chosen,
                    tensors_to_rename=renames, initialized_tables=tables,
                )
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    _adapt_inputs(proto, signature, {})
    _adapt_output(proto, outputs)
    onnx.checker.check_model(proto)
    return bytes(proto.SerializeToString())

