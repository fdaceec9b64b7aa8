"""A regressor's labels in process: parsing (finite numbers only, the item named) and the
label sums, against scikit-learn; a prediction without a finite value is matched but adds
nothing to the sums (a NaN would make them NaN for good)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from modelmon.errors import InvalidInputError
from modelmon.monitoring.metrics import ServerMetrics
from modelmon.serving.feedback import count_matched, parse_feedback
from modelmon.serving.recent import PredictionRecord


def test_numeric_labels_parse_to_text_that_reads_back_exactly():
    pairs = parse_feedback({"labels": [{"id": "a", "label": 0.1}, {"id": "b", "label": 3}, {"id": "c", "label": -2.5e-300}]}, [])
    assert pairs == [("a", "0.1"), ("b", "3.0"), ("c", "-2.5e-300")]
    assert [float(text) for _, text in pairs] == [0.1, 3.0, -2.5e-300]


@pytest.mark.parametrize("label", ["1.5", float("nan"), float("inf"), -float("inf"), True, None, [1.0], {"v": 1}])
def test_a_label_that_is_not_a_finite_number_is_refused_naming_the_item(label):
    with pytest.raises(InvalidInputError, match=r"labels\[1\] \(id 'b'\)") as raised:
        parse_feedback([{"id": "a", "label": 1.0}, {"id": "b", "label": label}], [])
    assert raised.value.reason == "invalid_label"


def test_label_sums_give_sklearns_figures_and_skip_a_nan_prediction():
    metrics = ServerMetrics(process_metrics=False)
    quality = metrics.bind_quality("price", "1", [])
    assert quality.regression is not None
    rng = np.random.default_rng(0)
    truth = rng.normal(30, 5, 50)
    predicted = truth + rng.normal(0.5, 2, 50)
    matched = {f"p-{i}": (PredictionRecord("price", 1, repr(float(p)), 0.0), repr(float(y)))
               for i, (p, y) in enumerate(zip(predicted, truth, strict=True))}
    matched["p-nan"] = (PredictionRecord("price", 1, "nan", 0.0), "1.0")
    count_matched(matched, lambda model, version: (quality, []), "price")
    n, error, absolute, squared, target, target_squared = (s.counts[0] for s in quality.regression.sums)
    assert n == 50
    assert absolute / n == pytest.approx(mean_absolute_error(truth, predicted), rel=1e-12)
    assert np.sqrt(squared / n) == pytest.approx(np.sqrt(mean_squared_error(truth, predicted)), rel=1e-12)
    assert error / n == pytest.approx(np.mean(predicted - truth), rel=1e-12)
    assert 1 - squared / (target_squared - target**2 / n) == pytest.approx(r2_score(truth, predicted), rel=1e-12)
    matched_counter = quality.feedback["matched"]
    assert matched_counter.values[matched_counter.index] == 51  # matched all the same


def test_an_integer_beyond_the_largest_float_is_an_invalid_label_not_a_crash():
    # float(10**400) raises OverflowError (it was a 500, reason internal_error).
    with pytest.raises(InvalidInputError, match=r"labels\[0\] \(id 'a'\): label 1000.*\(401 characters\) is not a finite number") as raised:
        parse_feedback([{"id": "a", "label": 10**400}], [])
    assert raised.value.reason == "invalid_label"
    assert parse_feedback([{"id": "a", "label": -(2**1023)}], []) == [("a", repr(-float(2**1023)))]


@pytest.mark.parametrize(("item", "message"), [
    ({"id": "a"}, 'labels[1]: missing "label" (expected {"id": "<prediction id>", "label": <TASK>}, the model is a KIND)'),
    ({"label": 1}, 'labels[1]: missing "id" (expected {"id": "<prediction id>", "label": <TASK>}, the model is a KIND)'),
    ({"id": 5, "label": 1}, "labels[1].id must be a string (the prediction's id), not 5"),
    ({"id": ["a"], "label": 1}, "labels[1].id must be a string (the prediction's id), not ['a']"),
    ({"id": "", "label": 1}, "labels[1].id '' is empty: not a prediction id"),
    ("a", "labels[1] is 'a', not an object (expected {\"id\": \"<prediction id>\", \"label\": <TASK>}, the model is a KIND)"),
])
@pytest.mark.parametrize(("classes", "task", "kind"), [([], "number", "regressor"), (["0", "1"], "class", "classifier")])
def test_a_malformed_item_names_its_key_and_the_models_task(item, message, classes, task, kind):
    from modelmon.errors import MalformedRequestError

    with pytest.raises(MalformedRequestError) as raised:
        parse_feedback([{"id": "ok", "label": 1}, item], classes)
    assert raised.value.message == message.replace("TASK", task).replace("KIND", kind)


def test_a_classifiers_long_label_is_shown_cut():
    with pytest.raises(InvalidInputError) as raised:
        parse_feedback([{"id": "a", "label": "y" * 10_000}], ["yes", "no"])
    assert raised.value.message == (
        f"labels[0] (id 'a'): label '{'y' * 59}... (10002 characters) is not one of the model's classes ['yes', 'no']"
    )
