"""The ONNX runtime's cast of float64 feature values to a graph's integer input: a value the
type cannot hold is an error naming the input, not a silent wrap (user report defect 5)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper

from modelmon.errors import InvalidInputError
from modelmon.runtimes.onnx import OnnxRuntime
from modelmon.types import FeatureBatch, FeatureSpec, Signature


def graph(int_type: int) -> bytes:
    """value = float(n) + x, with n an integer input: the prediction shows what the graph saw."""
    n = helper.make_tensor_value_info("n", int_type, [None, 1])
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, 1])
    value = helper.make_tensor_value_info("value", TensorProto.DOUBLE, [None, 1])
    nodes = [helper.make_node("Cast", ["n"], ["nf"], to=TensorProto.DOUBLE), helper.make_node("Add", ["nf", "x"], ["value"])]
    model = helper.make_model(helper.make_graph(nodes, "g", [n, x], [value]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


# The signature says float64 for n, as a graph's integer input may differ from its feature's
# declared type: the validator then lets 1e30 through, and the cast is the last guard.
SIGNATURE = Signature(features=[FeatureSpec(name="n", dtype="float64"), FeatureSpec(name="x", dtype="float64")],
                      task="regression", input_layout="columns")


@pytest.mark.parametrize(("int_type", "value"), [(TensorProto.INT64, 1e30), (TensorProto.INT64, 2.0**63),
                                                 (TensorProto.INT64, 12.5), (TensorProto.INT32, 2.0**31)])
def test_a_value_the_integer_input_cannot_hold_is_an_error(int_type, value):
    runtime = OnnxRuntime(graph(int_type), SIGNATURE)
    batch = FeatureBatch(numeric=np.array([[3.0, 0.5], [value, 0.5]]), categorical=np.empty((2, 0), dtype=object))
    with pytest.raises(InvalidInputError, match=r"the graph's 'n' input .int(64|32). cannot take the value.s. sent"):
        runtime.predict(batch)


@pytest.mark.parametrize(("int_type", "value"), [(TensorProto.INT64, -(2.0**63)), (TensorProto.INT64, 2.0**62),
                                                 (TensorProto.INT32, 2.0**31 - 1)])
def test_values_at_the_integer_limits_reach_the_graph_unchanged(int_type, value):
    runtime = OnnxRuntime(graph(int_type), SIGNATURE)
    batch = FeatureBatch(numeric=np.array([[3.0, 0.5], [value, 0.0]]), categorical=np.empty((2, 0), dtype=object))
    assert runtime.predict_values(batch).tolist() == [3.5, value]
