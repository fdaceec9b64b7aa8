"""Checking request data against a model's signature and turning it into a FeatureBatch.

Every rejection names the feature and the problem, and carries a reason from the bounded
set in ``modelmon.errors`` so it can be counted.
"""

from __future__ import annotations

import array
import math
from typing import Any

import numpy as np

from modelmon.errors import InvalidInputError
from modelmon.serving.codecs import NUMERIC_DATATYPES, TensorInput
from modelmon.types import FeatureBatch, FeatureSpec, Signature

#: Each V2 integer datatype's range (V2 protocol, "Tensor Data Types"). Binary data and gRPC's
#: typed contents hold only values of their type; a JSON number can be anything, so it is checked.
INT_RANGES: dict[str, tuple[int, int]] = {
    "INT8": (-(2**7), 2**7 - 1), "INT16": (-(2**15), 2**15 - 1),
    "INT32": (-(2**31), 2**31 - 1), "INT64": (-(2**63), 2**63 - 1),
    "UINT8": (0, 2**8 - 1), "UINT16": (0, 2**16 - 1), "UINT32": (0, 2**32 - 1), "UINT64": (0, 2**64 - 1),
}
#: The datatypes whose JSON values are checked against the type (FP takes any number).
_TYPED_JSON = frozenset(INT_RANGES) | {"BOOL"}
#: A numeric feature's values travel as float64 and are cast to the model's type: each must be
#: ``low <= value < high``, and whole for an integer or bool feature (2**63 - 1 itself rounds up
#: to 2**63 in float64, which the cast to int64 would wrap to -2**63). A bool feature takes
#: true/false, which arrive as 1.0/0.0, so 0 and 1 only. A float32 feature takes the magnitudes
#: the cast keeps finite: below 2**128 - 2**103, half a float32 step above float32's largest,
#: from where round-to-nearest makes them infinite (below it, they round to the largest, so
#: 3.4028235e38, the largest as numpy, Java and Go print it, is taken).
_FP32_OVERFLOW = 2.0**128 - 2.0**103
FEATURE_BOUNDS: dict[str, tuple[float, float]] = {
    "int64": (-(2.0**63), 2.0**63), "int32": (-(2.0**31), 2.0**31), "bool": (0.0, 2.0),
    "float32": (math.nextafter(-_FP32_OVERFLOW, 0.0), _FP32_OVERFLOW),
}


class RequestValidator:
    """Built once per model version; knows where each feature goes in the batch."""

    def __init__(self, signature: Signature, max_rows: int) -> None:
        self.signature = signature
        self.max_rows = max_rows
        self.specs = {f.name: f for f in signature.features}
        numeric = signature.numeric_features
        self.numeric_names = [f.name for f in numeric]
        self.numeric_index = {f.name: i for i, f in enumerate(numeric)}
        self.categorical_index = {f.name: j for j, f in enumerate(signature.categorical_features)}
        self.all_numeric = not signature.categorical_features
        self.numeric_nullable = np.array([f.nullable for f in numeric])
        # JSON true/false is a value of a bool feature only (V2's BOOL is its own datatype,
        # and labels refuse booleans too): the numeric columns where a boolean is refused.
        self.strict_columns = [i for i, f in enumerate(numeric) if f.dtype != "bool"]
        self.strict_names = {self.numeric_names[i] for i in self.strict_columns}
        self.all_strict = len(self.strict_columns) == len(numeric)
        self.all_bool = bool(numeric) and not self.strict_columns
        # The features whose values the cast to their type could change (float64 pays nothing):
        # integer and bool ones checked a column at a time, float32 ones all in one pass.
        bounded = [(i, f.name, f.dtype, *FEATURE_BOUNDS[f.dtype]) for i, f in enumerate(numeric) if f.dtype in FEATURE_BOUNDS]
        self.bounded_columns = [c for c in bounded if c[2] != "float32"]
        self.fp32_columns = [c for c in bounded if c[2] == "float32"]

    # -- Open Inference Protocol ------------------------------------------------------

    def from_tensors(self, inputs: list[TensorInput]) -> FeatureBatch:
        if len(inputs) == 1 and inputs[0].name not in self.specs:
            return self._from_matrix(inputs[0])
        return self._from_columns(inputs)

    def _from_matrix(self, tensor: TensorInput) -> FeatureBatch:
        width = len(self.signature.features)
        if len(tensor.shape) != 2 or tensor.shape[1] != width:
            if width == 1 or len(tensor.shape) != 2:
                raise InvalidInputError(
                    f"input {tensor.name!r} is not a feature of this model; send one input per "
                    f"feature ({self.signature.feature_names}) or one [N, {width}] tensor",
                    reason="unknown_feature" if len(tensor.shape) == 1 else "wrong_shape",
                )
            raise InvalidInputError(
                f"input {tensor.name!r} has shape {tensor.shape}; this model takes "
                f"[N, {width}] (features {self.signature.feature_names})",
                reason="wrong_shape",
            )
        if not self.all_numeric:
            raise InvalidInputError(
                "this model has categorical features "
                f"({[f.name for f in self.signature.categorical_features]}): send one input "
                "per feature, with BYTES for the categorical ones",
                reason="wrong_shape",
            )
        if tensor.datatype not in NUMERIC_DATATYPES or (tensor.datatype == "BOOL" and not self.all_bool):
            raise InvalidInputError(
                f"input {tensor.name!r}: datatype {tensor.datatype} but every feature of this "
                "model is numeric (use FP32, FP64 or an integer type)",
                reason="wrong_datatype",
            )
        rows = tensor.shape[0]
        self._check_rows(rows)
        names = self.numeric_names
        values = _numeric_array(tensor.data, tensor.name, names)
        if values.size != rows * width:
            raise InvalidInputError(
                f"input {tensor.name!r}: shape {tensor.shape} needs {rows * width} values, "
                f"got {values.size}",
                reason="wrong_shape",
            )
        if type(tensor.data) is list:
            if tensor.datatype in _TYPED_JSON:
                _check_json_numbers(tensor.datatype, tensor.data, values, tensor.name, names)
            if self.all_strict:
                if _has_zero_or_one(values):
                    _find_booleans(tensor.data, values, tensor.name, names, None)
            elif self.strict_columns:
                strict = values.reshape(rows, width)[:, self.strict_columns]
                if _has_zero_or_one(strict):
                    _find_booleans(tensor.data, values, tensor.name, names, set(self.strict_columns))
        numeric = values.reshape(rows, width)
        self._check_numeric(numeric, names)
        return FeatureBatch(numeric=numeric, categorical=np.empty((rows, 0), dtype=object))

    def _from_columns(self, inputs: list[TensorInput]) -> FeatureBatch:
        by_name: dict[str, TensorInput] = {}
        for tensor in inputs:
            if tensor.name not in self.specs:
                raise InvalidInputError(
                    f"unknown feature {tensor.name!r}; this model's features are "
                    f"{self.signature.feature_names}",
                    reason="unknown_feature",
                )
            if tensor.name in by_name:
                raise InvalidInputError(f"feature {tensor.name!r} is sent twice", reason="wrong_shape")
            by_name[tensor.name] = tensor
        missing = [name for name in self.specs if name not in by_name]
        if missing:
            raise InvalidInputError(f"missing feature(s) {missing}", reason="missing_feature")
        rows = None
        for tensor in inputs:
            if len(tensor.shape) not in (1, 2) or (len(tensor.shape) == 2 and tensor.shape[1] != 1):
                raise InvalidInputError(
                    f"feature {tensor.name!r} has shape {tensor.shape}; a feature input is [N] or [N, 1]",
                    reason="wrong_shape",
                )
            if rows is None:
                rows = tensor.shape[0]
            elif tensor.shape[0] != rows:
                raise InvalidInputError(
                    f"feature {tensor.name!r} has {tensor.shape[0]} rows but {inputs[0].name!r} has {rows}",
                    reason="wrong_shape",
                )
        assert rows is not None
        self._check_rows(rows)
        columns: dict[str, Any] = {}
        json_columns = False
        for name, tensor in by_name.items():
            spec = self.specs[name]
            datatype = tensor.datatype
            if spec.is_categorical:
                if datatype != "BYTES":
                    raise InvalidInputError(
                        f"feature {name!r} is categorical: send it as BYTES, not {datatype}",
                        reason="wrong_datatype",
                    )
            elif datatype not in NUMERIC_DATATYPES or (datatype == "BOOL" and spec.dtype != "bool"):
                raise InvalidInputError(
                    f"feature {name!r} is numeric ({spec.dtype}): send it as FP32, FP64 or an "
                    f"integer type, not {datatype}",
                    reason="wrong_datatype",
                )
            data = tensor.data
            # A numeric column is a flat list of numbers, as JSON decodes [N], or nested [N, 1]:
            # counting through every value (any() over the column, ~2.5 us a column) is left to
            # nested data; a list nested further down is refused as ragged by the conversion.
            if type(data) is list and not spec.is_categorical:
                json_columns = True
                size = _flat_length(data) if data and type(data[0]) is list else len(data)
            else:
                size = data.size if isinstance(data, np.ndarray) else _flat_length(data)
            if size != rows:
                raise InvalidInputError(
                    f"feature {name!r}: shape {tensor.shape} needs {rows} values, got {size}",
                    reason="wrong_shape",
                )
            columns[name] = data
        numeric, categorical = self._fill(columns, rows)
        if json_columns:
            for name, tensor in by_name.items():
                if type(tensor.data) is list and tensor.datatype in _TYPED_JSON:
                    column = numeric[:, self.numeric_index[name]]
                    _check_json_numbers(tensor.datatype, tensor.data, column, name, None)
            strict = numeric if self.all_strict else numeric[:, self.strict_columns]
            if _has_zero_or_one(strict):
                for i in self.strict_columns:
                    data = columns[self.numeric_names[i]]
                    if type(data) is list:
                        _refuse_booleans(data, numeric[:, i], self.numeric_names[i], None)
        self._check_numeric(numeric, self.numeric_names)
        return FeatureBatch(numeric=numeric, categorical=categorical)

    # -- records (v1) -----------------------------------------------------------------

    def from_records(self, instances: Any) -> FeatureBatch:
        if not isinstance(instances, list) or not instances:
            raise InvalidInputError(
                "'instances' must be a non-empty list of objects, one per row", reason="wrong_shape"
            )
        self._check_rows(len(instances))
        columns: dict[str, list[Any]] = {name: [] for name in self.specs}
        for row_number, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise InvalidInputError(
                    f"instances[{row_number}] must be an object of feature: value",
                    reason="wrong_shape",
                )
            if len(instance) != len(self.specs) or any(k not in self.specs for k in instance):
                unknown = [k for k in instance if k not in self.specs]
                if unknown:
                    raise InvalidInputError(
                        f"instances[{row_number}]: unknown feature(s) {unknown}; this model's "
                        f"features are {self.signature.feature_names}",
                        reason="unknown_feature",
                    )
                missing = [k for k in self.specs if k not in instance]
                raise InvalidInputError(
                    f"instances[{row_number}]: missing feature(s) {missing}",
                    reason="missing_feature",
                )
            for name, value in instance.items():
                # A float, the usual value, takes one identity test; others are looked at.
                if type(value) is not float:
                    if isinstance(value, list):
                        raise InvalidInputError(
                            f"instances[{row_number}]: feature {name!r} must be a single value, "
                            "not a list",
                            reason="wrong_shape",
                        )
                    if type(value) is bool and name in self.strict_names:  # a categorical one says so later
                        raise _boolean_error(value, f"feature {name!r}", row_number)
                columns[name].append(value)
        numeric, categorical = self._fill(columns, len(instances))
        self._check_numeric(numeric, self.numeric_names)
        return FeatureBatch(numeric=numeric, categorical=categorical)

    # -- shared -----------------------------------------------------------------------

    def _check_rows(self, rows: int) -> None:
        if rows == 0:
            raise InvalidInputError("the request has no rows", reason="wrong_shape")
        if rows > self.max_rows:
            raise InvalidInputError(
                f"the request has {rows} rows; the limit is {self.max_rows} per request",
                reason="wrong_shape",
            )

    def _fill(self, columns: dict[str, Any], rows: int) -> tuple[np.ndarray, np.ndarray]:
        numeric = np.empty((rows, len(self.numeric_index)), dtype=np.float64)
        categorical = np.empty((rows, len(self.categorical_index)), dtype=object)
        for name, values in columns.items():
            spec = self.specs[name]
            if spec.is_categorical:
                categorical[:, self.categorical_index[name]] = _categorical_column(values, spec)
            else:
                numeric[:, self.numeric_index[name]] = _numeric_array(values, name).reshape(-1)
        return numeric, categorical

    def _check_numeric(self, numeric: np.ndarray, names: list[str]) -> None:
        # count_nonzero: ~1.5 us less than .all() on a 30-value row (a reduction's set-up).
        finite = np.isfinite(numeric)
        if np.count_nonzero(finite) != finite.size:
            nan = np.isnan(numeric)
            infinite = ~finite & ~nan
            if infinite.any():
                row, col = np.argwhere(infinite)[0]
                raise InvalidInputError(
                    f"feature {names[col]!r}: infinite value at row {row}", reason="invalid_value"
                )
            bad = nan & ~self.numeric_nullable
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise InvalidInputError(
                    f"feature {names[col]!r}: missing value (null or NaN) at row {row}, and this "
                    "model cannot take missing values for it",
                    reason="missing_value",
                )
        for col, name, dtype, low, high in self.bounded_columns:
            # Fast: whole and in range (a NaN is not whole: it is excused below, where the row
            # is looked for). A few rows as Python floats (~0.5 us for one row), more with
            # numpy's min, max and fmod (~2.5 us whatever the rows: reductions' set-up).
            x = numeric[:, col]
            if len(x) <= 16:
                listed = x.tolist()
                whole = low <= min(listed) and max(listed) < high and all(map(float.is_integer, listed))
            else:
                whole = low <= x.min() and x.max() < high and not np.count_nonzero(np.fmod(x, 1.0))
            if not whole:
                _check_bounded_feature(x, name, dtype, low, high)
        # float32: one comparison over the whole batch (~1 us for a 30-value row, where a column
        # at a time took ~13 for 30 float32 features, and picking their columns out ~2), NaN-safe
        # (it compares false). Only if a value is beyond float32, in whichever column, are the
        # float32 columns looked at.
        if self.fp32_columns and np.count_nonzero(np.abs(numeric) >= _FP32_OVERFLOW):
            for col, name, dtype, low, high in self.fp32_columns:
                _check_bounded_feature(numeric[:, col], name, dtype, low, high)


def _check_bounded_feature(x: np.ndarray, name: str, dtype: str, low: float, high: float) -> None:
    present = ~np.isnan(x)
    outside = present & ((x < low) | (x >= high))
    if dtype == "float32":
        problems = [(outside, "is out of range for float32")]
    else:
        fraction = present & ~outside & (np.fmod(np.where(present, x, 0.0), 1.0) != 0)
        if dtype == "bool":  # 7 and 0.5 alike: neither is true nor false
            problems = [(outside | fraction, "is not true or false (a bool feature takes true/false, or 0 and 1)")]
        else:
            problems = [(outside, f"is out of range for {dtype}"), (fraction, f"is not an integer ({dtype})")]
    for mask, problem in problems:
        if mask.any():
            row = int(np.argmax(mask))
            raise InvalidInputError(
                f"feature {name!r}: value {_show(float(x[row]))} at row {row} {problem}",
                reason="invalid_value",
            )


def _show(value: float) -> str:
    """A float as a client wrote it: 12 for 12.0, 1e+30 as is."""
    return str(int(value)) if value.is_integer() and abs(value) < 1e16 else repr(value)


def _where(k: int, name: str, names: list[str] | None) -> tuple[str, int]:
    """The feature and row of a tensor's k-th value: a feature's own input, or a column of an
    [N, F] matrix input (named by its feature, with the input's name)."""
    if names is None:
        return f"feature {name!r}", k
    width = len(names)
    return f"feature {names[k % width]!r} (input {name!r}, column {k % width})", k // width


def _flat(data: list[Any]) -> list[Any]:
    return _flatten(data) if data and type(data[0]) is list else data


def _boolean_error(value: bool, where: str, row: int) -> InvalidInputError:
    return InvalidInputError(
        f"{where}: boolean {'true' if value else 'false'} at row {row} is not a number; "
        "only a bool feature takes true/false",
        reason="invalid_value",
    )


def _has_zero_or_one(values: np.ndarray) -> bool:
    """Whether a float array holds 0.0 or 1.0, what JSON false and true become: the fast
    check for booleans. Measured against a bitwise and over the values' bits, ``v - 1.0``
    and ``.any()``: this is the cheapest, ~0.9 us for 30 values and ~2.4 us for 1920 (a
    64 x 30 request, whose array('d') conversion alone takes ~27 us)."""
    return np.count_nonzero(values) != values.size or bool(np.count_nonzero(values == 1.0))


def _refuse_booleans(data: list[Any], values: np.ndarray, name: str, names: list[str] | None) -> None:
    """Refuse JSON true/false among a numeric tensor's values. Only values equal to 0.0 or
    1.0 are looked at in the list, and only when there are some."""
    if _has_zero_or_one(values):
        _find_booleans(data, values, name, names, None)


def _find_booleans(data: list[Any], values: np.ndarray, name: str, names: list[str] | None,
                   columns: set[int] | None) -> None:
    flat = _flat(data)
    width = len(names) if names else 1
    for k in np.flatnonzero((values == 0.0) | (values == 1.0)).tolist():
        value = flat[k]
        if type(value) is bool and (columns is None or k % width in columns):
            where, row = _where(k, name, names)
            raise _boolean_error(value, where, row)


def _check_json_numbers(datatype: str, data: list[Any], values: np.ndarray, name: str, names: list[str] | None) -> None:
    """JSON values against their tensor's datatype: a BOOL tensor holds true/false (or null),
    an integer one whole numbers in its range. FP tensors are left to the feature's checks."""
    if datatype == "BOOL":
        for k, value in enumerate(_flat(data)):
            if type(value) is not bool and value is not None:
                where, row = _where(k, name, names)
                raise InvalidInputError(
                    f"{where}: value {value!r:.50} at row {row} is not true or false (the input is BOOL)",
                    reason="invalid_value",
                )
        return
    bounds = INT_RANGES.get(datatype)
    if bounds is None or not values.size:
        return
    low, high = bounds
    # Fast: exact float bounds (high + 1 is a power of two); NaN (a null) fails the
    # comparisons, and the exact look through the list below excuses it.
    if low <= values.min() and values.max() < float(high + 1) and not np.count_nonzero(np.fmod(values, 1.0)):
        return
    for k, sent in enumerate(_flat(data)):
        if sent is None or type(sent) is bool:  # null: missing-value check; bool: refused or a bool feature's
            continue
        value = sent
        if isinstance(sent, float):
            if not math.isfinite(sent):
                continue  # named by the finite check
            if not sent.is_integer():
                where, row = _where(k, name, names)
                raise InvalidInputError(
                    f"{where}: value {sent!r} at row {row} is not an integer (the input is {datatype})",
                    reason="invalid_value",
                )
            value = int(sent)
        if isinstance(value, int) and not low <= value <= high:
            where, row = _where(k, name, names)
            raise InvalidInputError(
                f"{where}: value {value!r:.40} at row {row} is out of range for {datatype} ({low} to {high})",
                reason="invalid_value",
            )


def _flat_length(data: list[Any]) -> int:
    """How many values nested (even ragged) data holds."""
    if not any(isinstance(item, list) for item in data):
        return len(data)
    return len(_flatten(data))


def _numeric_array(data: Any, name: str, names: list[str] | None = None) -> np.ndarray:
    """Numbers as a flat float64 array (null -> NaN). Strings are refused even when they
    look like numbers: a string where a number belongs is a client bug worth surfacing.
    ``names``: the features of an [N, F] matrix input, to name a bad value's feature and row."""
    if isinstance(data, np.ndarray):
        return data.astype(np.float64).reshape(-1)
    if isinstance(data, list):
        # A flat list of plain numbers, as JSON decodes a request: array('d') converts it at
        # about half of np.asarray's cost (64 rows x 30 features: ~27 against ~59 us). Anything
        # else in the list (null, text, a nested list, an integer beyond float64) raises here
        # and takes the checks below, which name the bad value.
        try:
            return np.frombuffer(array.array("d", data), dtype=np.float64)
        except (TypeError, OverflowError):
            pass
    try:
        values = np.asarray(data)
    except ValueError:
        raise InvalidInputError(f"feature {name!r}: ragged nested data", reason="wrong_shape") from None
    if values.dtype.kind in "fiub":
        return values.astype(np.float64).reshape(-1)
    # Mixed values: numpy made them all text or objects, so each is looked at as sent
    # (the first bad one, in row-major order, is named with its feature and row).
    flat = _flatten(data) if isinstance(data, list) else values.reshape(-1).tolist()
    out = np.empty(len(flat), dtype=np.float64)
    for k, value in enumerate(flat):
        if value is None:
            out[k] = np.nan
        elif isinstance(value, (int, float)):
            try:
                out[k] = value
            except OverflowError:  # an integer beyond float64 (JSON allows any length)
                where, row = _where(k, name, names)
                raise InvalidInputError(
                    f"{where}: value at row {row} is out of range for a number", reason="invalid_value"
                ) from None
        else:
            where, row = _where(k, name, names)
            shown = value.item() if isinstance(value, np.generic) else value
            raise InvalidInputError(
                f"{where}: non-numeric value {shown!r:.50} at row {row}",
                reason="invalid_value",
            )
    return out


def _flatten(data: Any) -> list[Any]:
    """The values of nested lists in row-major order. Iterative: JSON may nest a thousand
    levels deep, deeper than Python's recursion limit leaves room for."""
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            out.append(item)
        else:
            stack.pop()
    return out


def _categorical_column(values: Any, spec: FeatureSpec) -> np.ndarray:
    flat = values.tolist() if isinstance(values, np.ndarray) else _flatten(values)
    column = np.empty(len(flat), dtype=object)
    for row, value in enumerate(flat):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            if not spec.nullable:
                raise InvalidInputError(
                    f"feature {spec.name!r}: missing value at row {row}, and this model cannot "
                    "take missing values for it",
                    reason="missing_value",
                )
            column[row] = None
        elif isinstance(value, str):
            column[row] = value
        else:
            raise InvalidInputError(
                f"feature {spec.name!r} is categorical: expected a string at row {row}, got "
                f"{value!r:.50}",
                reason="invalid_value",
            )
    return column
