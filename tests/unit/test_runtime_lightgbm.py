"""The LightGBM runtime: the signature read from the model file, mismatches named, no pickle,
the extra named when lightgbm is missing, and the ONNX agreement record (kept when the
float32 graph agrees, refused and recorded when it does not)."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pandas as pd
import pytest

from modelmon.errors import RegistryError
from modelmon.registry import Registry, register_model
from modelmon.runtimes.base import runtime_for_file, runtime_for_object, verified_path
from modelmon.runtimes.lightgbm import LightGBMRuntime
from modelmon.types import FeatureBatch

lgb = pytest.importorskip("lightgbm")

FEATURES = ["amount", "items", "channel", "region"]
CHANNELS = ["web", "app", "store"]
PARAMS = {"max_depth": 3, "num_leaves": 8, "verbose": -1, "num_threads": 1, "min_child_samples": 10}


def shop(n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Text columns as text (as reference data holds them); ``segment`` 0/1/2."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 30.0, n),
            "items": rng.integers(1, 10, n),
            "channel": rng.choice(CHANNELS, n),
            "region": rng.choice(["north", "south", "east"], n),
        }
    )
    score = frame.amount / 60 + (frame.channel == "app") * 1.5 - (frame.region == "south")
    frame["segment"] = np.digitize(score + rng.normal(scale=0.3, size=n), [1.0, 2.2])
    return frame


def categorical(frame: pd.DataFrame) -> pd.DataFrame:
    # The training categories in a non-sorted order: codes follow it, not the alphabet.
    return frame[FEATURES].astype(
        {"channel": pd.CategoricalDtype(CHANNELS), "region": pd.CategoricalDtype(["south", "north", "east"])}
    )


def numbers(n: int = 300, seed: int = 1, scale: float = 1.0, offset: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": offset + scale * rng.normal(size=n) for i in range(3)})
    frame["y"] = (frame.x0 - frame.x1 + scale * rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    return frame


@pytest.fixture(scope="module")
def shop_data() -> pd.DataFrame:
    return shop()


@pytest.fixture(scope="module")
def category_booster(shop_data: pd.DataFrame):
    data = lgb.Dataset(categorical(shop_data), shop_data.segment)
    return lgb.train({"objective": "multiclass", "num_class": 3, **PARAMS}, data, num_boost_round=8)


@pytest.fixture(scope="module")
def binary_classifier():
    frame = numbers()
    return frame, lgb.LGBMClassifier(n_estimators=8, **PARAMS).fit(frame[["x0", "x1", "x2"]], frame.y)


def batch_of(frame: pd.DataFrame, signature) -> FeatureBatch:
    return FeatureBatch.from_frame(frame, signature)


# -- recognising -----------------------------------------------------------------------


def test_recognises_its_own_objects_and_files_only(tmp_path, category_booster, binary_classifier):
    _, classifier = binary_classifier
    assert runtime_for_object(category_booster) is LightGBMRuntime
    assert runtime_for_object(classifier) is LightGBMRuntime  # before scikit-learn's duck typing
    category_booster.save_model(str(tmp_path / "m.txt"))
    assert runtime_for_file(tmp_path / "m.txt") is LightGBMRuntime
    (tmp_path / "notes.txt").write_text("trees are nice\n")
    assert not LightGBMRuntime.reads(tmp_path / "notes.txt")
    with pytest.raises(RegistryError, match="unknown model file type"):
        runtime_for_file(tmp_path / "notes.txt")


# -- the signature ---------------------------------------------------------------------


def test_feature_names_and_categories_come_from_the_model_file(tmp_path, category_booster, shop_data):
    category_booster.save_model(str(tmp_path / "m.txt"))
    booster = LightGBMRuntime.read(tmp_path / "m.txt", None)  # type: ignore[arg-type]
    assert LightGBMRuntime.text_columns(booster) == {"channel": CHANNELS, "region": ["south", "north", "east"]}
    reference = shop_data[["region", "segment", "items", "channel", "amount"]].assign(note="x")
    signature = LightGBMRuntime.infer_signature(booster, reference, "segment", LightGBMRuntime.text_columns(booster))
    assert signature.feature_names == FEATURES and signature.input_layout == "columns"
    assert [f.dtype for f in signature.features] == ["float64", "int64", "string", "string"]
    assert signature.classes == [0, 1, 2]
    without = LightGBMRuntime.infer_signature(booster, None, None, LightGBMRuntime.text_columns(booster))
    assert [(f.name, f.dtype) for f in without.features] == [
        ("amount", "float64"), ("items", "float64"), ("channel", "string"), ("region", "string"),
    ]


def test_string_classes_of_a_classifier(shop_data):
    labels = np.array(["bronze", "gold", "silver"])[shop_data.segment]
    model = lgb.LGBMClassifier(n_estimators=4, **PARAMS).fit(categorical(shop_data), labels)
    signature = LightGBMRuntime.infer_signature(model, shop_data, "segment", LightGBMRuntime.text_columns(model))
    assert signature.classes == ["bronze", "gold", "silver"]
    proba = LightGBMRuntime.wrap(model, signature).predict(batch_of(shop_data, signature)).probabilities
    np.testing.assert_allclose(proba, model.predict_proba(categorical(shop_data)), rtol=0, atol=1e-9)


def test_a_model_trained_on_an_array_takes_its_names_from_the_reference():
    frame = numbers()
    model = lgb.LGBMClassifier(n_estimators=3, **PARAMS).fit(frame[["x0", "x1", "x2"]].to_numpy(), frame.y)
    signature = LightGBMRuntime.infer_signature(model, frame, "y", {})
    assert signature.feature_names == ["x0", "x1", "x2"] and signature.input_layout == "matrix"
    with pytest.raises(RegistryError, match="takes 3 unnamed features but the reference data has 4"):
        LightGBMRuntime.infer_signature(model, frame.assign(extra=1.0), "y", {})


def test_mismatches_with_the_reference_are_named(category_booster, shop_data, binary_classifier):
    with pytest.raises(RegistryError, match="expects feature 'region'"):
        LightGBMRuntime.infer_signature(category_booster, shop_data.drop(columns="region"), "segment", {})
    frame, model = binary_classifier
    with pytest.raises(RegistryError, match="takes feature 'x0' as a number"):
        LightGBMRuntime.infer_signature(model, frame.assign(x0="a"), "y", {})


def test_integer_coded_categories_are_numbers_and_mixed_ones_refused(shop_data):
    coded = categorical(shop_data).assign(channel=lambda f: f.channel.cat.codes, region=lambda f: f.region.cat.codes)
    model = lgb.train(PARAMS | {"objective": "multiclass", "num_class": 3},
                      lgb.Dataset(coded, shop_data.segment, categorical_feature=["channel", "region"]), 4)
    reference = coded.assign(segment=shop_data.segment)
    signature = LightGBMRuntime.infer_signature(model, reference, "segment", LightGBMRuntime.text_columns(model))
    assert not signature.categorical_features
    proba = LightGBMRuntime.wrap(model, signature).predict(batch_of(reference, signature)).probabilities
    np.testing.assert_allclose(proba, model.predict(coded), rtol=0, atol=1e-9)
    with pytest.raises(RegistryError, match="categorical in the model, which does not record its categories"):
        LightGBMRuntime.infer_signature(model, shop_data, "segment", {})
    mixed = categorical(shop_data).assign(items=shop_data["items"])
    model = lgb.train(PARAMS | {"objective": "multiclass", "num_class": 3},
                      lgb.Dataset(mixed, shop_data.segment, categorical_feature=["items", "channel", "region"]), 4)
    with pytest.raises(RegistryError, match="cannot tell which features take text"):
        LightGBMRuntime.text_columns(model)


def test_unknown_and_missing_categories_are_missing_values(category_booster, shop_data):
    signature = LightGBMRuntime.infer_signature(category_booster, shop_data, "segment", LightGBMRuntime.text_columns(category_booster))
    runtime = LightGBMRuntime.wrap(category_booster, signature)
    np.testing.assert_allclose(
        runtime.predict(batch_of(shop_data, signature)).probabilities,
        category_booster.predict(categorical(shop_data)), rtol=0, atol=1e-9,
    )
    rows = shop_data.head(2).copy()
    rows["channel"] = ["kiosk", None]
    expected = category_booster.predict(categorical(rows))  # LightGBM maps unknown levels to NaN
    np.testing.assert_allclose(runtime.predict(batch_of(rows, signature)).probabilities, expected, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    ("objective", "message"),
    [("multiclassova", "do not sum to one"), ("lambdarank", "ranks")],  # regressors are served: the conformance rows
)
def test_objectives_without_probabilities_are_refused(objective, message, tmp_path):
    frame = numbers()
    params = PARAMS | {"objective": objective}
    if objective == "multiclassova":
        params["num_class"] = 2
    data = lgb.Dataset(frame[["x0", "x1", "x2"]], frame.y, group=[len(frame)] if objective == "lambdarank" else None)
    booster = lgb.train(params, data, 2)
    with pytest.raises(RegistryError, match=message):
        register_model(booster, name="refused", reference=frame, target="y", registry=tmp_path)


# -- saving and loading safely ---------------------------------------------------------


def test_saved_as_lightgbm_text_never_pickle(tmp_path, category_booster, shop_data):
    card = register_model(category_booster, name="shop", reference=shop_data, target="segment", registry=tmp_path)
    assert card.artifact.format == "lightgbm-text"
    path = verified_path(Registry(tmp_path).version_dir("shop", card.version), card.artifact)
    assert path.read_text().startswith("tree\n")
    assert card.artifact.options["categories"] == {"channel": CHANNELS, "region": ["south", "north", "east"]}
    served = Registry(tmp_path).load_predictor(card)
    assert served.name == "lightgbm"
    np.testing.assert_allclose(
        served.predict(batch_of(shop_data, card.signature)).probabilities,
        category_booster.predict(categorical(shop_data)), rtol=0, atol=1e-9,
    )
    artifact = card.artifact.model_copy(update={"format": "pickle"})
    with pytest.raises(RegistryError, match="loads LightGBM text model files only"):
        LightGBMRuntime.load(path, artifact, card.signature)


def test_a_pickled_model_needs_trust(tmp_path, binary_classifier):
    frame, model = binary_classifier
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    with pytest.raises(RegistryError, match="is a pickle"):
        register_model(path, name="pickled", reference=frame, target="y", registry=tmp_path / "reg")


def test_a_missing_lightgbm_names_the_extra(tmp_path, binary_classifier, monkeypatch):
    _, model = binary_classifier
    model.booster_.save_model(str(tmp_path / "m.txt"))
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # import lightgbm raises ImportError
    assert not LightGBMRuntime.recognises(model)
    with pytest.raises(RegistryError, match=r"pip install 'modelmon\[lightgbm\]'"):
        register_model(tmp_path / "m.txt", name="m", registry=tmp_path / "reg")


# -- ONNX ------------------------------------------------------------------------------


def test_onnx_graph_kept_when_it_agrees(tmp_path, binary_classifier, monkeypatch):
    frame, model = binary_classifier
    card = register_model(model, name="numbers", reference=frame, target="y", registry=tmp_path)
    check = card.onnx_check
    assert check is not None and check.used, check
    assert check.max_abs_difference is not None and check.max_abs_difference <= 1e-5
    assert check.rows_compared == len(frame) + 256  # and 256 of them with missing values
    assert card.flavor == "lightgbm" and card.runtime == "onnx"
    monkeypatch.setitem(sys.modules, "lightgbm", None)
    served = Registry(tmp_path).load_predictor(card)
    np.testing.assert_allclose(
        served.predict(batch_of(frame, card.signature)).probabilities,
        model.predict_proba(frame[["x0", "x1", "x2"]]), rtol=0, atol=1e-5,
    )


def test_onnx_refused_when_float32_thresholds_disagree(tmp_path):
    """Values around 1e6 that differ in the fifth decimal: float32 cannot tell them apart,
    LightGBM's float64 thresholds can. The graph is refused, the model served natively."""
    frame = numbers(scale=1e-3, offset=1e6)
    model = lgb.LGBMClassifier(n_estimators=8, **PARAMS).fit(frame[["x0", "x1", "x2"]], frame.y)
    card = register_model(model, name="large", reference=frame, target="y", registry=tmp_path)
    check = card.onnx_check
    assert check is not None and not check.used
    assert check.max_abs_difference is not None and check.max_abs_difference > 1e-5
    assert "float32" in check.reason
    assert card.runtime == "lightgbm" and card.serving_artifact is None
    served = Registry(tmp_path).load_predictor(card)
    np.testing.assert_allclose(
        served.predict(batch_of(frame, card.signature)).probabilities,
        model.predict_proba(frame[["x0", "x1", "x2"]]), rtol=0, atol=1e-9,
    )


def test_categorical_models_are_served_natively(tmp_path, category_booster, shop_data):
    card = register_model(category_booster, name="shop", reference=shop_data, target="segment", registry=tmp_path)
    assert card.runtime == "lightgbm"
    assert card.onnx_check is not None and not card.onnx_check.used
    assert "categorical features ['channel', 'region']" in card.onnx_check.reason
