"""The Keras 3 runtime on its own: what it reads from a model, what it refuses, and the ONNX
record. The models are untrained (random weights): what is checked does not need training.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is first imported

import keras
import numpy as np
import pandas as pd
import pytest
import torch

from modelmon.errors import RegistryError
from modelmon.registry import Registry, register_model
from modelmon.runtimes import keras as keras_runtime
from modelmon.runtimes.base import runtime_for_file, runtime_for_object
from modelmon.runtimes.keras import KerasRuntime, TextLevels
from modelmon.types import FeatureBatch

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
torch.set_num_threads(1)
LEVELS = ["app", "store", "web"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 120
    return pd.DataFrame({
        "amount": rng.gamma(2.0, 30.0, n),
        "items": rng.integers(1, 10, n),
        "channel": rng.choice(LEVELS, n),
        "churned": rng.choice(["no", "yes"], n),
    })


def per_feature_model(units: int = 1, activation: str | None = "sigmoid") -> keras.Model:
    """Inputs named after the features: a float, an int32 and a text feature's codes."""
    keras.utils.set_random_seed(0)
    amount = keras.Input((1,), name="amount")
    items = keras.Input((1,), name="items", dtype="int32")
    channel = keras.Input((1,), name="channel", dtype="int32")
    x = keras.layers.Concatenate()([
        amount / 50.0, keras.ops.cast(items, "float32") / 5.0, TextLevels(LEVELS, name="channel_levels")(channel),
    ])
    x = keras.layers.Dense(4, activation="relu")(x)
    return keras.Model([amount, items, channel], keras.layers.Dense(units, activation=activation)(x))


def matrix_model(width: int = 2, units: int = 3) -> keras.Model:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((width,), name="features")
    return keras.Model(inputs, keras.layers.Dense(units, activation="softmax")(inputs / 50.0))


def keras_inputs(frame: pd.DataFrame) -> dict[str, np.ndarray]:
    return {
        "amount": frame[["amount"]].to_numpy(np.float32),
        "items": frame[["items"]].to_numpy(np.int32),
        "channel": TextLevels(LEVELS).encode(frame["channel"]),
    }


def keras_proba(model: keras.Model, frame: pd.DataFrame) -> np.ndarray:
    p = model.predict(keras_inputs(frame), verbose=0).astype(np.float64).reshape(-1)
    return np.column_stack([1 - p, p])


# -- recognising and reading ---------------------------------------------------------------


def test_importing_the_runtime_does_not_import_keras() -> None:
    code = (
        "import sys; from modelmon.runtimes.base import runtime_names; "
        "assert 'keras' in runtime_names(); assert 'keras' not in sys.modules, 'keras imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_recognises_keras_models_and_nothing_else(frame: pd.DataFrame, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    model = per_feature_model()
    assert runtime_for_object(model) is KerasRuntime
    assert not KerasRuntime.recognises(LogisticRegression())
    assert not KerasRuntime.recognises(b"onnx bytes")
    path = tmp_path / "model.keras"
    model.save(path)
    assert runtime_for_file(path) is KerasRuntime


def test_feature_names_types_and_levels_come_from_the_model_inputs() -> None:
    model = per_feature_model()
    signature = KerasRuntime.infer_signature(model, None, None, KerasRuntime.text_columns(model))
    assert signature.feature_names == ["amount", "items", "channel"]
    assert [f.dtype for f in signature.features] == ["float32", "int32", "string"]
    assert signature.features[2].categories == LEVELS
    assert signature.input_layout == "columns"
    assert signature.classes == [0, 1]  # no target: the output indices


def test_registration_takes_types_from_the_reference_and_classes_from_the_target(
    frame: pd.DataFrame, tmp_path: Path
) -> None:
    model = per_feature_model()
    card = register_model(model, name="shop", reference=frame, target="churned", validation=frame, registry=tmp_path)
    signature = card.signature
    assert signature.feature_names == ["amount", "items", "channel"]
    assert [f.dtype for f in signature.features] == ["float64", "int64", "string"]
    assert signature.classes == ["no", "yes"]  # sorted labels: the sigmoid unit is P("yes")
    assert card.flavor == "keras"
    assert card.artifact.options["outputs"] == "probabilities"
    assert card.artifact.options["backend"] == "torch"
    served = Registry(tmp_path).load_predictor(card)
    batch = FeatureBatch.from_frame(frame, signature)
    np.testing.assert_allclose(served.predict(batch).probabilities, keras_proba(model, frame), atol=1e-5)
    # Text the model does not know (and a missing value) is a row of zeros for TextLevels.
    odd = frame.head(2).assign(channel=["phone", None])
    expected = keras_proba(model, odd.assign(channel=["nothing", "nothing"]))
    np.testing.assert_allclose(served.predict(FeatureBatch.from_frame(odd, signature)).probabilities, expected, atol=1e-5)


def test_one_matrix_input_takes_its_feature_names_from_the_reference(frame: pd.DataFrame) -> None:
    data = frame[["amount", "items"]].assign(segment=np.arange(len(frame)) % 3)
    signature = KerasRuntime.infer_signature(matrix_model(), data, "segment", {})
    assert signature.input_layout == "matrix"
    assert signature.feature_names == ["amount", "items"]
    assert signature.classes == [0, 1, 2]
    no_data = KerasRuntime.infer_signature(matrix_model(), None, None, {})
    assert no_data.feature_names == ["x0", "x1"]


# -- mismatches and refusals -------------------------------------------------------------------


def test_a_feature_missing_from_the_reference_is_named(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(RegistryError, match="'items'"):
        register_model(per_feature_model(), name="m", reference=frame.drop(columns="items"), target="churned",
                       registry=tmp_path)


def test_text_for_a_numeric_input_is_named(frame: pd.DataFrame) -> None:
    data = frame.assign(items=frame["channel"])
    with pytest.raises(RegistryError, match="feature 'items' holds text"):
        KerasRuntime.infer_signature(per_feature_model(), data, "churned", {})


def test_a_matrix_input_of_another_width_is_refused(frame: pd.DataFrame) -> None:
    with pytest.raises(RegistryError, match="takes 3 features but the reference data has 2"):
        KerasRuntime.infer_signature(matrix_model(width=3, units=2), frame[["amount", "items", "churned"]], "churned", {})
    with pytest.raises(RegistryError, match=r"text feature\(s\) \['channel'\]"):
        KerasRuntime.infer_signature(matrix_model(width=2, units=2), frame[["amount", "channel", "churned"]], "churned", {})


def test_more_target_labels_than_outputs_is_refused(frame: pd.DataFrame) -> None:
    data = frame.assign(churned=np.arange(len(frame)) % 3)  # 3 labels, a sigmoid unit
    with pytest.raises(RegistryError, match="2 output classes but the target 'churned' has 3 labels"):
        KerasRuntime.infer_signature(per_feature_model(), data, "churned", {})


def test_outputs_that_are_not_probabilities_are_refused(frame: pd.DataFrame) -> None:
    with pytest.raises(RegistryError, match="not class probabilities"):
        KerasRuntime.infer_signature(per_feature_model(units=2, activation="relu"), frame, "churned", {})


def test_a_lambda_layer_is_refused_by_safe_mode(frame: pd.DataFrame, tmp_path: Path) -> None:
    inputs = keras.Input((2,), name="features")
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(keras.layers.Lambda(lambda t: t * 2)(inputs)))
    path = tmp_path / "lambda.keras"
    model.save(path)
    data = frame[["amount", "items"]].assign(y=np.arange(len(frame)) % 2)
    with pytest.raises(RegistryError, match="refused by Keras' safe mode"):
        register_model(path, name="m", reference=data, target="y", registry=tmp_path / "registry")
    # The same model as a Python object: it is saved as .keras, which would not load safely.
    with pytest.raises(RegistryError, match="refused by Keras' safe mode"):
        register_model(model, name="m", reference=data, target="y", registry=tmp_path / "registry")
    assert Registry(tmp_path / "registry").versions("m") == []


def test_a_missing_keras_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "model.keras"
    per_feature_model().save(path)
    monkeypatch.setitem(sys.modules, "keras", None)  # `import keras` now fails
    with pytest.raises(RegistryError, match=r"pip install 'modelmon\[keras\]'"):
        register_model(path, name="m", registry=tmp_path / "registry")


def test_a_missing_backend_says_how_to_choose_one(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    real = importlib.import_module

    def no_backend(name: str, *args: object) -> object:
        if name == "keras":
            raise ModuleNotFoundError("No module named 'tensorflow'", name="tensorflow")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_backend)
    with pytest.raises(RegistryError, match="KERAS_BACKEND"):
        keras_runtime.keras_module()


# -- the ONNX record ---------------------------------------------------------------------------


def test_the_exported_graph_is_served_when_it_agrees(frame: pd.DataFrame, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    model = per_feature_model()
    card = register_model(model, name="m", reference=frame, target="churned", validation=frame, registry=tmp_path)
    check = card.onnx_check
    assert check is not None and check.used, check
    assert check.rows_compared == len(frame)
    assert check.max_abs_difference is not None and check.max_abs_difference <= 1e-5
    assert card.runtime == "onnx" and card.serving_artifact is not None
    # Serving the graph needs no Keras.
    monkeypatch.setitem(sys.modules, "keras", None)
    served = Registry(tmp_path).load_predictor(card)
    proba = served.predict(FeatureBatch.from_frame(frame, card.signature)).probabilities
    monkeypatch.undo()
    np.testing.assert_allclose(proba, keras_proba(model, frame), atol=1e-5)


def test_logits_get_their_softmax_or_sigmoid_in_both_forms(frame: pd.DataFrame, tmp_path: Path) -> None:
    model = per_feature_model(units=1, activation=None)  # a Dense layer without activation: a logit
    card = register_model(model, name="m", reference=frame, target="churned", registry=tmp_path)
    assert card.artifact.options["outputs"] == "logits"
    assert card.onnx_check is not None and card.onnx_check.used, card.onnx_check
    logit = model.predict(keras_inputs(frame), verbose=0).astype(np.float64).reshape(-1)
    p = 1 / (1 + np.exp(-logit))
    expected = np.column_stack([1 - p, p])
    batch = FeatureBatch.from_frame(frame, card.signature)
    for predictor in (Registry(tmp_path).load_predictor(card), KerasRuntime.wrap(model, card.signature)):
        np.testing.assert_allclose(predictor.predict(batch).probabilities, expected, atol=1e-5)


def test_a_failed_export_is_served_natively_and_recorded(frame: pd.DataFrame, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> bytes:
        raise RuntimeError("no exporter for this layer")

    monkeypatch.setattr(keras_runtime, "_export_onnx", fail)
    card = register_model(per_feature_model(), name="m", reference=frame, target="churned", registry=tmp_path)
    assert card.onnx_check is not None and not card.onnx_check.used
    assert "no exporter for this layer" in card.onnx_check.reason
    assert card.runtime == "keras" and card.serving_artifact is None
    assert isinstance(Registry(tmp_path).load_predictor(card), KerasRuntime)


def test_a_missing_value_in_an_integer_input_is_an_error(frame: pd.DataFrame) -> None:
    model = per_feature_model()
    signature = KerasRuntime.infer_signature(model, frame, "churned", {"channel": LEVELS})
    batch = FeatureBatch.from_frame(frame.head(3), signature)
    batch.numeric[0, 1] = np.nan
    with pytest.raises(ValueError, match="'items' input cannot take a missing value"):
        KerasRuntime.wrap(model, signature).predict(batch)
