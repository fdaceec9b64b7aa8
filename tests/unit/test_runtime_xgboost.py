"""The XGBoost runtime: the signature read from the booster, mismatches named, no pickle,
the extra named when xgboost is missing, the ONNX agreement record, and the probabilities
each objective and early stopping give."""

from __future__ import annotations

import pickle
import sys

import numpy as np
import pandas as pd
import pytest

from modelmon.errors import RegistryError
from modelmon.registry import Registry, register_model
from modelmon.runtimes.base import runtime_for_file, runtime_for_object, verified_path
from modelmon.runtimes.xgboost import XGBoostRuntime
from modelmon.types import FeatureBatch

xgb = pytest.importorskip("xgboost")

FEATURES = ["amount", "items", "channel", "region"]
CHANNELS = ["web", "app", "store"]


def shop(n: int = 240, seed: int = 0) -> pd.DataFrame:
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


def numbers(n: int = 240, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=n) for i in range(3)})
    frame["y"] = (frame.x0 - frame.x1 + rng.normal(scale=0.5, size=n) > 0).astype(np.int64)
    return frame


@pytest.fixture(scope="module")
def shop_data() -> pd.DataFrame:
    return shop()


@pytest.fixture(scope="module")
def category_booster(shop_data: pd.DataFrame):
    data = xgb.DMatrix(categorical(shop_data), shop_data.segment, enable_categorical=True)
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": 3, "nthread": 1}
    return xgb.train(params, data, num_boost_round=8)


@pytest.fixture(scope="module")
def binary_classifier():
    frame = numbers()
    return frame, xgb.XGBClassifier(n_estimators=8, max_depth=3, n_jobs=1).fit(frame[["x0", "x1", "x2"]], frame.y)


def batch_of(frame: pd.DataFrame, signature) -> FeatureBatch:
    return FeatureBatch.from_frame(frame, signature)


# -- recognising -----------------------------------------------------------------------


def test_recognises_its_own_objects_and_files_only(tmp_path, category_booster, binary_classifier):
    _, classifier = binary_classifier
    assert runtime_for_object(category_booster) is XGBoostRuntime
    assert runtime_for_object(classifier) is XGBoostRuntime  # before scikit-learn's duck typing
    category_booster.save_model(str(tmp_path / "m.ubj"))
    classifier.save_model(str(tmp_path / "m.json"))
    assert runtime_for_file(tmp_path / "m.ubj") is XGBoostRuntime
    assert runtime_for_file(tmp_path / "m.json") is XGBoostRuntime
    (tmp_path / "other.json").write_text('{"name": "not a model"}')
    assert not XGBoostRuntime.reads(tmp_path / "other.json")
    with pytest.raises(RegistryError, match="unknown model file type"):
        runtime_for_file(tmp_path / "other.json")
    assert not XGBoostRuntime.recognises({"learner": {}})


# -- the signature ---------------------------------------------------------------------


def test_feature_names_and_categories_come_from_the_model(category_booster, shop_data):
    # The reference data's columns in another order, with an extra column: the model decides.
    reference = shop_data[["region", "segment", "items", "channel", "amount"]].assign(note="x")
    signature = XGBoostRuntime.infer_signature(category_booster, reference, "segment", XGBoostRuntime.text_columns(category_booster))
    assert signature.feature_names == FEATURES
    assert signature.input_layout == "columns"
    assert [f.dtype for f in signature.features] == ["float64", "int64", "string", "string"]
    assert set(signature.features[2].categories or []) == set(CHANNELS)
    assert signature.classes == [0, 1, 2]
    # The categories in code order are the model's own (what the codes mean).
    assert XGBoostRuntime.text_columns(category_booster) == {
        "channel": CHANNELS, "region": ["south", "north", "east"],
    }


def test_signature_without_reference_data(category_booster):
    signature = XGBoostRuntime.infer_signature(category_booster, None, None, XGBoostRuntime.text_columns(category_booster))
    assert [(f.name, f.dtype) for f in signature.features] == [
        ("amount", "float64"), ("items", "int64"), ("channel", "string"), ("region", "string"),
    ]
    assert signature.features[2].categories == CHANNELS


def test_a_model_trained_on_an_array_takes_its_names_from_the_reference():
    frame = numbers()
    model = xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(frame[["x0", "x1", "x2"]].to_numpy(), frame.y)
    signature = XGBoostRuntime.infer_signature(model, frame, "y", {})
    assert signature.feature_names == ["x0", "x1", "x2"] and signature.input_layout == "matrix"
    with pytest.raises(RegistryError, match="takes 3 unnamed features but the reference data has 2"):
        XGBoostRuntime.infer_signature(model, frame.drop(columns="x2"), "y", {})


def test_a_feature_missing_from_the_reference_is_named(category_booster, shop_data):
    with pytest.raises(RegistryError, match="expects feature 'items'"):
        XGBoostRuntime.infer_signature(category_booster, shop_data.drop(columns="items"), "segment", {})


def test_text_where_the_model_takes_a_number_is_named(binary_classifier):
    frame, model = binary_classifier
    with pytest.raises(RegistryError, match="takes feature 'x1' as a number"):
        XGBoostRuntime.infer_signature(model, frame.assign(x1="a"), "y", {})
    with pytest.raises(RegistryError, match="takes feature 'x2' as a number"):
        XGBoostRuntime.infer_signature(model, frame, "y", {"x2": None})


# -- serving what the framework answers ------------------------------------------------


def test_categories_are_mapped_to_the_models_codes(category_booster, shop_data):
    signature = XGBoostRuntime.infer_signature(category_booster, shop_data, "segment", XGBoostRuntime.text_columns(category_booster))
    runtime = XGBoostRuntime.wrap(category_booster, signature)
    expected = category_booster.predict(xgb.DMatrix(categorical(shop_data), enable_categorical=True))
    np.testing.assert_allclose(runtime.predict(batch_of(shop_data, signature)).probabilities, expected, rtol=0, atol=1e-6)
    # An unknown level and a missing one are missing values to the trees.
    rows = shop_data.head(2).copy()
    rows["channel"] = ["kiosk", None]
    with_nan = categorical(shop_data.head(2)).assign(channel=pd.Categorical([None, None], categories=CHANNELS))
    expected = category_booster.predict(xgb.DMatrix(with_nan, enable_categorical=True))
    np.testing.assert_allclose(runtime.predict(batch_of(rows, signature)).probabilities, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("objective", ["binary:logistic", "binary:logitraw"])
def test_binary_probabilities(objective):
    frame = numbers()
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2, objective=objective).fit(frame[["x0", "x1", "x2"]], frame.y)
    signature = XGBoostRuntime.infer_signature(model, frame, "y", {})
    proba = XGBoostRuntime.wrap(model, signature).predict(batch_of(frame, signature)).probabilities
    assert proba.shape == (len(frame), 2)
    margin = model.get_booster().inplace_predict(frame[["x0", "x1", "x2"]], predict_type="margin")
    np.testing.assert_allclose(proba[:, 1], 1 / (1 + np.exp(-margin)), rtol=0, atol=1e-6)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_softmax_objective_gives_predict_probas_probabilities(shop_data):
    frame = shop_data.drop(columns=["channel", "region"])
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2, objective="multi:softmax").fit(frame[["amount", "items"]], frame.segment)
    signature = XGBoostRuntime.infer_signature(model, frame, "segment", {})
    proba = XGBoostRuntime.wrap(model, signature).predict(batch_of(frame, signature)).probabilities
    np.testing.assert_allclose(proba, model.predict_proba(frame[["amount", "items"]]), rtol=0, atol=1e-6)


def test_early_stopping_answers_as_each_api_does(tmp_path):
    """XGBClassifier.predict_proba uses the best iteration; Booster.predict every tree."""
    frame = numbers(400, seed=5)
    X, y = frame[["x0", "x1", "x2"]], frame.y
    model = xgb.XGBClassifier(n_estimators=60, max_depth=3, learning_rate=0.5, early_stopping_rounds=3)
    model.fit(X[:300], y[:300], eval_set=[(X[300:], y[300:])], verbose=False)
    assert model.best_iteration + 1 < model.get_booster().num_boosted_rounds()
    card = register_model(model, name="stopped", reference=frame, target="y", registry=tmp_path, convert_to_onnx=False)
    assert card.artifact.options["iteration_range"] == [0, model.best_iteration + 1]
    served = Registry(tmp_path).load_predictor(card)
    batch = batch_of(frame, card.signature)
    np.testing.assert_allclose(served.predict(batch).probabilities, model.predict_proba(X), rtol=0, atol=1e-6)
    booster = model.get_booster()
    signature = XGBoostRuntime.infer_signature(booster, frame, "y", {})
    every_tree = booster.inplace_predict(X)
    np.testing.assert_allclose(XGBoostRuntime.wrap(booster, signature).predict(batch).probabilities[:, 1], every_tree, atol=1e-6)


@pytest.mark.parametrize(
    ("model", "message"),
    [
        # Regressors are served (the conformance rows), but not quantile regression.
        (lambda: xgb.XGBRegressor(n_estimators=2, objective="reg:quantileerror", quantile_alpha=0.5), "is not served"),
        (lambda: xgb.XGBClassifier(n_estimators=2, objective="binary:hinge"), "gives no class probabilities"),
    ],
)
def test_objectives_without_probabilities_are_refused(model, message, tmp_path):
    frame = numbers()
    fitted = model().fit(frame[["x0", "x1", "x2"]], frame.y)
    with pytest.raises(RegistryError, match=message):
        register_model(fitted, name="refused", reference=frame, target="y", registry=tmp_path)


# -- saving and loading safely ---------------------------------------------------------


def test_saved_as_xgboost_json_or_ubj_never_pickle(tmp_path, category_booster, shop_data):
    category_booster.save_model(str(tmp_path / "m.json"))
    for source, expected in ((category_booster, "xgboost-ubj"), (tmp_path / "m.json", "xgboost-json")):
        card = register_model(source, name="shop", reference=shop_data, target="segment", registry=tmp_path / "reg")
        assert card.artifact.format == expected
        path = verified_path(Registry(tmp_path / "reg").version_dir("shop", card.version), card.artifact)
        head = path.read_bytes()[:2]
        assert head[:1] == b"{" and head != pickle.dumps(0)[:2]
        assert card.artifact.options["categories"] == {"channel": CHANNELS, "region": ["south", "north", "east"]}


def test_loading_refuses_other_formats(tmp_path, category_booster, shop_data):
    card = register_model(category_booster, name="shop", reference=shop_data, target="segment", registry=tmp_path)
    directory = Registry(tmp_path).version_dir("shop", card.version)
    artifact = card.artifact.model_copy(update={"format": "pickle"})
    with pytest.raises(RegistryError, match="loads XGBoost JSON or UBJSON files only"):
        XGBoostRuntime.load(verified_path(directory, artifact), artifact, card.signature)


def test_a_pickled_model_needs_trust(tmp_path, binary_classifier):
    frame, model = binary_classifier
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps(model))
    with pytest.raises(RegistryError, match="is a pickle"):
        register_model(path, name="pickled", reference=frame, target="y", registry=tmp_path / "reg")


def test_a_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "m.json"
    path.write_text('{"learner": {"broken": ')
    with pytest.raises(RegistryError, match=r"XGBoost cannot load m\.json"):
        register_model(path, name="broken", registry=tmp_path / "reg")


def test_a_missing_xgboost_names_the_extra(tmp_path, binary_classifier, monkeypatch):
    _, model = binary_classifier
    model.save_model(str(tmp_path / "m.json"))
    monkeypatch.setitem(sys.modules, "xgboost", None)  # import xgboost raises ImportError
    assert not XGBoostRuntime.recognises(model)
    with pytest.raises(RegistryError, match=r"pip install 'modelmon\[xgboost\]'"):
        register_model(tmp_path / "m.json", name="m", registry=tmp_path / "reg")


# -- ONNX ------------------------------------------------------------------------------


def test_onnx_graph_kept_when_it_agrees_and_served_without_xgboost(tmp_path, binary_classifier, monkeypatch):
    frame, model = binary_classifier
    card = register_model(model, name="numbers", reference=frame, target="y", registry=tmp_path)
    check = card.onnx_check
    assert check is not None and check.used, check
    assert check.max_abs_difference is not None and check.max_abs_difference <= 1e-5
    # The validation rows, and as many again with missing values.
    assert check.rows_compared == 2 * len(frame)
    assert card.flavor == "xgboost" and card.runtime == "onnx"
    monkeypatch.setitem(sys.modules, "xgboost", None)
    served = Registry(tmp_path).load_predictor(card)
    assert served.name == "onnx"
    np.testing.assert_allclose(
        served.predict(batch_of(frame, card.signature)).probabilities,
        model.predict_proba(frame[["x0", "x1", "x2"]]), rtol=0, atol=1e-5,
    )


def test_onnx_refused_is_recorded(tmp_path, category_booster, shop_data):
    card = register_model(category_booster, name="shop", reference=shop_data, target="segment", registry=tmp_path)
    assert card.runtime == "xgboost" and card.serving_artifact is None
    assert card.onnx_check is not None and not card.onnx_check.used
    assert "categorical features ['channel', 'region']" in card.onnx_check.reason
    # A graph that disagrees (the converter reads multi:softmax's output as probabilities).
    frame = shop_data.drop(columns=["channel", "region"])
    model = xgb.XGBClassifier(n_estimators=5, max_depth=2, objective="multi:softmax").fit(frame[["amount", "items"]], frame.segment)
    signature = XGBoostRuntime.infer_signature(model, frame, "segment", {})
    graph, check = XGBoostRuntime.to_onnx(model, signature, batch_of(frame, signature))
    assert graph is None and not check.used
    assert check.max_abs_difference is not None and check.max_abs_difference > 1e-5
    assert check.reason.startswith("probabilities differ by")
