"""Registering from CSV a pipeline whose categories look like numbers (issue 15, item 2).

Census-style data holds codes: occupation "19", "5", "07". A pipeline's encoders were fitted
on them as text, but pandas reads such a CSV column as numbers, so the model used to fail on
its own registration data, with advice to pass the --reference that had been passed. The
model records which columns it takes as text (its encoders' ``categories_``): registration
reads them as text, and where the model cannot tell, the error names the column and
``--categorical`` fixes it.
"""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest
import skops.io
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, OrdinalEncoder, StandardScaler
from typer.testing import CliRunner

from modelmon.cli import app
from modelmon.errors import RegistryError
from modelmon.registry import FeatureBatch, Registry, register_model
from modelmon.runtimes.sklearn import SklearnRuntime, sklearn_text_columns
from modelmon.serving.codecs import decode_infer_request
from modelmon.serving.validation import RequestValidator

OCCUPATIONS = ["19", "5", "07", "3", "41"]
INDUSTRIES = ["110", "42", "7"]
FEATURES = ["age", "occupation", "hours", "industry"]


def code_group(X: pd.DataFrame) -> pd.DataFrame:
    """The major group of an occupation code, its first digit: a step that takes text but,
    unlike an encoder, does not record it."""
    return X.apply(lambda column: column.str[:1])


def census_frame(n: int = 600, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, n),
            "occupation": pd.Series(rng.choice(OCCUPATIONS, n), dtype=object),
            "hours": rng.normal(40, 8, n),
            "industry": pd.Series(rng.choice(INDUSTRIES, n), dtype=object),
        }
    )
    # Missing as pandas reads it from a file (NaN): a numeric CSV column with it is float.
    frame.loc[frame.index[::17], "industry"] = np.nan
    score = (frame.occupation == "19") * 2.0 + (frame.age - 45) / 15 + (frame.industry == "42")
    frame["income"] = np.where(score + rng.normal(0, 0.5, n) > 0.5, "high", "low")
    return frame


def census_pipeline(frame: pd.DataFrame, occupation_step=None):
    occupation = occupation_step or OneHotEncoder(handle_unknown="ignore")
    columns = make_column_transformer(
        (StandardScaler(), ["age", "hours"]),
        (occupation, ["occupation"]),
        (make_pipeline(SimpleImputer(strategy="constant", fill_value="none"),
                       OneHotEncoder(handle_unknown="ignore")), ["industry"]),
    )
    model = make_pipeline(columns, LogisticRegression(max_iter=1000))
    return model.fit(frame[FEATURES], frame["income"])


@pytest.fixture(scope="module")
def census() -> pd.DataFrame:
    return census_frame()


@pytest.fixture(scope="module")
def census_model(census):
    return census_pipeline(census.iloc[:450])


@pytest.fixture(scope="module")
def grouped_model(census):
    """Occupation goes through a custom step before its encoder: nothing says it is text."""
    step = make_pipeline(FunctionTransformer(code_group), OneHotEncoder(handle_unknown="ignore"))
    return census_pipeline(census.iloc[:450], occupation_step=step)


@pytest.fixture
def csv_files(tmp_path, census):
    train, valid = tmp_path / "train.csv", tmp_path / "valid.csv"
    census.iloc[:450].to_csv(train, index=False)
    census.iloc[450:].to_csv(valid, index=False)
    # What pandas makes of these files on its own: the codes are numbers, "07" is lost.
    guessed = pd.read_csv(train)
    assert pd.api.types.is_numeric_dtype(guessed.occupation) and pd.api.types.is_numeric_dtype(guessed.industry)
    return train, valid


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})
    return result, " ".join(result.output.split())


def served_proba(registry: Registry, card, rows: pd.DataFrame) -> np.ndarray:
    """What serving answers for ``rows``: a V2 request (text as BYTES, None for missing),
    decoded and validated as the server does, run by the predictor the server loads."""
    inputs = []
    for spec in card.signature.features:
        column = rows[spec.name]
        if spec.is_categorical:
            data, datatype = [None if pd.isna(v) else str(v) for v in column], "BYTES"
        else:
            data, datatype = column.astype(float).tolist(), "FP64"
        inputs.append({"name": spec.name, "shape": [len(rows)], "datatype": datatype, "data": data})
    request = decode_infer_request(json.dumps({"inputs": inputs}).encode(), None)
    batch = RequestValidator(card.signature, 10_000).from_tensors(request.inputs)
    return registry.load_predictor(card).predict_proba(batch)


def assert_typed_and_served_like_the_pipeline(registry: Registry, card, model, census) -> None:
    features = {f.name: f for f in card.signature.features}
    assert features["occupation"].dtype == "string" and features["industry"].dtype == "string"
    assert set(features["occupation"].categories) == set(OCCUPATIONS)  # "07" kept, not 7
    assert set(features["industry"].categories) == set(INDUSTRIES)  # "110", not "110.0"
    assert features["age"].dtype == "int64" and features["hours"].dtype == "float64"
    # The reference profile counted the codes as the categories they are.
    profile = {f.name: f for f in card.reference_profile.categorical}
    assert set(profile["occupation"].categories) == set(OCCUPATIONS)
    assert {f.name for f in card.reference_profile.numeric} == {"age", "hours"}
    # The baseline is the pipeline's own accuracy on the validation rows.
    valid = census.iloc[450:]
    accuracy = float((model.predict(valid[FEATURES]) == valid["income"]).mean())
    assert card.baseline["accuracy"] == pytest.approx(accuracy)
    # Serving answers each row as the pipeline does on that row.
    rows = valid.iloc[:40]
    assert rows.industry.isna().any()
    np.testing.assert_allclose(served_proba(registry, card, rows), model.predict_proba(rows[FEATURES]), atol=1e-5)
    one = rows.iloc[[3]]
    np.testing.assert_allclose(served_proba(registry, card, one), model.predict_proba(one[FEATURES]), atol=1e-5)


def test_cli_registers_a_pipeline_with_numeric_looking_categories_from_csv(tmp_path, census, census_model, csv_files):
    train, valid = csv_files
    skops.io.dump(census_model, tmp_path / "model.skops")
    result, output = invoke("register", "--name", "census", "--model", str(tmp_path / "model.skops"),
                            "--reference", str(train), "--target", "income", "--validation", str(valid),
                            "--registry", str(tmp_path / "reg"),
                            "--trust-type", "numpy.dtype")  # skops asks for it: SimpleImputer keeps one
    assert result.exit_code == 0, output
    assert "census:1" in output
    registry = Registry(tmp_path / "reg")
    card = registry.card("census")
    assert_typed_and_served_like_the_pipeline(registry, card, census_model, census)


def test_the_onnx_graph_takes_the_codes_as_text_and_agrees(tmp_path, census, csv_files):
    """Without the imputer (skl2onnx cannot convert one for text with NaN as the missing
    value), the pipeline converts: checked on the CSV rows as text, and served by ONNX."""
    train, valid = csv_files
    columns = ["age", "hours", "occupation"]
    model = make_pipeline(
        make_column_transformer((StandardScaler(), ["age", "hours"]), (OneHotEncoder(handle_unknown="ignore"), ["occupation"])),
        LogisticRegression(max_iter=1000),
    ).fit(census[columns].iloc[:450], census.income.iloc[:450])
    reference = pd.read_csv(train).drop(columns="industry")
    reference.to_csv(tmp_path / "ref.csv", index=False)
    card = register_model(model, name="occ", reference=tmp_path / "ref.csv", target="income", validation=valid,
                          registry=tmp_path / "reg")
    assert card.runtime == "onnx" and card.onnx_check.used, card.onnx_check.reason
    assert card.onnx_check.rows_compared == 150
    registry = Registry(tmp_path / "reg")
    assert registry.load_predictor(card).name == "onnx"
    rows = census.iloc[450:]
    np.testing.assert_allclose(served_proba(registry, card, rows), model.predict_proba(rows[columns]), atol=1e-5)


def test_python_api_registers_from_csv_as_from_parquet(tmp_path, census, census_model, csv_files):
    train, valid = csv_files
    card = register_model(census_model, name="census", reference=train, target="income", validation=valid,
                          registry=tmp_path / "reg")
    registry = Registry(tmp_path / "reg")
    assert_typed_and_served_like_the_pipeline(registry, card, census_model, census)

    census.iloc[:450].to_parquet(tmp_path / "train.parquet")
    census.iloc[450:].to_parquet(tmp_path / "valid.parquet")
    from_parquet = register_model(census_model, name="census", reference=tmp_path / "train.parquet",
                                  target="income", validation=tmp_path / "valid.parquet", registry=tmp_path / "reg")
    assert from_parquet.signature.features == card.signature.features
    assert from_parquet.baseline == card.baseline


def test_a_dataframe_with_the_codes_as_numbers_registers_too(tmp_path, census, census_model, csv_files):
    """Python callers who read the CSV themselves get numbers (floats where a value is
    missing); the model's categories say they are text, and "110.0" is read as "110"."""
    train, valid = csv_files
    card = register_model(census_model, name="census", reference=pd.read_csv(train), target="income",
                          validation=pd.read_csv(valid), registry=tmp_path / "reg")
    features = {f.name: f for f in card.signature.features}
    assert features["industry"].dtype == "string" and set(features["industry"].categories) == set(INDUSTRIES)
    rows = census.iloc[450:490]
    np.testing.assert_allclose(served_proba(Registry(tmp_path / "reg"), card, rows),
                               census_model.predict_proba(rows[FEATURES]), atol=1e-5)


def test_the_model_types_its_features_without_any_data(tmp_path, census_model):
    signature = SklearnRuntime.infer_signature(census_model, None, None, sklearn_text_columns(census_model))
    features = {f.name: f for f in signature.features}
    assert features["occupation"].dtype == "string"
    assert sorted(features["occupation"].categories) == sorted(OCCUPATIONS)
    assert features["industry"].dtype == "string"
    assert features["age"].dtype == "float64"
    card = register_model(census_model, name="census", registry=tmp_path)
    assert card.signature.features[1].is_categorical


def test_column_the_model_cannot_type_is_named_and_categorical_fixes_it(tmp_path, census, grouped_model, csv_files):
    train, valid = csv_files
    assert "occupation" not in sklearn_text_columns(grouped_model)
    with pytest.raises(RegistryError) as info:
        register_model(grouped_model, name="grouped", reference=train, target="income", validation=valid,
                       registry=tmp_path / "reg")
    message = str(info.value)
    assert "'occupation'" in message and "--categorical occupation" in message
    assert "categorical=['occupation']" in message and "Parquet" in message
    assert "pass --reference" not in message
    assert "age" not in message.split("read as text")[0]  # only the column that needs it

    for categorical in ("occupation", ["occupation"], "occupation, industry"):
        card = register_model(grouped_model, name="grouped", reference=train, target="income", validation=valid,
                              registry=tmp_path / "reg", categorical=categorical)
        features = {f.name: f for f in card.signature.features}
        assert features["occupation"].dtype == "string" and set(features["occupation"].categories) == set(OCCUPATIONS)
    rows = census.iloc[450:490]
    np.testing.assert_allclose(served_proba(Registry(tmp_path / "reg"), card, rows),
                               grouped_model.predict_proba(rows[FEATURES]), atol=1e-5)


def test_cli_names_the_column_and_categorical_fixes_it(tmp_path, census, grouped_model, csv_files):
    train, valid = csv_files
    joblib.dump(grouped_model, tmp_path / "model.joblib")
    common = ["register", "--name", "grouped", "--model", str(tmp_path / "model.joblib"), "--trust-pickle",
              "--reference", str(train), "--target", "income", "--validation", str(valid),
              "--registry", str(tmp_path / "reg")]
    result, output = invoke(*common)
    assert result.exit_code == 2, output
    assert "--categorical occupation" in output
    assert "pass --reference" not in output

    result, output = invoke(*common, "--categorical", "occupation")
    assert result.exit_code == 0, output
    registry = Registry(tmp_path / "reg")
    card = registry.card("grouped")
    assert card.signature.features[1].is_categorical and card.signature.features[3].is_categorical
    rows = census.iloc[450:490]
    np.testing.assert_allclose(served_proba(registry, card, rows), grouped_model.predict_proba(rows[FEATURES]),
                               atol=1e-5)

    result, output = invoke(*common, "--categorical", "occupation,industry", "--categorical", "age")
    assert result.exit_code == 0, output
    assert Registry(tmp_path / "reg").card("grouped").signature.features[0].is_categorical


def test_categorical_naming_no_feature_is_refused(tmp_path, census_model, csv_files):
    train, _ = csv_files
    with pytest.raises(RegistryError, match=r"--categorical names \['ocupation'\]"):
        register_model(census_model, name="c", reference=train, target="income", registry=tmp_path,
                       categorical=["ocupation"])


def test_without_reference_data_the_advice_is_to_pass_it(tmp_path, census, grouped_model):
    with pytest.raises(RegistryError, match=r"pass --reference .* --categorical COL"):
        register_model(grouped_model, name="g", registry=tmp_path)


def test_text_columns_found_through_selectors_indices_and_ordinal_encoders(census):
    frame = census[FEATURES]
    by_dtype = make_pipeline(
        make_column_transformer(
            (OneHotEncoder(handle_unknown="ignore"), make_column_selector(dtype_include=object)),
            remainder="passthrough",
        ),
        LogisticRegression(max_iter=1000),
    ).fit(frame.fillna("none"), census.income)
    assert set(sklearn_text_columns(by_dtype)) == {"occupation", "industry"}

    by_index = make_pipeline(
        make_column_transformer((OrdinalEncoder(), [1]), (StandardScaler(), [0, 2])),
        LogisticRegression(max_iter=1000),
    ).fit(frame[["age", "occupation", "hours"]], census.income)
    assert sklearn_text_columns(by_index) == {"occupation": sorted(OCCUPATIONS)}

    numbers = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(census[["age"]], census.income)
    assert sklearn_text_columns(numbers) == {}  # integer categories: a numeric feature
    unnamed = make_pipeline(OneHotEncoder(), LogisticRegression()).fit(frame[["occupation"]].to_numpy(), census.income)
    assert sklearn_text_columns(unnamed) == {}  # no column names to attach the types to


def test_whole_number_floats_become_integer_text():
    from modelmon.types import FeatureSpec, Signature

    signature = Signature(features=[FeatureSpec(name="c", dtype="string", nullable=True)],
                          classes=[0, 1], input_layout="columns")
    frame = pd.DataFrame({"c": [110.0, None, 7.0]})
    assert FeatureBatch.from_frame(frame, signature).categorical[:, 0].tolist() == ["110", None, "7"]
    frame = pd.DataFrame({"c": [1.5, None, 7.0]})
    assert FeatureBatch.from_frame(frame, signature).categorical[:, 0].tolist() == ["1.5", None, "7.0"]
