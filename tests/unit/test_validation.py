"""Request data against a signature: accepted shapes, and every rejection named."""

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
