"""PyTorch classifiers and regressors as TorchScript: ``.pt`` archives written by ``torch.jit.save``, and
``torch.nn.Module`` objects, made TorchScript at registration.

What a model takes and returns. A TorchScript model takes one float32 ``[N, F]`` tensor
(float64 when its parameters are) and returns ``[N, C]`` (or ``[N]``) scores. TorchScript
records no feature names, so the features and their order are the reference data's
columns besides the target, unless the module has a ``feature_names`` attribute (a list of
strings, kept by ``torch.jit.script``): then the reference data must hold those columns,
and a missing one is an error naming it. Text features are refused: encode them inside
the network or before it. A model whose input width differs from the number of features
is refused, naming the features that have no input (or saying how many are missing).

What its outputs mean is decided once, at registration, on the reference rows (or, with
no reference data, on seeded made-up rows), and stored in ``ArtifactInfo.options``:

- ``[N, C]`` (C >= 2) whose rows lie in [0, 1] and sum to 1 (within 1e-4): probabilities,
  served as they are; otherwise logits (or log-probabilities), served through a softmax.
- One column (``[N, 1]`` or ``[N]``): the second class's score of a binary classifier. A
  logit (sigmoid applied) when any value is outside [0, 1], or when the graph's last
  operation is unbounded (a linear layer, a matmul, an add); otherwise a probability.
- One column and a target of numbers that are not class labels (some not whole, or more
  than two distinct values): a regressor, whose column is the predicted value.

The classes are, in this order: the module's ``classes`` attribute (a list of labels, one
per probability column); else the distinct labels of the reference data's target column,
sorted, when there are as many as the model has columns (the order ``LabelEncoder``,
``np.unique`` and ``pd.factorize(sort=True)`` give the codes a network is trained on);
else ``0 .. C-1`` when the labels are such codes. Other labels are an error asking for the
attribute, and a target of non-whole numbers for a model of several columns is refused. Where the classes
came from is recorded in the options too.

An ``nn.Module`` is compiled with ``torch.jit.script``, else traced with ``torch.jit.trace``
on rows of the reference data, in eval mode; the result must reproduce the module on the
reference rows (tracing silently fixes data-dependent branches) or registration fails.

Safe loading: a ``.pt`` file is opened as a zip archive and must hold TorchScript code
(``code/`` and ``constants.pkl``): TorchScript is loaded by TorchScript's own unpickler,
which builds tensors and TorchScript objects, never arbitrary Python. Files written by
``torch.save`` (a state dict, or a whole pickled module) are refused, with how to export
TorchScript; ``torch.load`` is used only with ``weights_only=True``, to tell the user which
of the two they gave.

At registration the model, with its softmax or sigmoid, is exported to ONNX with
``torch.onnx.export``'s TorchScript-based exporter (``dynamo=False``: the model is already
TorchScript, and the torch.export-based exporter needs the ``onnxscript`` package), and the
graph is served instead when its probabilities agree within 1e-5 on the check rows.
Otherwise the TorchScript model is served natively, on one intra-op thread (see ``load``).

``torch.export`` programs (``.pt2`` files from ``torch.export.save``, or ``ExportedProgram``
objects) are run as ``program.module()`` and traced into TorchScript on the reference rows,
checked like any traced module, then served (and exported to ONNX) as above: the
torch.export-based ONNX exporter needs ``onnxscript``, which modelmon does not depend on.
Export with a dynamic batch axis (``dynamic_shapes``), or the program refuses other batch
sizes. ``torch.export.load`` (torch 2.13) can run code from the file: it unpickles payloads
marked ``use_pickle`` in the weights or constants config (``torch.load(weights_only=False)``),
custom and opaque constant objects (``pickle.loads``), the sample inputs when
``weights_only=True`` fails on them, and everything in the pre-2.8 format (a root ``version``
entry), and it loads AOTInductor shared libraries (``data/aotinductor/``).
``check_export_archive`` reads the archive first and refuses all of these, and loads the
sample inputs with ``weights_only=True`` itself, so what ``torch.export.load`` then reads is
raw tensors and the JSON program, whose operators it looks up among torch's registered ops.

Recent torch deprecates ``torch.jit`` in favour of ``torch.export``; TorchScript archives
still load and run.
"""

from __future__ import annotations

import io
import json
import sys
import warnings
import weakref
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
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
    feature_columns,
    feature_specs_from_frame,
    python_label,
    regression_target,
)
from modelmon.runtimes.onnx import OnnxRuntime
from modelmon.types import ClassLabel, FeatureBatch, FeatureSpec, ModelOutput, Signature, Task

if TYPE_CHECKING:
    import pandas as pd

SUFFIXES = (".pt", ".pth", ".pt2")
FORMAT = "torchscript"
#: Largest absolute difference in any class probability for an exported graph to be kept.
ONNX_TOLERANCE = 1e-5
ONNX_OPSET = 17
#: Reference rows the outputs are decided on (and a module traced and checked on).
DECISION_ROWS = 2000
#: Rows the module is traced with (more than one, so no batch size of 1 is baked in).
TRACE_ROWS = 8
#: How far from 1 a row of probabilities may sum (float32 rounding over many classes).
SUM_TOLERANCE = 1e-4
#: How far a compiled module may differ from the module it was made from.
COMPILE_TOLERANCE = 1e-5

#: What a model's output columns are (``ArtifactInfo.options["output"]``).
PROBABILITIES = "probabilities"  # [N, C], C >= 2: served as they are
LOGITS = "logits"  # [N, C], C >= 2: softmax
PROBABILITY = "probability"  # one column, P(second class)
LOGIT = "logit"  # one column, the second class's logit: sigmoid
VALUE = "value"  # one column, a regressor's predicted value
OUTPUT_FORMS = (PROBABILITIES, LOGITS, PROBABILITY, LOGIT, VALUE)

#: Operations whose result is unbounded: a one-column output made by one is a logit even
#: when its values happen to lie in [0, 1] on the check rows.
_UNBOUNDED_OPS = frozenset(
    {"aten::linear", "aten::addmm", "aten::matmul", "aten::mm", "aten::bmm", "aten::add", "aten::sub",
     "aten::bilinear", "aten::mul"}
)
#: Operations that only reshape: looked through to find what made the output.
_SHAPE_OPS = frozenset(
    {"aten::squeeze", "aten::unsqueeze", "aten::view", "aten::reshape", "aten::flatten", "aten::contiguous"}
)

_EXPORT_ADVICE = (
    "Export TorchScript: torch.jit.save(torch.jit.script(model.eval()), 'model.pt') (or "
    "torch.jit.trace(model.eval(), example_batch)), or register the nn.Module object from "
    "Python (modelmon.register_model(model, ...)), which does that for you."
)


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What registration decided about one model: its TorchScript form and how to read its
    outputs."""

    script: Any  # a torch.jit.ScriptModule in eval mode
    output: str  # one of OUTPUT_FORMS
    rank: int  # 1 for an [N] output, 2 for [N, C]
    columns: int  # the output's columns (1 for an [N] output)
    input_dtype: str  # "float32" or "float64"
    compiled: str  # "file", "scripted" or "traced"
    decided: str  # why ``output`` was chosen
    classes_from: str

    @property
    def options(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "output_rank": self.rank,
            "input_dtype": self.input_dtype,
            "torchscript": self.compiled,
            "output_decided": self.decided,
            "classes_from": self.classes_from,
        }


#: Decisions made in ``infer_signature``, for ``wrap``, ``save`` and ``to_onnx`` of the same
#: registration (the seam passes them the model, not the reference data).
_PREPARED: weakref.WeakKeyDictionary[Any, _Prepared] = weakref.WeakKeyDictionary()


@register_runtime
class TorchRuntime(Runtime):
    """A TorchScript classifier or regressor, run by PyTorch."""

    name = "torch"
    suffixes = SUFFIXES
    extra = "torch"

    def __init__(
        self, model: Any, signature: Signature, *, output: str = LOGITS, rank: int = 2, input_dtype: str = "float32"
    ) -> None:
        if output not in OUTPUT_FORMS:
            raise RegistryError(f"unknown torch output form {output!r}; known: {OUTPUT_FORMS}")
        super().__init__(model, signature)
        if signature.categorical_features:
            raise RegistryError(_text_refusal([f.name for f in signature.categorical_features]))
        self._torch = self.require("torch")
        self.output = output
        self.rank = rank
        self._dtype = np.float64 if input_dtype == "float64" else np.float32
        self._width = len(signature.class_labels)

    def raw_output(self, batch: FeatureBatch) -> np.ndarray:
        """The model's own output for ``batch``, as float64 ``[N, columns]``."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(batch.numeric, dtype=self._dtype))
        with torch.inference_mode():
            out = self.model(x)
        return _as_matrix(torch, out, batch.n_rows)

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        proba = probabilities(self.raw_output(batch), self.output)
        if proba.shape[1] != self._width:
            raise ValueError(f"the model returned {proba.shape[1]} class columns, expected {self._width}")
        return proba

    def predict_values(self, batch: FeatureBatch) -> np.ndarray:
        """A regressor's predictions."""
        return self.raw_output(batch)[:, 0]

    def predict(self, batch: FeatureBatch) -> ModelOutput:
        if self.output == VALUE:
            return ModelOutput.from_values(self.predict_values(batch))
        return ModelOutput.from_probabilities(self.predict_proba(batch))

    # -- registration ------------------------------------------------------------------

    @classmethod
    def recognises(cls, model: Any) -> bool:
        """A ``torch.nn.Module`` (TorchScript modules included), but not a Keras model or
        layer running on Keras' torch backend, whose classes are torch Modules too. torch is
        not imported here: an object cannot be a torch Module unless torch is loaded."""
        torch = sys.modules.get("torch")
        if torch is None:
            return False
        if isinstance(model, torch.export.ExportedProgram):
            return True
        if not isinstance(model, torch.nn.Module):
            return False
        return not any(k.__module__.split(".")[0] == "keras" for k in type(model).__mro__)

    @classmethod
    def read(cls, path: Path, options: ReadOptions) -> Any:
        """A TorchScript archive, loaded on the CPU; anything written by ``torch.save`` is
        refused (``--trust-pickle`` does not apply: TorchScript is the safe format)."""
        torch = cls.require("torch")
        if path.suffix == ".pt2":
            check_export_archive(path, torch)
            try:
                return torch.export.load(str(path))
            except Exception as exc:  # a damaged archive, or one from another torch
                raise RegistryError(f"{path.name}: torch.export.load failed: {exc}") from exc
        check_torchscript_archive(path, torch)
        try:
            with _jit_quietly():
                module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:  # a damaged archive, or one from a newer torch
            raise RegistryError(f"{path.name}: torch.jit.load failed: {exc}") from exc
        return module.eval()

    @classmethod
    def infer_signature(
        cls, model: Any, reference: pd.DataFrame | None, target: str | None, text_columns: TextColumns
    ) -> Signature:
        torch = cls.require("torch")
        if text_columns:
            raise RegistryError(_text_refusal(sorted(text_columns)))
        recorded = _recorded_labels(model, "feature_names")
        if recorded is not None:
            names = [str(n) for n in recorded]
        elif reference is not None:
            names = feature_columns(reference, target)
        else:
            raise RegistryError(
                "a PyTorch model records no feature names: pass reference data (--reference) with "
                "one column per input, in the model's input order (and --target for the label "
                "column), or give the module a feature_names attribute"
            )
        if not names:
            raise RegistryError("the reference data has no feature column besides the target")
        if reference is not None:
            specs = feature_specs_from_frame(reference, names)  # names a missing feature
            text = [s.name for s in specs if s.is_categorical]
            if text:
                raise RegistryError(_text_refusal(text))
            rows = _reference_rows(reference, specs)
        else:
            specs = [FeatureSpec(name=n, dtype="float64") for n in names]
            rows = np.random.default_rng(0).standard_normal((256, len(names)))
        prepared = _prepare(torch, _as_module(torch, model), rows, names, target)
        if prepared.columns == 1 and regression_target(reference, target):
            decided = f"one column, and the target {target!r} holds numbers that are not class labels: a regressor's value"
            prepared = replace(prepared, output=VALUE, decided=decided, classes_from="none (regression)")
            _remember(model, prepared)
            return Signature(features=specs, task=Task.REGRESSION, input_layout="matrix")
        width = 2 if prepared.columns == 1 else prepared.columns
        classes, classes_from = _classes(_as_module(torch, model), prepared.script, width, reference, target)
        prepared = replace(prepared, classes_from=classes_from)
        _remember(model, prepared)
        return Signature(features=specs, task=Task.for_classes(classes), classes=classes, input_layout="matrix")

    @classmethod
    def wrap(cls, model: Any, signature: Signature) -> TorchRuntime:
        prepared = _prepared_for(cls, model, signature)
        return cls(
            prepared.script, signature, output=prepared.output, rank=prepared.rank, input_dtype=prepared.input_dtype
        )

    @classmethod
    def save(cls, model: Any, source: Path | None, directory: Path) -> ArtifactInfo:
        torch = cls.require("torch")
        prepared = _PREPARED.get(model)
        if prepared is None:
            raise RegistryError("the torch runtime saves a model only after infer_signature decided its outputs")
        path = directory / "model.pt"
        with _jit_quietly():
            torch.jit.save(prepared.script, str(path))
        return artifact_for(path, FORMAT, options=prepared.options)

    @classmethod
    def load(cls, path: Path, artifact: ArtifactInfo, signature: Signature) -> TorchRuntime:
        """The TorchScript model on the CPU, for serving.

        One intra-op thread (``torch.set_num_threads(1)``), as ONNX Runtime is given: a
        replica is one process on a machine it shares, its batcher already runs calls in a
        thread pool, and the small batches it sends gain nothing from a pool of threads per
        call but pay for their wake-ups and for oversubscribing the cores (replicas x
        threads). Scale out with replicas instead."""
        if artifact.format != FORMAT:
            raise RegistryError(f"the torch runtime cannot load a {artifact.format!r} artifact")
        torch = cls.require("torch")
        check_torchscript_archive(path, torch)
        torch.set_num_threads(1)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # only settable before the first inter-op work in the process
            pass
        with _jit_quietly():
            module = torch.jit.load(str(path), map_location="cpu").eval()
        options = artifact.options
        return cls(
            module,
            signature,
            output=str(options.get("output", LOGITS)),
            rank=int(options.get("output_rank", 2)),
            input_dtype=str(options.get("input_dtype", "float32")),
        )

    @classmethod
    def to_onnx(
        cls, model: Any, signature: Signature, check_data: FeatureBatch
    ) -> tuple[bytes | None, OnnxCheck]:
        """The model with its softmax or sigmoid, as an ONNX graph taking one ``[N, F]``
        input and returning ``[N, C]`` probabilities, kept when it agrees within 1e-5."""
        torch = cls.require("torch")
        if check_data.n_rows == 0:
            return None, OnnxCheck(used=False, reason="no reference or validation data to verify on")
        native = cls.wrap(model, signature)
        prepared = _prepared_for(cls, model, signature)
        try:
            graph = export_onnx(torch, prepared, len(signature.features))
            converted = OnnxRuntime(graph, signature)
        except Exception as exc:  # the exporter raises many types for unsupported operations
            return None, OnnxCheck(used=False, reason=f"export failed: {type(exc).__name__}: {exc}"[:500])
        rows = check_data.n_rows
        regression = signature.task is Task.REGRESSION
        try:
            if regression:
                expected, actual = native.predict_values(check_data), converted.predict_values(check_data)
            else:
                expected, actual = native.predict_proba(check_data), converted.predict_proba(check_data)
        except Exception as exc:
            return None, OnnxCheck(used=False, reason=f"exported graph failed: {exc}"[:500])
        if actual.shape != expected.shape:
            return None, OnnxCheck(used=False, reason=f"output shape {actual.shape} differs from {expected.shape}")
        difference = float(np.max(np.abs(actual - expected))) if rows else 0.0
        # A regressor's values: the tolerance scales with their magnitude, as for the tree runtimes.
        allowed = ONNX_TOLERANCE * max(1.0, float(np.max(np.abs(expected)))) if regression and rows else ONNX_TOLERANCE
        if not np.isfinite(difference) or difference > allowed:
            return None, OnnxCheck(
                used=False,
                rows_compared=rows,
                max_abs_difference=difference if np.isfinite(difference) else None,
                reason=f"{'predictions' if regression else 'probabilities'} differ by {difference:.3g} > {allowed:.3g}",
            )
        return graph, OnnxCheck(used=True, rows_compared=rows, max_abs_difference=difference)


# -- reading outputs ---------------------------------------------------------------------


def probabilities(raw: np.ndarray, output: str) -> np.ndarray:
    """Class probabilities ``[N, C]`` (float64) from a model's raw ``[N, columns]`` output."""
    if output == PROBABILITIES:
        return raw
    with np.errstate(invalid="ignore"):  # a missing value gives NaN, which registration probes
        if output == LOGITS:
            shifted = raw - raw.max(axis=1, keepdims=True)
            exp = np.exp(shifted)
            return np.asarray(exp / exp.sum(axis=1, keepdims=True))
        column = raw[:, 0]
        if output == LOGIT:
            column = np.exp(-np.logaddexp(0.0, -column))  # the sigmoid, without overflow
        return np.column_stack([1.0 - column, column])


def _as_matrix(torch: Any, out: Any, rows: int) -> np.ndarray:
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"the model returned a {type(out).__name__}, not one [N, C] tensor")
    if out.dim() == 1:
        out = out.unsqueeze(1)
    if out.dim() != 2 or out.shape[0] != rows:
        raise ValueError(f"the model returned shape {tuple(out.shape)} for {rows} rows, not [N, C]")
    return np.asarray(out.detach().to(torch.float64).numpy())


def decide_output(raw: np.ndarray, last_op: str | None) -> tuple[str, str]:
    """Whether a model's raw outputs (finite, ``[N, columns]``) are probabilities or logits,
    and why."""
    n = raw.shape[0]
    low, high = float(raw.min()), float(raw.max())
    inside = low >= 0.0 and high <= 1.0
    if raw.shape[1] == 1:
        if not inside:
            return LOGIT, f"one column with values in [{low:.3g}, {high:.3g}] on {n} rows: the second class's logit"
        if last_op in _UNBOUNDED_OPS:
            return LOGIT, (
                f"one column, in [0, 1] on {n} rows but made by {last_op} (unbounded): the second class's logit"
            )
        made_by = f", made by {last_op}" if last_op else ""
        return PROBABILITY, f"one column with values in [0, 1] on {n} rows{made_by}: the second class's probability"
    off = float(np.max(np.abs(raw.sum(axis=1) - 1.0)))
    if inside and off <= SUM_TOLERANCE:
        return PROBABILITIES, f"rows in [0, 1] summing to 1 (within {off:.2g}) on {n} rows: probabilities"
    return LOGITS, (
        f"rows in [{low:.3g}, {high:.3g}], sums off 1 by up to {off:.3g} on {n} rows: logits (softmax applied)"
    )


def last_operation(script: Any) -> str | None:
    """The TorchScript operation that makes the model's output, looking through reshapes
    (None when the graph cannot be read)."""
    try:
        graph = script.inlined_graph  # kept in a variable: its nodes die with it
        value = next(iter(graph.return_node().inputs()))
        node = value.node()
        for _ in range(20):
            if node.kind() not in _SHAPE_OPS:
                break
            node = next(iter(node.inputs())).node()
        return str(node.kind())
    except Exception:  # a graph without a plain return value; then the values decide
        return None


# -- registration helpers ----------------------------------------------------------------


def _prepare(torch: Any, model: Any, rows: np.ndarray, names: list[str], target: str | None) -> _Prepared:
    """The model as TorchScript, checked to take ``len(names)`` features and to answer
    finitely, with its output decided on ``rows`` (float64 ``[n, F]``, NaN-free rows used)."""
    for parameter in model.parameters():
        if parameter.device.type != "cpu":
            raise RegistryError(
                f"the model's parameters are on {parameter.device}: move it to the CPU (model.cpu()) to register it"
            )
    floating = [p.dtype for p in model.parameters() if p.is_floating_point()]
    input_dtype = "float64" if floating and floating[0] == torch.float64 else "float32"
    complete = rows[~np.isnan(rows).any(axis=1)][:DECISION_ROWS]
    if len(complete) == 0:
        raise RegistryError("no row of the reference data is complete (every row has a missing value)")
    x = torch.from_numpy(np.ascontiguousarray(complete, dtype=np.float64 if input_dtype == "float64" else np.float32))

    was_training = bool(model.training)
    try:
        model.eval()
    except NotImplementedError:  # a torch.export program's module: its mode was fixed at export
        was_training = False
    try:
        expected = _run_on_features(torch, model, x, names, target)
        if isinstance(model, torch.jit.ScriptModule):
            script, compiled = model, "file"
        else:
            script, compiled = _compile(torch, model, x[:TRACE_ROWS], expected, x)
    finally:
        if was_training:
            model.train()
    script.eval()
    raw = _as_matrix(torch, expected, len(complete))
    if not np.isfinite(raw).all():
        raise RegistryError("the model returned NaN or infinity on the reference rows")
    output, decided = decide_output(raw, last_operation(script))
    return _Prepared(
        script=script, output=output, rank=int(expected.dim()), columns=raw.shape[1], input_dtype=input_dtype,
        compiled=compiled, decided=decided, classes_from="",
    )


def _as_module(torch: Any, model: Any) -> Any:
    """An ``nn.Module`` for ``model``: a ``torch.export`` program's module (traced into
    TorchScript by ``_prepare``), else the model itself."""
    if isinstance(model, torch.export.ExportedProgram):
        try:
            return model.module()
        except Exception as exc:
            raise RegistryError(f"cannot run the torch.export program: {type(exc).__name__}: {exc}") from exc
    return model


def _run_on_features(torch: Any, model: Any, x: Any, names: list[str], target: str | None) -> Any:
    """The model's output on ``x``; when it cannot take that many features, an error that
    names the features it has no input for."""
    try:
        with torch.inference_mode():
            out = model(x)
    except Exception as exc:
        width = _input_width(torch, model, x.dtype)
        if width is not None and width < len(names):
            hint = " (if the reference data holds the label column, name it with --target)" if target is None else ""
            raise RegistryError(
                f"the model takes {width} input columns but there are {len(names)} features: feature(s) "
                f"{names[width:]} have no input in the model{hint}. The features are the reference "
                "data's columns besides the target, in order."
            ) from exc
        if width is not None and width > len(names):
            raise RegistryError(
                f"the model takes {width} input columns but the reference data has {len(names)} features "
                f"({names}): {width - len(names)} feature(s) after {names[-1]!r} are missing from it"
            ) from exc
        # A torch.export program checks the shapes it was exported with ("Guard failed").
        fixed = " (export the program with a dynamic batch axis: dynamic_shapes)" if "Guard failed" in str(exc) else ""
        raise RegistryError(
            f"the model failed on a float [N, {len(names)}] batch of the reference data's features "
            f"{names[:20]}: {type(exc).__name__}: {exc}{fixed}"
        ) from exc
    if not isinstance(out, torch.Tensor) or out.dim() not in (1, 2) or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise RegistryError(
            f"the model returned {shape} for {x.shape[0]} rows: modelmon serves a classifier that "
            "returns one [N, C] tensor of logits or probabilities"
        )
    return out


def _input_width(torch: Any, model: Any, dtype: Any) -> int | None:
    """How many input columns the model takes: the first layer with ``in_features`` that the
    model then runs with (None when no such layer tells)."""
    for module in model.modules():
        width = getattr(module, "in_features", None)
        if isinstance(width, int) and width > 0:
            try:
                with torch.inference_mode():
                    model(torch.zeros((2, width), dtype=dtype))
            except Exception:
                return None
            return width
    return None


def _compile(torch: Any, module: Any, example: Any, expected: Any, x: Any) -> tuple[Any, str]:
    """TorchScript of an eval-mode ``module``: scripted, else traced on ``example``; either
    must give the module's outputs (``expected``) on ``x``."""
    try:
        with _jit_quietly():
            script, compiled = torch.jit.script(module), "scripted"
    except Exception as script_error:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TracerWarnings: the check below decides
                script, compiled = torch.jit.trace(module, example, check_trace=False), "traced"
        except Exception as trace_error:
            raise RegistryError(
                f"cannot make TorchScript of {type(module).__name__}: torch.jit.script failed "
                f"({type(script_error).__name__}: {str(script_error)[:300]}) and torch.jit.trace "
                f"failed ({type(trace_error).__name__}: {str(trace_error)[:300]})"
            ) from trace_error
    with torch.inference_mode():
        got = script(x)
    same = (
        isinstance(got, torch.Tensor)
        and got.shape == expected.shape
        and bool(torch.allclose(got, expected, rtol=COMPILE_TOLERANCE, atol=COMPILE_TOLERANCE))
    )
    if not same:
        raise RegistryError(
            f"the {compiled} TorchScript of {type(module).__name__} does not reproduce the module on "
            "the reference rows (tracing fixes data-dependent branches and shapes): make the module "
            "scriptable (torch.jit.script) and register it, or its TorchScript file"
        )
    return script, compiled


def _classes(
    model: Any, script: Any, width: int, reference: pd.DataFrame | None, target: str | None
) -> tuple[list[ClassLabel], str]:
    """The class labels, one per probability column, and where they came from."""
    recorded = _recorded_labels(model, "classes")
    if recorded is None:
        recorded = _recorded_labels(script, "classes")
    if recorded is not None:
        if len(recorded) != width:
            raise RegistryError(
                f"the model's classes attribute names {len(recorded)} classes but it has {width} "
                f"probability columns: {recorded[:10]}"
            )
        return [python_label(c) for c in recorded], "the model's classes attribute"
    if reference is not None and target is not None and target in reference.columns:
        import pandas as pd

        column = reference[target].dropna()
        labels = [python_label(v) for v in column.unique()]
        try:
            labels = sorted(labels)  # one column holds one kind of label
        except TypeError:
            labels = sorted(labels, key=str)
        if len(labels) == width:
            return labels, f"the sorted labels of {target!r}"
        values = column.to_numpy()
        if pd.api.types.is_float_dtype(column.dtype) and not np.array_equal(values, np.round(values)):
            raise RegistryError(
                f"the target {target!r} holds numbers that are not class labels: modelmon serves "
                "PyTorch regressors with one output column only"
            )
        if not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < width for c in labels):
            raise RegistryError(
                f"the target {target!r} has {len(labels)} labels ({labels[:10]}) but the model has "
                f"{width} probability columns: give the module a classes attribute listing the label "
                "of each column"
            )
    return list(range(width)), "the output columns (0 .. C-1)"


def _recorded_labels(model: Any, attribute: str) -> list[Any] | None:
    """A list of labels the module records as ``attribute`` (None when it has none)."""
    try:
        value = getattr(model, attribute, None)
    except Exception:  # a TorchScript attribute of a type Python cannot hold
        return None
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, (str, int)) for v in value):
        return list(value)
    return None


def _reference_rows(reference: pd.DataFrame, specs: list[FeatureSpec]) -> np.ndarray:
    probe = Signature(features=specs, task=Task.BINARY, classes=[0, 1], input_layout="matrix")
    return FeatureBatch.from_frame(reference.head(DECISION_ROWS * 2), probe).numeric


def _remember(model: Any, prepared: _Prepared) -> None:
    _PREPARED[model] = prepared
    _PREPARED[prepared.script] = prepared


def _prepared_for(cls: type[TorchRuntime], model: Any, signature: Signature) -> _Prepared:
    """What registration decided about ``model``; decided now on made-up rows when the
    model comes without ``infer_signature`` (a caller wrapping a TorchScript module)."""
    prepared = _PREPARED.get(model)
    if prepared is None:
        torch = cls.require("torch")
        names = signature.feature_names
        rows = np.random.default_rng(0).standard_normal((256, len(names)))
        prepared = _prepare(torch, _as_module(torch, model), rows, names, None)
        _remember(model, prepared)
    return prepared


@contextmanager
def _jit_quietly() -> Iterator[None]:
    """torch.jit's deprecation notices (recent torch points to torch.export), silenced where
    modelmon, not the user, calls it: the user asked to register a model, not to script it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*torch\.jit")
        yield


def _text_refusal(columns: list[str]) -> str:
    return (
        f"a PyTorch model takes one float [N, F] tensor, so it cannot take the text column(s) "
        f"{columns}: encode them as numbers before registering (and serving), or inside the network"
    )


# -- files -------------------------------------------------------------------------------


def check_torchscript_archive(path: Path, torch: Any) -> None:
    """Refuse, with the reason and how to export TorchScript, a file that is not a
    TorchScript archive. Reads the zip's directory only; a ``torch.save`` file is opened
    with ``torch.load(weights_only=True)`` only to say whether it holds weights or a
    pickled module."""
    if not zipfile.is_zipfile(path):
        with path.open("rb") as f:
            head = f.read(2)
        what = "a pickle (torch.save's legacy format)" if head[:1] == b"\x80" else "not a TorchScript archive"
        raise RegistryError(f"{path.name} is {what}: loading a pickle runs any code it contains. {_EXPORT_ADVICE}")
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any("/code/" in n for n in names) and any(n.endswith("/constants.pkl") for n in names):
        return
    if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
        raise RegistryError(
            f"{path.name} looks like a torch.export program: name it .pt2 to register it as one. " + _EXPORT_ADVICE
        )
    if any(n.endswith("/data.pkl") for n in names):
        raise RegistryError(f"{path.name} was written by torch.save: {_saved_contents(path, torch)}. {_EXPORT_ADVICE}")
    raise RegistryError(f"{path.name} is a zip archive but not TorchScript. {_EXPORT_ADVICE}")


def check_export_archive(path: Path, torch: Any) -> None:
    """Refuse a ``.pt2`` file that ``torch.export.load`` would unpickle code from (see the
    module docstring): anything but a zip archive of ``models/*.json`` programs whose weights
    and constants are raw tensors, and whose sample inputs load with ``weights_only=True``."""
    unsafe = "loading it would unpickle (run code from) the file, so modelmon does not"
    if not zipfile.is_zipfile(path):
        raise RegistryError(f"{path.name} is not a torch.export archive (torch.export.save writes a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            models = [n for n in names if "/models/" in n and n.endswith(".json")]
            if not models or not any(n.endswith("/archive_format") for n in names):
                raise RegistryError(
                    f"{path.name} is not a torch.export archive (no models/*.json program): "
                    "write it with torch.export.save(torch.export.export(model, ...), 'model.pt2')"
                )
            native = [n for n in names if "/data/aotinductor/" in n]
            if native:  # torch.export.load would dlopen them: native code from the file
                raise RegistryError(f"{path.name} holds AOTInductor-compiled code ({native[0]}), which loading runs")
            if "version" in names:  # torch.export.load's fallback to the pre-2.8 format unpickles
                raise RegistryError(f"{path.name} is in torch's older export format: {unsafe}")
            for model in models:
                root, _, tail = model.rpartition("/models/")
                name = tail[: -len(".json")]
                base = f"{root}/data"
                for kind in ("weights", "constants"):
                    if f"{base}/{kind}/{name}.pt" in names:  # the legacy format: one pickle
                        raise RegistryError(f"{path.name} holds its {kind} in torch's legacy pickled form: {unsafe}")
                    config = json.loads(archive.read(f"{base}/{kind}/{name}_{kind}_config.json"))
                    for fqn, entry in config.get("config", {}).items():
                        pickled = entry.get("use_pickle") or (
                            kind == "constants" and not str(entry.get("path_name", "")).startswith("tensor_")
                        )
                        if pickled:
                            raise RegistryError(f"{path.name}: {kind[:-1]} {fqn!r} is a pickled object: {unsafe}")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.load(io.BytesIO(archive.read(f"{base}/sample_inputs/{name}.pt")), weights_only=True)
    except RegistryError:
        raise
    except Exception as exc:  # a missing member, bad JSON, or sample inputs that are not tensors
        raise RegistryError(
            f"{path.name} is not a well-formed torch.export archive ({type(exc).__name__}: {str(exc)[:300]}); "
            f"if it holds pickled objects, {unsafe}"
        ) from exc


def _saved_contents(path: Path, torch: Any) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return (
            "it holds pickled Python objects (a whole nn.Module, say), and loading them runs code "
            "from the file, so modelmon does not (--trust-pickle does not change that)"
        )
    return "it holds tensors only (a state dict): the weights without the network that uses them"


def export_onnx(torch: Any, prepared: _Prepared, features: int) -> bytes:
    """The TorchScript model followed by its softmax or sigmoid, exported by the
    TorchScript-based exporter with a dynamic batch axis."""

    class Probabilities(torch.nn.Module):
        __constants__ = ("form", "column")

        def __init__(self, inner: Any, form: str, column: bool) -> None:
            super().__init__()
            self.inner = inner
            self.form = form
            self.column = column

        # Not annotated: TorchScript takes an unannotated argument as a Tensor.
        def forward(self, x):
            out = self.inner(x)
            if self.column:
                out = out.unsqueeze(1)
            if self.form == "logits":
                return torch.softmax(out, 1)
            if self.form == "logit":
                p = torch.sigmoid(out)
                return torch.cat([1 - p, p], 1)
            if self.form == "probability":
                return torch.cat([1 - out, out], 1)
            return out

    with _jit_quietly():
        wrapper = torch.jit.script(Probabilities(prepared.script, prepared.output, prepared.rank == 1)).eval()
    dtype = torch.float64 if prepared.input_dtype == "float64" else torch.float32
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.export(
            wrapper,
            (torch.zeros((2, features), dtype=dtype),),
            buffer,
            dynamo=False,
            input_names=["input"],
            output_names=["probabilities"],
            dynamic_axes={"input": {0: "N"}, "probabilities": {0: "N"}},
            opset_version=ONNX_OPSET,
        )
    return buffer.getvalue()
