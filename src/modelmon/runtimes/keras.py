"""Keras 3 classifiers: ``.keras`` files and ``keras.Model`` objects, on any Keras backend.

Keras is imported on first use, with the backend the environment names (``KERAS_BACKEND``,
else ``~/.keras/keras.json``, else Keras' default, TensorFlow); modelmon never chooses one.
modelmon's tests run Keras on the CPU build of torch (``KERAS_BACKEND=torch``).

What is served:

- **Inputs**: a functional (or Sequential) model with one input per feature, named after
  the feature, each of shape ``[N]`` or ``[N, 1]`` (its dtype gives the feature's type when
  no reference data does), or with one ``[N, F]`` input whose feature names come from the
  reference data's columns. Text features: Keras' ``StringLookup`` needs TensorFlow, and the
  other backends have no string tensors, so a text feature enters the model as integer
  codes through modelmon's ``TextLevels`` layer (``from modelmon.runtimes.keras import
  TextLevels``), which one-hot encodes the codes and records the levels in the model:
  modelmon encodes served text the same way (a level it does not list: all zeros).
- **Outputs**: one ``[N, C]`` softmax (multiclass; C >= 2) or one ``[N, 1]`` sigmoid unit
  (binary: the unit is the probability of the second class). A last layer without an
  activation is read as logits and the softmax or sigmoid is applied (recorded in the
  artifact's options).
- **Classes**: a Keras model does not record its class labels. They are the sorted labels
  of the reference data's target column (the order of scikit-learn's ``LabelEncoder`` and
  of pandas' category codes) when there are as many as the model has outputs, else the
  output indices ``0..C-1``.

Safe loading: ``keras.saving.load_model(..., safe_mode=True)``, which refuses a ``Lambda``
layer's Python code; a model object is saved as ``.keras`` (a zip of JSON configuration and
weights, no pickle) and must load back that way too. At registration the model is exported
to ONNX with Keras' own exporter (``model.export(format="onnx")``; on the torch backend
through ``torch.onnx``'s TorchScript-based exporter, no onnxscript needed) and the graph is
served when it agrees within 1e-5; otherwise Keras serves the model itself, in the batcher's
thread pool (on the torch backend on one intra-op thread, see ``load``), and the card's
``onnx_check`` says why.

TensorFlow SavedModel directories (``model.export``'s default format) are read by the
tensorflow runtime (``runtimes/tensorflow.py``), which shares this module's helpers.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import sys
import tempfile
import warnings
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
    python_label,
    regression_target,
)
from modelmon.types import Dtype, FeatureBatch, FeatureSpec, ModelOutput, Signature, Task

if TYPE_CHECKING:
    import pandas as pd

SUFFIX = ".keras"
FORMAT = "keras"
#: Largest absolute difference in any class probability for the exported graph to be kept.
PROBABILITY_TOLERANCE = 1e-5
#: Rows of the reference data used to check that the model's outputs are probabilities.
PROBE_ROWS = 64
#: The name ``TextLevels`` is registered under in Keras' serialization registry.
TEXT_LEVELS_PACKAGE = "modelmon"
#: Input names used inside the exported graph for a text feature's integer codes.
CODES_SUFFIX = "__codes"

_SIGNATURE_DTYPES: dict[str, Dtype] = {
    "float32": "float32",
    "float64": "float64",
    "int32": "int32",
    "int64": "int64",
    "bool": "bool",
}


def keras_module() -> Any:
    """Keras, imported with the environment's backend; a missing Keras names the extra, and
    a missing backend says how to choose one."""
    try:
        keras = KerasRuntime.require("keras")
    except RegistryError as error:
        cause = error.__context__
        missing = getattr(cause, "name", None)
        if isinstance(cause, ImportError) and missing and missing != "keras" and not missing.startswith("keras."):
            raise RegistryError(
                f"Keras is installed but cannot import its backend ({cause}). Keras 3 runs on the "
                "backend named by KERAS_BACKEND (else ~/.keras/keras.json, else tensorflow): "
                "install one and name it, e.g. `pip install torch` and KERAS_BACKEND=torch"
            ) from cause
        raise
    text_levels_layer()  # registered before any model is loaded
    return keras


@functools.cache
def text_levels_layer() -> Any:
    """The ``TextLevels`` layer class (built once Keras is imported, and registered with
    Keras' serialization so that ``load_model`` finds it in safe mode)."""
    keras = KerasRuntime.require("keras")
    ops = keras.ops
    layer: Any = keras.layers.Layer

    @keras.saving.register_keras_serializable(package=TEXT_LEVELS_PACKAGE)
    class TextLevels(layer):
        """A text feature as the model sees it: integer codes in, one-hot rows out.

        ``TextLevels(levels)`` takes codes ``[N, 1]`` (or ``[N]``): code ``i`` is
        ``levels[i]``; any other code (``-1`` for a missing or unknown level) gives a row of
        zeros. ``encode(values)`` turns text into those codes. Put it right after the
        feature's ``keras.Input(shape=(1,), dtype="int32", name=<feature>)``: modelmon reads
        the levels from it and serves the feature as text, encoded the same way. (Loading
        such a model with Keras elsewhere needs this class imported first, as any custom
        layer does.)
        """

        def __init__(self, levels: list[str], **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.levels = [str(level) for level in levels]
            if len(set(self.levels)) != len(self.levels):
                raise ValueError("TextLevels: the levels must be distinct")

        def encode(self, values: Any) -> np.ndarray:
            """Codes ``[N, 1]`` (int32) of text values; -1 where a value is not a level."""
            return encode_levels(np.asarray(values, dtype=object).reshape(-1), self.levels)

        def call(self, codes: Any) -> Any:
            codes = ops.reshape(ops.cast(codes, "int32"), (-1, 1))
            positions = ops.expand_dims(ops.arange(len(self.levels), dtype="int32"), 0)
            return ops.cast(ops.equal(codes, positions), self.compute_dtype)

        def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
            return (input_shape[0], len(self.levels))

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "levels": list(self.levels)}

    return TextLevels


def __getattr__(name: str) -> Any:
    """``TextLevels`` is made when first asked for: importing this module never imports
    Keras."""
    if name == "TextLevels":
        return text_levels_layer()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def encode_levels(values: np.ndarray, levels: list[str]) -> np.ndarray:
    """Codes ``[N, 1]`` int32 of ``values`` among ``levels``; -1 for anything else."""
    index = {level: i for i, level in enumerate(levels)}
    codes = np.fromiter((index.get(v, -1) if isinstance(v, str) else -1 for v in values), dtype=np.int32,
                        count=len(values))
    return codes.reshape(-1, 1)


# -- what a Keras model records ---------------------------------------------------------


def model_inputs(model: Any) -> list[tuple[str, str, tuple[Any, ...]]]:
    """The model's inputs: (name, dtype, shape), in the model's order."""
    try:
        inputs = list(model.inputs)
    except (AttributeError, ValueError):
        inputs = []
    if not inputs:
        raise RegistryError(
            f"the Keras model {getattr(model, 'name', '')!r} records no inputs (a subclassed model, "
            "or one never built): build it as a functional or Sequential model with keras.Input"
        )
    return [(_tensor_name(t), str(t.dtype), tuple(t.shape)) for t in inputs]


def _tensor_name(tensor: Any) -> str:
    return str(getattr(tensor, "name", "")).split(":")[0]


def text_levels(model: Any) -> dict[str, list[str]]:
    """The inputs that feed a ``TextLevels`` layer directly, with that layer's levels."""
    layer_class = text_levels_layer()
    names = {_tensor_name(t) for t in model.inputs}
    found: dict[str, list[str]] = {}
    for layer in model.layers:
        if not isinstance(layer, layer_class):
            continue
        try:
            source = _tensor_name(layer.input)
        except (AttributeError, ValueError):  # not called on one tensor
            continue
        if source in names:
            found[source] = list(layer.levels)
    return found


def output_width(model: Any) -> int:
    """Columns of the model's single output: C for a softmax, 1 for a sigmoid unit."""
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) != 1:
        raise RegistryError(
            f"the Keras model has {len(outputs)} outputs: modelmon serves a classifier with one "
            "probability output ([N, C] softmax or [N, 1] sigmoid)"
        )
    shape = tuple(outputs[0].shape)
    if len(shape) == 1:
        return 1
    if len(shape) != 2 or not isinstance(shape[1], int):
        raise RegistryError(
            f"the Keras model's output has shape {shape}: modelmon serves [N, C] class "
            "probabilities (softmax) or one [N, 1] sigmoid unit"
        )
    return int(shape[1])


def output_kind(model: Any) -> str:
    """``"logits"`` when the layer that makes the output has a linear activation (a Dense
    layer without one), else ``"probabilities"``."""
    history = getattr(model.outputs[0], "_keras_history", None)
    layer = getattr(history, "operation", None)
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return "logits" if name == "linear" else "probabilities"


def probabilities_from(scores: np.ndarray, kind: str) -> np.ndarray:
    """``[N, C]`` float64 probabilities from the model's raw output."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim == 1:
        scores = scores.reshape(-1, 1)
    if scores.shape[1] == 1:
        p = scores[:, 0]
        if kind == "logits":
            p = 1.0 / (1.0 + np.exp(-p))
        return np.column_stack([1.0 - p, p])
    if kind == "logits":
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)
    return scores


def classes_for(width: int, reference: pd.DataFrame | None, target: str | None) -> list[Any]:
    """The labels of the model's probability columns: the target's sorted labels when there
    are as many as columns, else the column indices."""
    n_classes = max(width, 2)
    indices = list(range(n_classes))
    if reference is None or target is None or target not in reference.columns:
        return indices
    labels = [python_label(v) for v in reference[target].dropna().unique()]
    try:
        labels = sorted(set(labels))
    except TypeError:  # mixed types
        labels = sorted(set(labels), key=str)
    if len(labels) == n_classes:
        return labels
    if all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n_classes for v in labels):
        return indices  # some classes absent from the data: the codes are the indices
    raise RegistryError(
        f"the Keras model has {n_classes} output classes but the target {target!r} has "
        f"{len(labels)} labels ({labels[:10]}): train it with one output per label "
        f"(class i = the i-th label in sorted order), or with a target coded 0..{n_classes - 1}"
    )


@register_runtime
class KerasRuntime(Runtime):
    """A Keras 3 model answering class probabilities, or a regressor's values (one linear
    unit trained on a target of numbers that are not class labels)."""

    name = "keras"
    suffixes = (SUFFIX,)
    extra = "keras"

    def __init__(self, model: Any, signature: Signature, outputs: str | None = None) -> None:
        super().__init__(model, signature)
        keras = keras_module()
        self._to_numpy = keras.ops.convert_to_numpy
        self.outputs = "value" if signature.task is Task.REGRESSION else outputs or output_kind(model)
        self._no_grad: Any = contextlib.nullcontext
        if keras.backend.backend() == "torch":  # no autograd bookkeeping when serving
            import torch

            self._no_grad = torch.no_grad
        inputs = model_inputs(model)
        levels = text_levels(model)
        self._matrix = signature.input_layout == "matrix"
        if self._matrix:
            self._matrix_dtype = inputs[0][1]
            return
        numeric = {f.name: i for i, f in enumerate(signature.numeric_features)}
        categorical = {f.name: j for j, f in enumerate(signature.categorical_features)}
        self._plan: list[tuple[str, str, bool, int, list[str] | None, bool]] = []
        for name, dtype, shape in inputs:
            flat = len(shape) == 1
            if name in levels:
                if name not in categorical:
                    raise RegistryError(f"the model takes feature {name!r} as text but the signature has it as a number")
                self._plan.append((name, dtype, True, categorical[name], levels[name], flat))
            elif name in numeric:
                self._plan.append((name, dtype, False, numeric[name], None, flat))
            elif name in categorical:
                raise RegistryError(f"the model's input {name!r} takes numbers but the signature has it as text")
            else:
                raise RegistryError(f"the signature has no feature for the model's input {name!r}")

    def _feeds(self, batch: FeatureBatch) -> Any:
        if self._matrix:
            return batch.numeric.astype(self._matrix_dtype)
        feeds = {}
        for name, dtype, is_text, index, levels, flat in self._plan:
            if is_text:
                column = encode_levels(batch.categorical[:, index], levels or [])
            else:
                column = batch.numeric[:, index : index + 1]
                if not dtype.startswith("float") and np.isnan(column).any():
                    # An integer or boolean input has no missing value: NaN would be cast to garbage.
                    raise ValueError(f"the model's {name!r} input cannot take a missing value")
            feeds[name] = column.reshape(-1) if flat else column
            feeds[name] = feeds[name].astype(dtype, copy=False)
        return feeds

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        feeds = self._feeds(batch)
        with self._no_grad():
            scores = self._to_numpy(self.model(feeds, training=False))
        return probabilities_from(scores, self.outputs)

    def predict_values(self, batch: FeatureBatch) -> np.ndarray:
        """A regressor's predictions."""
        feeds = self._feeds(batch)
        with self._no_grad():
            scores = self._to_numpy(self.model(feeds, training=False))
        return np.asarray(scores, dtype=np.float64).reshape(-1)

    def predict(self, batch: FeatureBatch) -> ModelOutput:
        if self.outputs == "value":
            return ModelOutput.from_values(self.predict_values(batch))
        return ModelOutput.from_probabilities(self.predict_proba(batch))

    # -- registration ------------------------------------------------------------------

    @classmethod
    def recognises(cls, model: Any) -> bool:
        """A ``keras.Model`` (Keras 3). Keras is not imported to tell: an object of Keras'
        exists only once Keras is."""
        keras = sys.modules.get("keras")
        model_class = getattr(keras, "Model", None)
        return isinstance(model_class, type) and isinstance(model, model_class)

    @classmethod
    def read(cls, path: Path, options: ReadOptions) -> Any:
        return load_keras(path)

    @classmethod
    def text_columns(cls, model: Any) -> TextColumns:
        keras_module()
        found: TextColumns = {name: levels for name, levels in text_levels(model).items()}
        return found

    @classmethod
    def infer_signature(
        cls, model: Any, reference: pd.DataFrame | None, target: str | None, text_columns: TextColumns
    ) -> Signature:
        keras_module()
        inputs = model_inputs(model)
        levels = text_levels(model)
        width = output_width(model)
        regression = width == 1 and output_kind(model) == "logits" and regression_target(reference, target)
        classes = None if regression else classes_for(width, reference, target)
        # One [N, F] input, unless it is one feature's [N, 1] input named after the feature.
        name, _, shape = inputs[0]
        matrix = len(inputs) == 1 and len(shape) == 2 and (
            shape[1] != 1 or (reference is not None and name not in reference.columns)
        )
        specs = _matrix_specs(inputs[0], reference, target, text_columns) if matrix else _column_specs(
            inputs, levels, reference, text_columns
        )
        signature = Signature(
            features=specs, task=Task.REGRESSION if classes is None else Task.for_classes(classes), classes=classes,
            input_layout="matrix" if matrix else "columns",
        )
        if classes is None:
            return signature
        _check_probabilities(cls(model, signature), signature, reference)
        return signature

    @classmethod
    def save(cls, model: Any, source: Path | None, directory: Path) -> ArtifactInfo:
        keras = keras_module()
        path = directory / f"model{SUFFIX}"
        if source is not None and source.suffix.lower() == SUFFIX:
            shutil.copyfile(source, path)  # it loaded in safe mode already
        else:
            try:
                model.save(path)
            except Exception as exc:
                raise RegistryError(f"Keras cannot save the model as {SUFFIX}: {exc}") from exc
            load_keras(path)  # what serving will load must load safely
        options = {"outputs": output_kind(model), "backend": keras.backend.backend(), "keras_version": keras.__version__}
        return artifact_for(path, FORMAT, options=options)

    @classmethod
    def load(cls, path: Path, artifact: ArtifactInfo, signature: Signature) -> KerasRuntime:
        """The saved model, for serving. On the torch backend, on one intra-op thread as ONNX
        Runtime and the torch runtime are: the batcher already runs calls in a thread pool,
        and a small model's calls only lose to threads contending for the cores (a 64-row
        call took 23 ms on two threads, 3 ms on one, on a busy two-core machine)."""
        if artifact.format != FORMAT:
            raise RegistryError(f"the keras runtime cannot load a {artifact.format!r} artifact")
        model = load_keras(path)
        if keras_module().backend.backend() == "torch":
            import torch

            torch.set_num_threads(1)
        return cls(model, signature, outputs=artifact.options.get("outputs"))

    @classmethod
    def to_onnx(
        cls, model: Any, signature: Signature, check_data: FeatureBatch
    ) -> tuple[bytes | None, OnnxCheck]:
        """The graph Keras exports, with the inputs and output modelmon serves (text codes
        looked up from strings; a sigmoid unit as two columns), if it agrees on
        ``check_data``."""
        from modelmon.runtimes.onnx import OnnxRuntime

        if check_data.n_rows == 0:
            return None, OnnxCheck(used=False, reason="no reference or validation data to verify on")
        native = cls(model, signature)
        regression = signature.task is Task.REGRESSION
        answers = native.predict_values if regression else native.predict_proba
        expected = answers(check_data)  # also builds the model, which export needs
        try:
            model_bytes = _export_onnx(model, signature, native.outputs)
            converted = OnnxRuntime(model_bytes, signature)
        except Exception as exc:  # the exporters raise many types for unsupported models
            return None, OnnxCheck(used=False, reason=f"export failed: {type(exc).__name__}: {exc}"[:500])
        rows = check_data.n_rows
        one_row = FeatureBatch(numeric=check_data.numeric[:1], categorical=check_data.categorical[:1])
        converted_answers = converted.predict_values if regression else converted.predict_proba
        try:
            actual = converted_answers(check_data)
            first = converted_answers(one_row)
        except Exception as exc:
            return None, OnnxCheck(used=False, reason=f"exported graph failed: {exc}"[:500])
        if actual.shape != expected.shape:
            return None, OnnxCheck(used=False, reason=f"output shape {actual.shape} differs from {expected.shape}")
        difference = float(max(np.max(np.abs(actual - expected)), np.max(np.abs(first - expected[:1]))))
        # A regressor's values: the tolerance scales with their magnitude (float32 arithmetic).
        allowed = PROBABILITY_TOLERANCE * max(1.0, float(np.max(np.abs(expected)))) if regression else PROBABILITY_TOLERANCE
        if not np.isfinite(difference) or difference > allowed:
            return None, OnnxCheck(
                used=False,
                rows_compared=rows,
                max_abs_difference=difference if np.isfinite(difference) else None,
                reason=f"{'predictions' if regression else 'probabilities'} differ by {difference:.3g} > {allowed:.3g}",
            )
        return model_bytes, OnnxCheck(used=True, rows_compared=rows, max_abs_difference=difference)


def load_keras(path: Path) -> Any:
    """A ``.keras`` file, loaded in Keras' safe mode (no Python code from the file)."""
    keras = keras_module()
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:
        message = str(exc)
        if "safe_mode" in message or "unsafe" in message or "arbitrary code" in message:
            raise RegistryError(
                f"{path.name} was refused by Keras' safe mode: loading it would run Python code "
                f"stored in the file (a Lambda layer). Rebuild the model without it. Keras said: {message}"
            ) from exc
        raise RegistryError(
            f"Keras cannot load {path.name}: {type(exc).__name__}: {message[:500]}. A model with "
            "custom layers or other objects of your own cannot be served."
        ) from exc


def _column_specs(
    inputs: list[tuple[str, str, tuple[Any, ...]]],
    levels: dict[str, list[str]],
    reference: pd.DataFrame | None,
    text_columns: TextColumns,
) -> list[FeatureSpec]:
    for name, _, shape in inputs:
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise RegistryError(
                f"the Keras model's input {name!r} has shape {shape}: with several inputs each is one "
                "feature, of shape [N] or [N, 1]"
            )
    names = [name for name, _, _ in inputs]
    if reference is None:
        specs = [
            FeatureSpec(name=name, dtype="string", categories=levels[name]) if name in levels
            else FeatureSpec(name=name, dtype=_signature_dtype(dtype))
            for name, dtype, _ in inputs
        ]
    else:
        specs = feature_specs_from_frame(reference, names, set(levels) | set(text_columns))
    for spec in specs:
        if spec.is_categorical and spec.name not in levels:
            raise RegistryError(
                f"feature {spec.name!r} holds text, but the model's input {spec.name!r} takes numbers: "
                "feed it through modelmon's TextLevels layer (integer codes of its levels), or give "
                "numbers"
            )
    return specs


def _matrix_specs(
    model_input: tuple[str, str, tuple[Any, ...]],
    reference: pd.DataFrame | None,
    target: str | None,
    text_columns: TextColumns,
) -> list[FeatureSpec]:
    name, dtype, shape = model_input
    width = shape[1] if len(shape) == 2 else None
    if len(shape) != 2:
        raise RegistryError(f"the Keras model's input {name!r} has shape {shape}: expected [N, F]")
    names = matrix_feature_names(reference, target, width, "the Keras model's input")
    specs = (
        feature_specs_from_frame(reference, names, set(text_columns))
        if reference is not None
        else [FeatureSpec(name=n, dtype=_signature_dtype(dtype)) for n in names]
    )
    text = [s.name for s in specs if s.is_categorical]
    if text:
        raise RegistryError(
            f"the Keras model takes one [N, {width}] numeric input, so it cannot take the text "
            f"feature(s) {text}: give each feature its own input, text through modelmon's TextLevels layer"
        )
    return specs


def _signature_dtype(keras_dtype: str) -> Dtype:
    if keras_dtype in _SIGNATURE_DTYPES:
        return _SIGNATURE_DTYPES[keras_dtype]
    return "int64" if "int" in keras_dtype else "float64"


def _check_probabilities(predictor: KerasRuntime, signature: Signature, reference: pd.DataFrame | None) -> None:
    """Refuse a model whose outputs are not probabilities (a softmax's rows sum to one)."""
    if predictor.outputs == "logits":
        return
    if reference is not None and len(reference):
        batch = FeatureBatch.from_frame(reference.head(PROBE_ROWS), signature)
    else:
        levels = [(s.categories or [""])[0] for s in signature.categorical_features]
        batch = FeatureBatch(
            numeric=np.zeros((1, len(signature.numeric_features))),
            categorical=np.array([levels], dtype=object).reshape(1, -1),
        )
    try:
        proba = predictor.predict_proba(batch)
    except Exception:
        return  # registration's own run of the model reports the failure
    finite = proba[np.isfinite(proba).all(axis=1)]
    if len(finite) and (
        finite.min() < -1e-6 or finite.max() > 1 + 1e-6 or np.abs(finite.sum(axis=1) - 1).max() > 1e-3
    ):
        raise RegistryError(
            "the Keras model's outputs are not class probabilities (they leave [0, 1] or do not sum "
            "to 1): end it with a softmax (or one sigmoid unit), or with a Dense layer without an "
            "activation, which modelmon reads as logits"
        )


# -- the exported graph -------------------------------------------------------------------


def _export_onnx(model: Any, signature: Signature, outputs: str) -> bytes:
    """Keras' own ONNX export, adapted to what ``OnnxRuntime`` feeds and reads."""
    import onnx

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.onnx"
        with warnings.catch_warnings(), contextlib.redirect_stdout(None):
            warnings.simplefilter("ignore")
            model.export(str(path), format="onnx", verbose=False)
        graph = onnx.load(str(path))
    _adapt_inputs(graph, signature, text_levels(model))
    _adapt_output(graph, outputs)
    onnx.checker.check_model(graph)
    return bytes(graph.SerializeToString())


def _adapt_inputs(model: Any, signature: Signature, levels: dict[str, list[str]]) -> None:
    """Each per-feature input takes ``[N, 1]`` as modelmon feeds it; a text feature's input
    takes strings, looked up into the codes the Keras model takes (-1: not a level)."""
    from onnx import TensorProto, helper

    if signature.input_layout == "matrix":
        return
    graph = model.graph
    front = []
    for graph_input in list(graph.input):
        name = graph_input.name
        tensor = graph_input.type.tensor_type
        rank = len(tensor.shape.dim)
        text = name in levels
        if not text and rank == 2:
            continue
        inner = f"{name}{CODES_SUFFIX}"
        for node in graph.node:
            node.input[:] = [inner if i == name else i for i in node.input]
        element = TensorProto.STRING if text else tensor.elem_type
        current = name
        if text:
            if "" in levels[name]:  # the graph gets "" for a missing value, which must stay unknown
                raise ValueError(f"feature {name!r} has the empty string as a level")
            front.append(helper.make_node(
                "LabelEncoder", [current], [f"{inner}_int64"], domain="ai.onnx.ml",
                keys_strings=levels[name], values_int64s=list(range(len(levels[name]))), default_int64=-1,
            ))
            front.append(helper.make_node("Cast", [f"{inner}_int64"], [f"{inner}_cast"], to=tensor.elem_type))
            current = f"{inner}_cast"
        if rank == 1:
            axes = f"{inner}_axes"
            graph.initializer.append(helper.make_tensor(axes, TensorProto.INT64, [1], [1]))
            front.append(helper.make_node("Squeeze", [current, axes], [f"{inner}_flat"]))
            current = f"{inner}_flat"
        front.append(helper.make_node("Identity", [current], [inner]))
        graph.input.remove(graph_input)
        graph.input.append(helper.make_tensor_value_info(name, element, ["batch", 1]))
    if front:
        existing = list(graph.node)
        del graph.node[:]
        graph.node.extend(front + existing)
    if not any(o.domain == "ai.onnx.ml" for o in model.opset_import):
        model.opset_import.append(helper.make_operatorsetid("ai.onnx.ml", 3))


def _adapt_output(model: Any, outputs: str) -> None:
    """One ``[N, C]`` probability output named ``probabilities``: logits through a softmax
    or sigmoid, a sigmoid unit ``p`` as the two columns ``[1 - p, p]``."""
    from onnx import TensorProto, helper

    graph = model.graph
    if len(graph.output) != 1:
        raise ValueError(f"the exported graph has {len(graph.output)} outputs")
    output = graph.output[0]
    tensor = output.type.tensor_type
    dims = tensor.shape.dim
    width = dims[1].dim_value if len(dims) == 2 and dims[1].HasField("dim_value") else None
    current = output.name
    if outputs == "value":  # a regressor's one value per row, as it is
        graph.node.append(helper.make_node("Identity", [current], ["prediction"]))
        graph.output.remove(output)
        graph.output.append(helper.make_tensor_value_info("prediction", tensor.elem_type, ["batch", 1] if len(dims) == 2 else ["batch"]))
        return
    if len(dims) == 1:
        graph.initializer.append(helper.make_tensor("probabilities_axes", TensorProto.INT64, [1], [1]))
        graph.node.append(helper.make_node("Unsqueeze", [current, "probabilities_axes"], ["scores_2d"]))
        current, width = "scores_2d", 1
    if outputs == "logits":
        if width == 1:
            graph.node.append(helper.make_node("Sigmoid", [current], ["scores_probabilities"]))
        else:
            graph.node.append(helper.make_node("Softmax", [current], ["scores_probabilities"], axis=-1))
        current = "scores_probabilities"
    if width == 1:
        graph.initializer.append(helper.make_tensor("probabilities_one", tensor.elem_type, [], [1.0]))
        graph.node.append(helper.make_node("Sub", ["probabilities_one", current], ["probabilities_first"]))
        graph.node.append(helper.make_node("Concat", ["probabilities_first", current], ["probabilities"], axis=1))
    else:
        graph.node.append(helper.make_node("Identity", [current], ["probabilities"]))
    graph.output.remove(output)
    graph.output.append(helper.make_tensor_value_info("probabilities", tensor.elem_type, ["batch", width or None]))
