"""Checks 1-3: registration through the runtime seam, the signature it infers, and what the
runtime loaded back from the registry answers, against the framework's own answers."""

from __future__ import annotations

import numpy as np
import pytest

from modelmon.errors import RegistryError
from modelmon.registry import register_model
from modelmon.runtimes.base import (
    runtime_for_file,
    runtime_for_object,
    runtime_named,
    runtime_names,
    verified_path,
)
from modelmon.types import FeatureBatch, Task
from tests.conformance.cases import PENDING_CASES, for_every_case, for_every_regression_case
from tests.conformance.support import EXACT, assert_labels_agree, tolerance


@for_every_case
def test_registers_from_a_file_and_from_python(case, conformance):
    """Check 1: the file and the object both reach the case's runtime, and the two cards
    agree."""
    entry = conformance[case]
    assert case.runtime in runtime_names()
    assert runtime_for_file(entry.file).name == case.runtime
    assert runtime_for_object(entry.built.model).name == case.runtime
    assert entry.card.flavor == case.runtime
    assert entry.object_card.flavor == case.runtime
    assert entry.card.runtime == entry.object_card.runtime
    assert entry.card.signature.model_dump() == entry.object_card.signature.model_dump()
    # What was written is what the registry reads back.
    assert conformance.registry.card(case.id).model_dump() == entry.card.model_dump()


@for_every_case
def test_signature_describes_the_data_and_the_model(case, conformance):
    """Check 2: features named and typed as in the training data, the case's task, the
    model's classes in its column order."""
    entry = conformance[case]
    signature, train = entry.card.signature, entry.built.train
    assert signature.feature_names == entry.built.features
    for spec in signature.features:
        column = train[spec.name]
        if column.dtype.kind in "OSU":
            assert spec.is_categorical, spec
            assert set(spec.categories or []) == set(column.unique()), spec
        else:
            assert not spec.is_categorical, spec
            assert spec.dtype == str(column.dtype), spec
    assert signature.task is case.task
    assert signature.class_labels == entry.built.classes
    assert [type(c) for c in signature.class_labels] == [type(c) for c in entry.built.classes]


@for_every_case
def test_served_runtime_agrees_with_the_framework(case, conformance):
    """Check 3: the runtime the registry loads to serve the card (a converted ONNX graph for
    a scikit-learn model when one was kept) gives the framework's probabilities on the
    validation rows, and predicts their argmax."""
    entry = conformance[case]
    card, validation = entry.card, entry.built.validation
    predictor = conformance.registry.load_predictor(card)
    assert predictor.name == card.runtime
    output = predictor.predict(FeatureBatch.from_frame(validation, card.signature))
    expected = entry.built.predict(validation)
    atol = tolerance(card)
    if case.task is Task.REGRESSION:
        assert output.probabilities is None
        assert output.predicted.dtype == np.float64
        np.testing.assert_allclose(output.predicted, expected, rtol=0, atol=atol)
        return
    assert output.probabilities is not None
    assert output.probabilities.shape == (len(validation), len(entry.built.classes))
    np.testing.assert_allclose(output.probabilities, expected, rtol=0, atol=atol)
    np.testing.assert_array_equal(output.predicted, output.probabilities.argmax(axis=1))
    classes = list(range(len(entry.built.classes)))
    assert_labels_agree(output.predicted.tolist(), output.probabilities, expected, classes, atol)


@for_every_case
def test_registered_artifact_agrees_with_the_framework(case, conformance):
    """Check 3, for the model as registered (not the graph served in its place): the case's
    runtime loads it back and agrees with the framework within 1e-5."""
    entry = conformance[case]
    card, validation = entry.card, entry.built.validation
    directory = conformance.registry.version_dir(card.name, card.version)
    predictor = runtime_named(card.flavor).load(verified_path(directory, card.artifact), card.artifact, card.signature)
    assert predictor.name == case.runtime
    output = predictor.predict(FeatureBatch.from_frame(validation, card.signature))
    if case.task is Task.REGRESSION:
        np.testing.assert_allclose(output.predicted, entry.built.predict(validation), rtol=0, atol=EXACT)
        return
    np.testing.assert_allclose(output.probabilities, entry.built.predict(validation), rtol=0, atol=EXACT)
    np.testing.assert_array_equal(output.predicted, output.probabilities.argmax(axis=1))


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in PENDING_CASES])
def test_a_pending_task_is_refused_at_registration(case, tmp_path):
    """Until a row's task is implemented, registering such a model must fail with a clear
    error rather than register something that serves wrong answers."""
    built = case.build()
    with pytest.raises(RegistryError):
        register_model(built.model, name=case.id, reference=built.train, target=built.target, registry=tmp_path)


@for_every_regression_case
def test_regression_baseline_and_profiles(case, conformance):
    """A regressor's card: the validation baseline is scikit-learn's MAE, RMSE, R² and mean
    error on the framework's own predictions, and the predictions and the target are binned
    as the profile's numeric features are (their shares are the bins' counts)."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    entry = conformance[case]
    validation, card = entry.built.validation, entry.card
    y_true = validation[entry.built.target].to_numpy(np.float64)
    y_pred = entry.built.predict(validation)
    baseline = card.baseline
    assert baseline is not None
    # The registered model may be served as ONNX: the baseline is computed on what is served.
    atol = 10 * tolerance(card)
    assert baseline["rows"] == len(validation)
    assert baseline["mae"] == pytest.approx(mean_absolute_error(y_true, y_pred), abs=atol)
    assert baseline["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y_true, y_pred)), abs=atol)
    assert baseline["r2"] == pytest.approx(r2_score(y_true, y_pred), abs=atol)
    assert baseline["mean_error"] == pytest.approx(np.mean(y_pred - y_true), abs=atol)
    profile = card.reference_profile
    assert profile is not None and profile.prediction is None and card.calibration is None
    for binned, values in ((profile.predicted_values, y_pred), (profile.target, y_true)):
        assert binned is not None
        counts = np.bincount(np.searchsorted(binned.edges, values, side="right"), minlength=len(binned.bin_labels))
        # A prediction within float32 rounding of an edge may fall on either side of it.
        np.testing.assert_allclose(binned.shares, counts / len(values), atol=2 / len(values))
        assert binned.count == len(values)
