"""Request data against a signature: accepted shapes, and every rejection named."""

import math

import numpy as np
import pytest

from modelmon.errors import InvalidInputError
from modelmon.serving.codecs import TensorInput
from modelmon.serving.validation import RequestValidator
from modelmon.types import FeatureSpec, Signature

SIGNATURE = Signature(
    features=[
        FeatureSpec(name="amount", dtype="float64"),
        FeatureSpec(name="items", dtype="int64", nullable=True),
        FeatureSpec(name="channel", dtype="string", categories=["web", "app"]),
    ],
    classes=["no", "yes"],
    input_layout="columns",
)
NUMERIC = Signature(
    features=[FeatureSpec(name=f"x{i}", dtype="float64") for i in range(3)],
    classes=[0, 1],
    input_layout="matrix",
)


DROP = object()


def columns(amount=(1.5, 2.0), items=(1, 2), channel=("web", "app"), **extra):
    """Valid columns, each replaceable by values, a whole TensorInput, or DROP."""
    tensors = []
    for name, datatype, value in (("amount", "FP64", amount), ("items", "INT64", items),
                                  ("channel", "BYTES", channel)):
        if value is DROP:
            continue
        tensors.append(value if isinstance(value, TensorInput) else TensorInput(name, [len(value)], datatype, list(value)))
    return tensors + list(extra.values())


def rejected(call, *args) -> InvalidInputError:
    with pytest.raises(InvalidInputError) as info:
        call(*args)
    return info.value


def test_columns_become_a_batch_in_signature_order():
    batch = RequestValidator(SIGNATURE, 100).from_tensors(columns()[::-1])
    np.testing.assert_array_equal(batch.numeric, [[1.5, 1.0], [2.0, 2.0]])
    assert batch.categorical.tolist() == [["web"], ["app"]]


def test_records_equal_columns():
    validator = RequestValidator(SIGNATURE, 100)
    records = validator.from_records(
        [{"amount": 1.5, "items": 1, "channel": "web"}, {"channel": "app", "items": 2, "amount": 2}]
    )
    tensors = validator.from_tensors(columns())
    np.testing.assert_array_equal(records.numeric, tensors.numeric)
    assert records.categorical.tolist() == tensors.categorical.tolist()


def test_matrix_input_flat_or_nested():
    validator = RequestValidator(NUMERIC, 100)
    flat = validator.from_tensors([TensorInput("input-0", [2, 3], "FP32", [1, 2, 3, 4, 5, 6])])
    nested = validator.from_tensors([TensorInput("input-0", [2, 3], "FP32", [[1, 2, 3], [4, 5, 6]])])
    np.testing.assert_array_equal(flat.numeric, nested.numeric)
    assert flat.numeric.shape == (2, 3)


def test_nullable_numeric_accepts_null_and_keeps_it_missing():
    batch = RequestValidator(SIGNATURE, 100).from_tensors(columns(items=(None, 3)))
    assert np.isnan(batch.numeric[0, 1]) and batch.numeric[1, 1] == 3


@pytest.mark.parametrize(
    ("tensors", "reason", "names"),
    [
        (columns(channel=DROP), "missing_feature", "channel"),
        (columns(extra=TensorInput("extra", [2], "FP64", [1, 2])), "unknown_feature", "extra"),
        (columns(amount=("1.5", 2.0)), "invalid_value", "amount"),
        (columns(amount=("abc", 2.0)), "invalid_value", "amount"),
        (columns(amount=(float("nan"), 2.0)), "missing_value", "amount"),
        (columns(amount=(None, 2.0)), "missing_value", "amount"),
        (columns(amount=(float("inf"), 2.0)), "invalid_value", "amount"),
        (columns(channel=(None, "web")), "missing_value", "channel"),
        (columns(channel=(3, "web")), "invalid_value", "channel"),
        (columns(amount=(1.0,)), "wrong_shape", "amount"),
        (columns(channel=TensorInput("channel", [2], "FP32", [1, 2])), "wrong_datatype", "channel"),
        (columns(amount=TensorInput("amount", [2], "BYTES", ["a", "b"])), "wrong_datatype", "amount"),
        (columns(amount=TensorInput("amount", [2, 2], "FP64", [1, 2, 3, 4])), "wrong_shape", "amount"),
        (columns(amount=TensorInput("amount", [2], "FP64", [1, 2, 3])), "wrong_shape", "amount"),
    ],
)
def test_each_bad_column_is_rejected_naming_the_feature(tensors, reason, names):
    error = rejected(RequestValidator(SIGNATURE, 100).from_tensors, tensors)
    assert error.reason == reason
    assert names in error.message


@pytest.mark.parametrize(
    ("tensor", "reason"),
    [
        (TensorInput("input-0", [2, 4], "FP32", list(range(8))), "wrong_shape"),
        (TensorInput("input-0", [2, 3], "FP32", list(range(5))), "wrong_shape"),
        (TensorInput("input-0", [2, 3], "BYTES", ["a"] * 6), "wrong_datatype"),
        (TensorInput("input-0", [6], "FP32", list(range(6))), "unknown_feature"),
        (TensorInput("input-0", [2, 3], "FP32", [[1, 2, 3], [4, 5]]), "wrong_shape"),
    ],
)
def test_bad_matrix_is_rejected(tensor, reason):
    assert rejected(RequestValidator(NUMERIC, 100).from_tensors, [tensor]).reason == reason


def test_matrix_refused_for_a_model_with_categorical_features():
    tensor = TensorInput("input-0", [1, 3], "FP32", [1, 2, 3])
    error = rejected(RequestValidator(SIGNATURE, 100).from_tensors, [tensor])
    assert "categorical" in error.message and "channel" in error.message


@pytest.mark.parametrize(
    ("instances", "reason"),
    [
        ([], "wrong_shape"),
        ("rows", "wrong_shape"),
        ([1, 2], "wrong_shape"),
        ([{"amount": 1, "items": 1}], "missing_feature"),
        ([{"amount": 1, "items": 1, "channel": "web", "zip": "x"}], "unknown_feature"),
        ([{"amount": [1], "items": 1, "channel": "web"}], "wrong_shape"),
        ([{"amount": {"v": 1}, "items": 1, "channel": "web"}], "invalid_value"),
    ],
)
def test_bad_records_are_rejected(instances, reason):
    assert rejected(RequestValidator(SIGNATURE, 100).from_records, instances).reason == reason


def test_row_limit():
    error = rejected(RequestValidator(SIGNATURE, 1).from_tensors, columns())
    assert "limit is 1" in error.message


def nested(value, depth: int):
    for _ in range(depth):
        value = [value]
    return value


@pytest.mark.parametrize(
    ("tensors", "reason", "text"),
    [
        # Values that crashed validation (500s) instead of being named (issue 15).
        (columns(amount=(10**400, 2.0)), "invalid_value", "'amount': value at row 0 is out of range"),
        (columns(channel=TensorInput("channel", [2], "BYTES", ["web", ["app", "web"]])), "wrong_shape",
         "'channel': shape [2] needs 2 values, got 3"),
        (columns(amount=TensorInput("amount", [2], "FP64", [nested(1.0, 990), 2.0])), "wrong_shape", "'amount'"),
    ],
)
def test_values_that_used_to_crash_are_named(tensors, reason, text):
    error = rejected(RequestValidator(SIGNATURE, 100).from_tensors, tensors)
    assert error.reason == reason and text in error.message


def test_deeply_nested_categorical_data_is_flattened_without_recursion():
    tensors = columns(channel=TensorInput("channel", [2], "BYTES", [nested("web", 990), ["app"]]))
    batch = RequestValidator(SIGNATURE, 100).from_tensors(tensors)
    assert batch.categorical.tolist() == [["web"], ["app"]]


def test_huge_integer_in_a_record_is_an_invalid_value():
    error = rejected(RequestValidator(SIGNATURE, 100).from_records, [{"amount": 10**400, "items": 1, "channel": "web"}])
    assert error.reason == "invalid_value" and "'amount'" in error.message


@pytest.mark.parametrize(
    "data",
    [
        [1.5, -2.0, 3.25, 0.0, 1e300, -1e-300],  # floats
        [1, 2, 3, -4, 2**53 + 1, 0],  # ints, one beyond float64's exact range
        [True, False, 1.5, 2, 0.0, -7],  # bools and numbers mixed
        [],
    ],
)
def test_a_flat_list_of_numbers_converts_as_numpy_does(data):
    """The fast conversion of a flat list of plain numbers (array('d')) against numpy's own."""
    from modelmon.serving.validation import _numeric_array

    got = _numeric_array(data, "x")
    expected = np.asarray(data, dtype=np.float64).reshape(-1)
    assert got.dtype == np.float64 and got.flags.writeable
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    ("data", "text"),
    [
        ([1.0, None, 2.0], None),  # null: NaN (the slow path), refused later for a non-nullable feature
        ([1.0, None, "2.0"], "non-numeric value '2.0' at row 2"),
        ([1.0, 2.0, 10**400], "value at row 2 is out of range"),
        ([[1.0, 2.0], [3.0, 4.0]], None),  # nested: flattened by numpy
    ],
)
def test_lists_the_fast_conversion_cannot_take_fall_back_to_the_named_checks(data, text):
    from modelmon.serving.validation import _numeric_array

    if text is None:
        got = _numeric_array(data, "x")
        expected = np.array([np.nan if v is None else v for v in np.asarray(data, dtype=object).reshape(-1)], dtype=np.float64)
        np.testing.assert_array_equal(got, expected)
    else:
        error = rejected(_numeric_array, data, "x")
        assert error.reason == "invalid_value" and "'x'" in error.message and text in error.message


# -- the real feature, row and value (user report defects 4, 5, 7) ----------------------

def message(call, *args) -> tuple[str, str]:
    error = rejected(call, *args)
    return error.reason, error.message


@pytest.mark.parametrize(("tensors", "text"), [
    # Mixed numbers and text: numpy made them all text, and the first value was named.
    (columns(amount=(0.5, "abc")), "feature 'amount': non-numeric value 'abc' at row 1"),
    (columns(amount=(0.5, {"v": 1})), "feature 'amount': non-numeric value {'v': 1} at row 1"),
    (columns(amount=(0.5, 10**400)), "feature 'amount': value at row 1 is out of range for a number"),
])
def test_a_mixed_column_names_the_bad_value_and_its_row(tensors, text):
    assert message(RequestValidator(SIGNATURE, 100).from_tensors, tensors) == ("invalid_value", text)


def test_a_mixed_record_names_the_bad_value_and_its_row():
    instances = [{"amount": 0.1, "items": 1, "channel": "web"}, {"amount": "x", "items": 2, "channel": "app"}]
    assert message(RequestValidator(SIGNATURE, 100).from_records, instances) == (
        "invalid_value", "feature 'amount': non-numeric value 'x' at row 1")


@pytest.mark.parametrize(("bad", "text"), [
    ("q", "non-numeric value 'q' at row 1"),
    ({}, "non-numeric value {} at row 1"),
    (10**400, "value at row 1 is out of range for a number"),
])
@pytest.mark.parametrize("nested_data", [True, False])
def test_a_matrix_names_the_feature_of_the_column(bad, text, nested_data):
    # [2, 3]: the bad value at [1][2] is feature x2 of row 1 (flat index 5).
    rows = [[0.1, 0.2, 0.3], [0.4, 0.5, bad]]
    data = rows if nested_data else rows[0] + rows[1]
    tensor = TensorInput("input-0", [2, 3], "FP64", data)
    assert message(RequestValidator(NUMERIC, 100).from_tensors, [tensor]) == (
        "invalid_value", f"feature 'x2' (input 'input-0', column 2): {text}")


@pytest.mark.parametrize(("items", "text"), [
    # INT64 tensor: JSON numbers checked against the datatype, exactly.
    (TensorInput("items", [2], "INT64", [1, 10**19]),
     "feature 'items': value 10000000000000000000 at row 1 is out of range for INT64 "
     "(-9223372036854775808 to 9223372036854775807)"),
    (TensorInput("items", [2], "INT64", [12.5, 1]), "feature 'items': value 12.5 at row 0 is not an integer (the input is INT64)"),
    # FP64 tensor (JSON or binary): the int64 feature's own check.
    (TensorInput("items", [2], "FP64", [1.0, 1e30]), "feature 'items': value 1e+30 at row 1 is out of range for int64"),
    (TensorInput("items", [2], "FP64", np.array([12.5, 1.0])), "feature 'items': value 12.5 at row 0 is not an integer (int64)"),
    (TensorInput("items", [2], "FP64", [3.0, -1e19]), "feature 'items': value -1e+19 at row 1 is out of range for int64"),
    # 2**63 - 1 is an int64, but float64 carries it as 2**63, which the cast would wrap.
    (TensorInput("items", [2, 1], "INT64", [[2**63 - 1], [1]]),
     "feature 'items': value 9.223372036854776e+18 at row 0 is out of range for int64"),
])
def test_an_integer_feature_takes_only_whole_numbers_in_its_range(items, text):
    assert message(RequestValidator(SIGNATURE, 100).from_tensors, columns(items=items)) == ("invalid_value", text)


def test_an_integer_feature_keeps_whole_values_at_its_limits_and_nulls():
    validator = RequestValidator(SIGNATURE, 100)
    batch = validator.from_tensors(columns(items=TensorInput("items", [2], "INT64", [-(2**63), None])))
    assert batch.numeric[0, 1] == -(2.0**63) and np.isnan(batch.numeric[1, 1])
    batch = validator.from_tensors(columns(items=TensorInput("items", [2], "FP64", [12.0, 2.0**62])))
    assert batch.numeric[:, 1].tolist() == [12.0, 2.0**62]
    error = rejected(validator.from_records, [{"amount": 1.0, "items": 1e30, "channel": "web"}])
    assert error.message == "feature 'items': value 1e+30 at row 0 is out of range for int64"


INT32 = Signature(features=[FeatureSpec(name="n", dtype="int32")], task="regression", input_layout="columns")


@pytest.mark.parametrize(("value", "ok"), [(2**31 - 1, True), (2**31, False), (-(2**31), True), (-(2**31) - 1, False)])
def test_an_int32_feature_has_int32_bounds(value, ok):
    validator = RequestValidator(INT32, 10)
    if ok:
        assert validator.from_records([{"n": value}]).numeric[0, 0] == value
    else:
        assert message(validator.from_records, [{"n": value}]) == (
            "invalid_value", f"feature 'n': value {value} at row 0 is out of range for int32")


#: Each integer datatype's range, from its bit width (V2 protocol: INTn signed, UINTn unsigned).
WIDTHS = [(f"{'U' if unsigned else ''}INT{bits}", unsigned, bits) for unsigned in (False, True) for bits in (8, 16, 32, 64)]


@pytest.mark.parametrize(("datatype", "unsigned", "bits"), WIDTHS)
def test_each_integer_datatype_refuses_json_numbers_outside_its_range(datatype, unsigned, bits):
    low, high = (0, 2**bits - 1) if unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    validator = RequestValidator(SIGNATURE, 100)
    batch = validator.from_tensors(columns(amount=TensorInput("amount", [2], datatype, [low, high])))
    assert batch.numeric[:, 0].tolist() == [float(low), float(high)]
    for k, value in ((0, low - 1), (1, high + 1)):
        data = [low, high]
        data[k] = value
        assert message(validator.from_tensors, columns(amount=TensorInput("amount", [2], datatype, data))) == (
            "invalid_value", f"feature 'amount': value {value} at row {k} is out of range for {datatype} ({low} to {high})")


@pytest.mark.parametrize(("tensors", "reason", "text"), [
    (columns(amount=(True, 2.0)), "invalid_value",
     "feature 'amount': boolean true at row 0 is not a number; only a bool feature takes true/false"),
    (columns(items=TensorInput("items", [2], "INT64", [3, False])), "invalid_value",
     "feature 'items': boolean false at row 1 is not a number; only a bool feature takes true/false"),
    (columns(amount=TensorInput("amount", [2], "BOOL", [True, False])), "wrong_datatype",
     "feature 'amount' is numeric (float64): send it as FP32, FP64 or an integer type, not BOOL"),
    (columns(amount=TensorInput("amount", [2], "UINT8", [-1, 2])), "invalid_value",
     "feature 'amount': value -1 at row 0 is out of range for UINT8 (0 to 255)"),
    (columns(amount=TensorInput("amount", [2], "INT8", [1, 300])), "invalid_value",
     "feature 'amount': value 300 at row 1 is out of range for INT8 (-128 to 127)"),
])
def test_booleans_and_out_of_range_typed_values_are_refused(tensors, reason, text):
    assert message(RequestValidator(SIGNATURE, 100).from_tensors, tensors) == (reason, text)


def test_booleans_are_refused_in_records_and_matrices():
    error = rejected(RequestValidator(SIGNATURE, 100).from_records,
                     [{"amount": 1.0, "items": 1, "channel": "web"}, {"amount": False, "items": 1, "channel": "web"}])
    assert error.message == "feature 'amount': boolean false at row 1 is not a number; only a bool feature takes true/false"
    tensor = TensorInput("input-0", [2, 3], "FP64", [[0.0, 1.0, 0.5], [True, 0.0, 1.0]])
    assert message(RequestValidator(NUMERIC, 100).from_tensors, [tensor]) == (
        "invalid_value", "feature 'x0' (input 'input-0', column 0): boolean true at row 1 is not a number; "
        "only a bool feature takes true/false")
    assert message(RequestValidator(NUMERIC, 100).from_tensors, [TensorInput("input-0", [1, 3], "BOOL", [True] * 3)])[0] == "wrong_datatype"


def test_numbers_equal_to_zero_or_one_are_not_booleans():
    # 0, 1, 0.0, 1.0 and 0.5 pass the fast check for booleans too: each is looked at and kept.
    batch = RequestValidator(SIGNATURE, 100).from_tensors(columns(amount=(0.0, 1.0), items=(1, 0)))
    assert batch.numeric.tolist() == [[0.0, 1.0], [1.0, 0.0]]
    matrix = RequestValidator(NUMERIC, 100).from_tensors([TensorInput("input-0", [1, 3], "FP64", [0, 1.0, 0.5])])
    assert matrix.numeric.tolist() == [[0.0, 1.0, 0.5]]


FLAGS = Signature(features=[FeatureSpec(name="flag", dtype="bool"), FeatureSpec(name="x", dtype="float64")],
                  task="regression", input_layout="matrix")


def test_a_bool_feature_takes_booleans_and_only_there():
    validator = RequestValidator(FLAGS, 10)
    assert validator.from_records([{"flag": True, "x": 0.5}, {"flag": False, "x": 1.0}]).numeric.tolist() == [[1.0, 0.5], [0.0, 1.0]]
    batch = validator.from_tensors([TensorInput("flag", [2], "BOOL", [True, False]), TensorInput("x", [2], "FP64", [1.0, 2.0])])
    assert batch.numeric.tolist() == [[1.0, 1.0], [0.0, 2.0]]
    assert validator.from_tensors([TensorInput("m", [1, 2], "FP64", [True, 1.0])]).numeric.tolist() == [[1.0, 1.0]]
    assert message(validator.from_tensors, [TensorInput("m", [1, 2], "FP64", [True, True])]) == (
        "invalid_value", "feature 'x' (input 'm', column 1): boolean true at row 0 is not a number; only a bool feature takes true/false")
    assert message(validator.from_tensors, [TensorInput("flag", [2], "BOOL", [True, 2]), TensorInput("x", [2], "FP64", [1.0, 2.0])]) == (
        "invalid_value", "feature 'flag': value 2 at row 1 is not true or false (the input is BOOL)")


@pytest.mark.parametrize("rows", [3, 40])  # a few rows are checked as Python floats, more with numpy
def test_the_integer_check_finds_the_row_with_few_or_many_rows(rows):
    validator = RequestValidator(SIGNATURE, 100)

    def request(items):
        return columns(amount=[1.0] * rows, items=TensorInput("items", [rows], "FP64", items), channel=["web"] * rows)

    items = [float(k) for k in range(rows)]
    items[1] = None  # nullable: kept missing
    assert np.isnan(validator.from_tensors(request(items)).numeric[1, 1])
    items[rows - 1] = 12.5
    assert message(validator.from_tensors, request(items)) == (
        "invalid_value", f"feature 'items': value 12.5 at row {rows - 1} is not an integer (int64)")
    items[rows - 1], items[0] = 2.0, -(2.0**64)
    assert message(validator.from_tensors, request(items)) == (
        "invalid_value", "feature 'items': value -1.8446744073709552e+19 at row 0 is out of range for int64")


def test_a_boolean_for_a_categorical_feature_is_named_as_not_a_string():
    error = rejected(RequestValidator(SIGNATURE, 100).from_records, [{"amount": 1.0, "items": 1, "channel": True}])
    assert (error.reason, error.message) == ("invalid_value", "feature 'channel' is categorical: expected a string at row 0, got True")


FP32_MAX = float(np.finfo(np.float32).max)
#: The smallest magnitude the cast to float32 makes infinite (half a float32 step above its largest).
FP32_OVERFLOW = 2.0**128 - 2.0**103
TYPED = Signature(features=[FeatureSpec(name="f", dtype="float32", nullable=True), FeatureSpec(name="flag", dtype="bool", nullable=True),
                            FeatureSpec(name="x", dtype="float64")], task="regression", input_layout="columns")


def typed_rows(rows: int, **column) -> list[TensorInput]:
    """``rows`` valid rows of TYPED as one input per feature, a column replaced by (datatype, values)."""
    tensors = {"f": ("FP64", [1.5] * rows), "flag": ("BOOL", [True] * rows), "x": ("FP64", [1e300] * rows), **column}
    return [TensorInput(name, [rows], datatype, values) for name, (datatype, values) in tensors.items()]


@pytest.mark.parametrize("rows", [1, 40])
@pytest.mark.parametrize(("value", "shown"), [(1e300, "1e+300"), (-1e39, "-1e+39"), (FP32_OVERFLOW, repr(FP32_OVERFLOW)),
                                               (-FP32_OVERFLOW, repr(-FP32_OVERFLOW))])
def test_a_float32_feature_refuses_values_beyond_float32(rows, value, shown):
    # Values the cast would make infinite (the smallest such magnitude included), with a
    # missing value before it; a float64 feature (x, 1e300 in every row) takes any finite value.
    with np.errstate(over="ignore"):
        assert np.isinf(np.float32(value))
    validator = RequestValidator(TYPED, 100)
    f = [1.5] * rows
    f[0] = None  # nullable: excused wherever it stands
    f[-1] = value
    assert message(validator.from_tensors, typed_rows(rows, f=("FP64", f))) == (
        "invalid_value", f"feature 'f': value {shown} at row {rows - 1} is out of range for float32")
    assert message(validator.from_tensors, typed_rows(rows, f=("FP32", f))) == (
        "invalid_value", f"feature 'f': value {shown} at row {rows - 1} is out of range for float32")


def test_a_float32_feature_keeps_values_up_to_float32s_limits_and_missing_ones():
    validator = RequestValidator(TYPED, 100)
    # Up to the last magnitude the cast keeps finite: 3.4028235e38 (float32's largest as
    # printed, a little above it in float64) and the float64 just below the overflow.
    below = math.nextafter(FP32_OVERFLOW, 0.0)
    kept = [FP32_MAX, -FP32_MAX, 3.4028235e38, below, -below]
    assert np.isfinite(np.array(kept).astype(np.float32)).all()
    batch = validator.from_tensors(typed_rows(7, f=("FP64", [float("nan"), *kept, None])))
    assert np.isnan(batch.numeric[0, 0]) and batch.numeric[1:6, 0].tolist() == kept and np.isnan(batch.numeric[6, 0])
    assert batch.numeric[:, 2].tolist() == [1e300] * 7
    assert validator.from_tensors(typed_rows(1, f=("FP32", np.array([FP32_MAX], dtype=np.float32)))).numeric[0, 0] == FP32_MAX
    assert message(validator.from_records, [{"f": 2.5, "flag": True, "x": 1.0}, {"f": -1e39, "flag": False, "x": 1.0}]) == (
        "invalid_value", "feature 'f': value -1e+39 at row 1 is out of range for float32")
    matrix = RequestValidator(TYPED.model_copy(update={"input_layout": "matrix"}), 100)
    assert message(matrix.from_tensors, [TensorInput("m", [2, 3], "FP64", [[1.0, True, 2.0], [1e39, False, 2.0]])]) == (
        "invalid_value", "feature 'f': value 1e+39 at row 1 is out of range for float32")


@pytest.mark.parametrize("rows", [1, 40])  # bool: a few rows are checked as Python floats, more with numpy
@pytest.mark.parametrize(("value", "shown"), [(7, "7"), (0.5, "0.5"), (-1.0, "-1"), (2, "2")])
def test_a_bool_feature_refuses_numbers_other_than_0_and_1(rows, value, shown):
    validator = RequestValidator(TYPED, 100)
    flag = [1.0] * rows
    flag[0] = None
    flag[-1] = value
    assert message(validator.from_tensors, typed_rows(rows, flag=("FP64", flag))) == (
        "invalid_value", f"feature 'flag': value {shown} at row {rows - 1} is not true or false (a bool feature takes true/false, or 0 and 1)")
    records = [{"f": 1.0, "flag": True, "x": 1.0}] * (rows - 1) + [{"f": 1.0, "flag": value, "x": 1.0}]
    assert message(validator.from_records, records) == (
        "invalid_value", f"feature 'flag': value {shown} at row {rows - 1} is not true or false (a bool feature takes true/false, or 0 and 1)")


def test_a_bool_feature_keeps_true_false_0_1_and_missing():
    validator = RequestValidator(TYPED, 100)
    for datatype, flag, third in (("BOOL", [True, False, None], None), ("FP64", [1.0, 0.0, None], None), ("INT64", [1, 0, None], None),
                                  ("BOOL", np.array([True, False, True]), 1.0), ("FP64", np.array([1.0, 0.0, np.nan]), None)):
        column = validator.from_tensors(typed_rows(3, flag=(datatype, flag))).numeric[:, 1]
        assert column[:2].tolist() == [1.0, 0.0]
        assert np.isnan(column[2]) if third is None else column[2] == third  # a null stays missing
    batch = validator.from_records([{"f": 1.0, "flag": True, "x": 0.5}, {"f": 1.0, "flag": 0, "x": 0.5}, {"f": 1.0, "flag": None, "x": 0.5}])
    assert batch.numeric[:2, 1].tolist() == [1.0, 0.0] and np.isnan(batch.numeric[2, 1])
    matrix = RequestValidator(FLAGS, 10)
    assert matrix.from_tensors([TensorInput("m", [2, 2], "FP64", [[1, 0.5], [0, 7.0]])]).numeric.tolist() == [[1.0, 0.5], [0.0, 7.0]]
    assert message(matrix.from_tensors, [TensorInput("m", [2, 2], "FP64", [[1, 0.5], [7.0, 0]])]) == (
        "invalid_value", "feature 'flag': value 7 at row 1 is not true or false (a bool feature takes true/false, or 0 and 1)")
