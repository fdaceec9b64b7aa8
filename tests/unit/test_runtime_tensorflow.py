"""The TensorFlow SavedModel runtime on its own: the command line, what it refuses, and a
model tf2onnx cannot convert, served by TensorFlow. (Agreement with TensorFlow on the
conformance rows: tests/conformance, cases_tensorflow.py.) One module: TensorFlow's import
costs seconds, paid once."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from typer.testing import CliRunner

from modelmon.cli import app
from modelmon.errors import RegistryError
from modelmon.registry import Registry, register_model
from modelmon.runtimes.base import runtime_for_file, verified_path
from modelmon.runtimes.tensorflow import TensorFlowRuntime
from modelmon.types import FeatureBatch, Task

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 80
    return pd.DataFrame({
        "a": rng.normal(size=n), "b": rng.normal(size=n), "city": rng.choice(["oslo", "rome", "lima"], n),
        "label": rng.choice(["no", "yes"], n),
    })


def save(module: Any, function: Any, path: Path) -> Path:
    tf.saved_model.save(module, str(path), signatures={"serving_default": function} if function else None)
    return path


def hashed_city_model(path: Path) -> Path:
    """Two float inputs ``[N]`` and a string input ``[N, 1]`` hashed into buckets (an op tf2onnx
    does not convert); one sigmoid unit."""
    module = tf.Module()
    module.w = tf.Variable(np.array([[0.8], [-0.5], [0.3], [-0.2], [0.1]], np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="a"), tf.TensorSpec([None], tf.float32, name="b"),
                                  tf.TensorSpec([None, 1], tf.string, name="city")])
    def serve(a: Any, b: Any, city: Any) -> dict[str, Any]:
        buckets = tf.one_hot(tf.strings.to_hash_bucket_fast(tf.reshape(city, [-1]), 3), 3)
        x = tf.concat([tf.stack([a, b], axis=1), buckets], axis=1)
        return {"p": tf.sigmoid(tf.matmul(x, module.w))}

    module.serve = serve
    return save(module, serve, path)


def test_the_command_line_registers_a_savedmodel_directory_served_natively_when_tf2onnx_cannot_convert(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    directory = hashed_city_model(tmp_path / "model")
    assert runtime_for_file(directory) is TensorFlowRuntime
    frame.to_csv(tmp_path / "train.csv", index=False)
    registry = tmp_path / "registry"
    result = CliRunner().invoke(app, [
        "register", "--model", str(directory), "--name", "hashed", "--registry", str(registry),
        "--reference", str(tmp_path / "train.csv"), "--target", "label",
    ], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    card = Registry(registry).card("hashed")
    assert card.flavor == "tensorflow" and card.runtime == "tensorflow"
    assert card.onnx_check is not None and not card.onnx_check.used
    assert "StringToHashBucketFast" in card.onnx_check.reason  # what tf2onnx could not convert
    assert [(f.name, f.dtype) for f in card.signature.features] == [("a", "float64"), ("b", "float64"), ("city", "string")]
    assert card.signature.classes == ["no", "yes"]
    assert card.artifact.options["outputs"] == "probabilities"
    record = json.loads((Registry(registry).version_dir("hashed", card.version) / "model.json").read_text())
    assert record["onnx_check"]["used"] is False
    # What the server loads answers as TensorFlow does, a missing city as the empty string.
    served = Registry(registry).load_predictor(card)
    rows = frame.head(5).copy()
    rows.loc[0, "city"] = None
    proba = served.predict_proba(FeatureBatch.from_frame(rows, card.signature))
    loaded = tf.saved_model.load(str(directory)).signatures["serving_default"]
    expected = loaded(
        a=tf.constant(rows.a.to_numpy(np.float32)), b=tf.constant(rows.b.to_numpy(np.float32)),
        city=tf.constant(rows[["city"]].fillna("").to_numpy(str)),
    )["p"].numpy().reshape(-1)
    assert np.abs(proba[:, 1] - expected).max() < 1e-6
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_a_serving_function_that_writes_files_is_refused(frame: pd.DataFrame, tmp_path: Path) -> None:
    module = tf.Module()
    target = tmp_path / "written.txt"

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(x: Any) -> dict[str, Any]:
        tf.io.write_file(str(target), tf.strings.as_string(tf.reduce_sum(x)))
        return {"p": tf.sigmoid(x[:, :1])}

    module.serve = serve
    directory = save(module, serve, tmp_path / "model")
    with pytest.raises(RegistryError, match="WriteFile"):
        register_model(directory, name="writer", reference=frame[["a", "b", "label"]], target="label",
                       registry=tmp_path / "registry")
    assert not target.exists()


def test_a_savedmodel_without_a_signature_or_with_several_outputs_is_refused(frame: pd.DataFrame, tmp_path: Path) -> None:
    module = tf.Module()
    module.v = tf.Variable(1.0)
    with pytest.raises(RegistryError, match="serving_default"):
        register_model(save(module, None, tmp_path / "bare"), name="bare", registry=tmp_path / "registry")

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def two(x: Any) -> dict[str, Any]:
        return {"first": tf.sigmoid(x[:, :1]), "second": tf.sigmoid(x[:, 1:])}

    module.two = two
    with pytest.raises(RegistryError, match="2 outputs"):
        register_model(save(module, two, tmp_path / "two"), name="two", registry=tmp_path / "registry")


def test_a_changed_archive_is_not_loaded(frame: pd.DataFrame, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    card = register_model(hashed_city_model(tmp_path / "model"), name="m", reference=frame, target="label",
                          registry=registry)
    directory = registry.version_dir("m", card.version)
    with (directory / card.artifact.path).open("ab") as f:
        f.write(b"\0" * 512)
    with pytest.raises(RegistryError, match="sha256"):
        TensorFlowRuntime.load(verified_path(directory, card.artifact), card.artifact, card.signature)


def test_serving_the_kept_graph_needs_no_tensorflow_and_a_missing_one_names_the_extra(
    frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = tf.Module()
    module.w = tf.Variable(np.array([[1.5], [-0.7]], np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(x: Any) -> dict[str, Any]:
        return {"logit": tf.matmul(x, module.w)}  # no sigmoid: read as a logit

    module.serve = serve
    directory = save(module, serve, tmp_path / "model")
    data = frame[["a", "b", "label"]]
    registry = Registry(tmp_path / "registry")
    card = register_model(directory, name="logit", reference=data, target="label", registry=registry)
    assert card.runtime == "onnx" and card.onnx_check is not None and card.onnx_check.used
    assert card.artifact.options["outputs"] == "logits"
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # `import tensorflow` now fails
    proba = registry.load_predictor(card).predict_proba(FeatureBatch.from_frame(data, card.signature))
    logit = data[["a", "b"]].to_numpy(np.float32) @ np.array([1.5, -0.7], np.float32)
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-logit.astype(np.float64))), rtol=0, atol=1e-6)
    with pytest.raises(RegistryError, match=r"pip install 'modelmon\[tensorflow\]'"):
        register_model(directory, name="again", reference=data, target="label", registry=registry)


def test_a_savedmodel_regressor_is_served_through_the_kept_graph_and_natively_as_tensorflow_answers(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    """A dense regressor (one linear unit, no sigmoid) on a target of non-whole numbers: the
    tf2onnx graph is kept, and it and TensorFlow itself answer float64 values equal to the
    serving function's within the scaled tolerance. The same model ending in a sigmoid is
    refused: a regressor's output is the value."""
    data = frame[["a", "b"]].assign(price=frame.a * 30.5 - frame.b * 12.25 + 100.75)
    X = data[["a", "b"]].to_numpy(np.float64)
    coef, *_ = np.linalg.lstsq(np.column_stack([X, np.ones(len(X))]), data.price.to_numpy(), rcond=None)
    module = tf.Module()
    module.w = tf.Variable(coef[:2].reshape(2, 1).astype(np.float32))
    module.b = tf.Variable(coef[2:].astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def serve(x: Any) -> dict[str, Any]:
        return {"price": tf.matmul(x, module.w) + module.b}

    module.serve = serve
    directory = save(module, serve, tmp_path / "model")
    registry = Registry(tmp_path / "registry")
    card = register_model(directory, name="price", reference=data, target="price", registry=registry)
    assert card.signature.task is Task.REGRESSION and card.signature.classes is None
    assert [f.name for f in card.signature.features] == ["a", "b"]
    assert card.artifact.options["outputs"] == "value"
    expected = tf.saved_model.load(str(directory)).signatures["serving_default"](
        x=tf.constant(X.astype(np.float32)))["price"].numpy().astype(np.float64).reshape(-1)
    allowed = 1e-5 * max(1.0, float(np.abs(expected).max()))  # keras.PROBABILITY_TOLERANCE, scaled
    assert card.runtime == "onnx" and card.onnx_check is not None and card.onnx_check.used
    assert card.onnx_check.max_abs_difference is not None and card.onnx_check.max_abs_difference <= allowed
    batch = FeatureBatch.from_frame(data, card.signature)
    native = TensorFlowRuntime.load(
        verified_path(registry.version_dir("price", card.version), card.artifact), card.artifact, card.signature
    )
    for predictor in (registry.load_predictor(card), native):
        output = predictor.predict(batch)
        assert output.probabilities is None
        assert output.predicted.dtype == np.float64 and output.predicted.shape == (len(data),)
        assert np.abs(output.predicted - expected).max() <= allowed
    # The fit is TensorFlow's to serve, not a copy of the target: the values are not whole.
    assert not np.array_equal(expected, np.round(expected))

    @tf.function(input_signature=[tf.TensorSpec([None, 2], tf.float32, name="x")])
    def squashed(x: Any) -> dict[str, Any]:
        return {"price": tf.sigmoid(tf.matmul(x, module.w) + module.b)}

    module.squashed = squashed
    with pytest.raises(RegistryError, match="made by Sigmoid"):
        register_model(save(module, squashed, tmp_path / "squashed"), name="squashed", reference=data,
                       target="price", registry=registry)
