"""Registration: signature, flavours, safe loading, versions, ONNX agreement, baseline."""

import json

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score

from modelmon.errors import ModelNotFoundError, RegistryError
from modelmon.registry import FeatureBatch, Registry, register_model
from modelmon.runtimes.sklearn import SklearnRuntime


def test_pipeline_with_categoricals_gets_a_typed_signature(tmp_path, shop_model, shop_frame):
    card = register_model(shop_model, name="shop", reference=shop_frame, target="segment", registry=tmp_path)
    features = {f.name: f for f in card.signature.features}
    assert list(features) == ["amount", "items", "channel", "region"]
    assert features["amount"].dtype == "float64" and features["items"].dtype == "int64"
    assert features["channel"].dtype == "string"
    assert set(features["channel"].categories) == {"web", "app", "store"}
    assert card.signature.classes == ["bronze", "gold", "silver"]
    assert card.signature.input_layout == "columns"
    on_disk = json.loads((tmp_path / "shop" / "1" / "model.json").read_text())
    assert on_disk["name"] == "shop" and on_disk["version"] == 1
    assert {"reference_profile", "calibration", "baseline"} <= on_disk.keys()


def test_versions_count_up_and_latest_resolves_to_the_highest(tmp_path, cancer_model):
    for _ in range(3):
        register_model(cancer_model, name="m", registry=tmp_path)
    registry = Registry(tmp_path)
    assert registry.versions("m") == [1, 2, 3]
    assert registry.card("m").version == 3
    assert registry.card("m", "2").version == 2
    with pytest.raises(ModelNotFoundError, match="no version 9"):
        registry.card("m", 9)
    with pytest.raises(ModelNotFoundError, match="not registered"):
        registry.card("other")


def test_onnx_conversion_agrees_with_scikit_learn(tmp_path, shop_model, shop_frame):
    card = register_model(shop_model, name="shop", reference=shop_frame, target="segment",
                          validation=shop_frame, registry=tmp_path)
    assert card.runtime == "onnx" and card.onnx_check.used
    registry = Registry(tmp_path)
    served = registry.load_predictor(card)
    batch = FeatureBatch.from_frame(shop_frame, card.signature)
    expected = shop_model.predict_proba(shop_frame.drop(columns="segment"))
    np.testing.assert_allclose(served.predict_proba(batch), expected, atol=1e-5)


def test_model_that_does_not_convert_is_served_by_scikit_learn(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["y"] = (frame.a > 0).astype(int)
    frame.loc[::7, "a"] = np.nan
    model = HistGradientBoostingClassifier(max_iter=5).fit(frame[["a", "b"]], frame.y)
    card = register_model(model, name="hgb", reference=frame, target="y", registry=tmp_path)
    if card.runtime == "onnx":  # conversion may succeed with newer skl2onnx: then it agreed
        assert card.onnx_check.max_abs_difference <= 1e-4
    else:
        assert card.onnx_check.reason
    # HistGradientBoosting takes NaN: the probe must have found that out.
    assert all(f.nullable for f in card.signature.features)


def test_logistic_regression_is_not_nullable_without_missing_data(tmp_path, cancer_model, cancer_frame):
    card = register_model(cancer_model, name="c", reference=cancer_frame, target="target", registry=tmp_path)
    assert not any(f.nullable for f in card.signature.features)


def test_baseline_equals_scikit_learn_metrics(tmp_path, shop_model, shop_frame):
    card = register_model(shop_model, name="shop", reference=shop_frame, target="segment",
                          validation=shop_frame.iloc[:200], registry=tmp_path)
    y_true = shop_frame.segment.iloc[:200]
    y_pred = shop_model.predict(shop_frame.drop(columns="segment").iloc[:200])
    assert card.baseline["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert card.baseline["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert card.baseline["rows"] == 200


def test_skops_file_and_onnx_file_register_from_paths(tmp_path, cancer_model, cancer_frame):
    skops_path = tmp_path / "m.skops"
    skops.io.dump(cancer_model, skops_path)
    card = register_model(skops_path, name="from-skops", reference=cancer_frame, target="target",
                          registry=tmp_path / "reg")
    assert card.flavor == "sklearn"
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes((tmp_path / "reg" / "from-skops" / "1" / "model.onnx").read_bytes())
    card = register_model(onnx_path, name="from-onnx", reference=cancer_frame, target="target",
                          registry=tmp_path / "reg")
    assert card.flavor == "onnx" and card.signature.classes == [0, 1]
    assert card.signature.input_layout == "matrix"
    predictor = Registry(tmp_path / "reg").load_predictor(card)
    batch = FeatureBatch.from_frame(cancer_frame, card.signature)
    expected = cancer_model.predict_proba(cancer_frame.drop(columns="target"))
    np.testing.assert_allclose(predictor.predict_proba(batch), expected, atol=1e-5)


def test_pickle_needs_explicit_trust(tmp_path, cancer_model):
    path = tmp_path / "m.joblib"
    joblib.dump(cancer_model, path)
    with pytest.raises(RegistryError, match="--trust-pickle"):
        register_model(path, name="p", registry=tmp_path / "reg")
    card = register_model(path, name="p", registry=tmp_path / "reg", trust_pickle=True)
    # Re-saved with skops, so serving never unpickles.
    assert card.artifact.format == "skops"


def test_changed_artifact_is_refused(tmp_path, cancer_model):
    card = register_model(cancer_model, name="m", registry=tmp_path, convert_to_onnx=False)
    artifact = tmp_path / "m" / "1" / card.artifact.path
    artifact.write_bytes(artifact.read_bytes() + b"tampered")
    with pytest.raises(RegistryError, match="changed after registration"):
        Registry(tmp_path).load_predictor(card)


def test_estimator_without_predict_proba_is_refused_clearly(tmp_path, cancer_frame):
    from sklearn.svm import LinearSVC

    model = LinearSVC().fit(cancer_frame.drop(columns="target"), cancer_frame.target)
    with pytest.raises(RegistryError, match="predict_proba"):
        register_model(model, name="svc", registry=tmp_path)


@pytest.mark.parametrize("name", ["", "a/b", "../x", "-x", "x" * 65])
def test_bad_names_are_refused(tmp_path, cancer_model, name):
    with pytest.raises(RegistryError, match="invalid model name"):
        register_model(cancer_model, name=name, registry=tmp_path)


def test_reference_missing_a_feature_is_named(tmp_path, shop_model, shop_frame):
    with pytest.raises(RegistryError, match="'region'"):
        register_model(shop_model, name="s", reference=shop_frame.drop(columns="region"), registry=tmp_path)


def test_validation_without_target_is_refused(tmp_path, shop_model, shop_frame):
    with pytest.raises(RegistryError, match="target"):
        register_model(shop_model, name="s", validation=shop_frame, registry=tmp_path)


def test_csv_and_parquet_reference_files(tmp_path, shop_model, shop_frame):
    shop_frame.to_csv(tmp_path / "ref.csv", index=False)
    shop_frame.to_parquet(tmp_path / "ref.parquet")
    a = register_model(shop_model, name="s", reference=tmp_path / "ref.csv", target="segment", registry=tmp_path / "r")
    b = register_model(shop_model, name="s", reference=tmp_path / "ref.parquet", target="segment", registry=tmp_path / "r")
    assert a.signature.features == b.signature.features
    with pytest.raises(RegistryError, match="does not exist"):
        register_model(shop_model, name="s", reference=tmp_path / "nope.csv", registry=tmp_path / "r")


def test_sklearn_predictor_on_unnamed_arrays(cancer_frame):
    X = cancer_frame.drop(columns="target").to_numpy()
    model = LogisticRegression(max_iter=10000).fit(X, cancer_frame.target)
    signature = SklearnRuntime.infer_signature(model, None, None, {})
    assert signature.input_layout == "matrix" and signature.feature_names[0] == "x0"
    batch = FeatureBatch(numeric=X, categorical=np.empty((len(X), 0), dtype=object))
    np.testing.assert_array_equal(SklearnRuntime(model, signature).predict_proba(batch), model.predict_proba(X))


def test_a_model_registered_from_a_run_takes_its_baseline_and_links_back(tmp_path, shop_model, shop_frame):
    from modelmon.tracking import start_run
    from modelmon.tracking.records import get_run

    store = str(tmp_path / "runs.db")
    X, y = shop_frame.drop(columns="segment"), shop_frame.segment
    with start_run("shop", params={"C": 1.0}, store=store) as run:
        run.log_classification("validation", y, shop_model.predict(X), step=1)
        run_id = run.id
    card = register_model(shop_model, name="shop", reference=shop_frame, target="segment", registry=tmp_path / "r",
                          run=run_id, run_store=store)
    assert card.baseline["accuracy"] == pytest.approx(accuracy_score(y, shop_model.predict(X)))
    assert card.baseline["f1_macro"] == pytest.approx(f1_score(y, shop_model.predict(X), average="macro"))
    from modelmon.store import open_store

    record = get_run(open_store(store), run_id)
    assert (record.model_name, record.model_version) == ("shop", card.version)


@pytest.mark.parametrize("dtype", ["str", "string", object, "category"])
def test_from_frame_gives_text_or_none_for_every_kind_of_text_column(dtype):
    """Arrow-backed strings (pandas 3's default), StringDtype, object and category columns
    all become Python str, with None for every missing value."""
    from modelmon.types import FeatureSpec, Signature

    signature = Signature(
        features=[FeatureSpec(name="x", dtype="float64"), FeatureSpec(name="c", dtype="string", categories=["a", "b"], nullable=True)],
        classes=[0, 1], input_layout="columns",
    )
    frame = pd.DataFrame({"x": [1.0, None, 3.0, 4.0], "c": pd.Series(["a", None, "b", "a"], dtype=dtype)})
    batch = FeatureBatch.from_frame(frame, signature)
    assert batch.categorical[:, 0].tolist() == ["a", None, "b", "a"]
    assert all(type(v) is str for v in batch.categorical[:, 0] if v is not None)
    np.testing.assert_array_equal(batch.numeric[:, 0], [1.0, np.nan, 3.0, 4.0])


def test_from_frame_turns_non_text_categories_into_text():
    from modelmon.types import FeatureSpec, Signature

    signature = Signature(features=[FeatureSpec(name="c", dtype="string", categories=["1", "2"], nullable=True)],
                          classes=[0, 1], input_layout="columns")
    frame = pd.DataFrame({"c": pd.Series([1, None, 2], dtype=object)})
    assert FeatureBatch.from_frame(frame, signature).categorical[:, 0].tolist() == ["1", None, "2"]
