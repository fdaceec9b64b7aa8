"""Classification metrics equal scikit-learn's, for binary and multiclass problems."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from modelmon.tracking import TrackingError, classification_metrics


def noisy_predictions(
    classes: list, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities (columns in ``classes`` order) and their argmax predictions,
    right about two times in three."""
    rng = np.random.default_rng(seed)
    truth_index = rng.integers(0, len(classes), n)
    logits = rng.normal(size=(n, len(classes)))
    logits[np.arange(n), truth_index] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = np.asarray(classes)
    return labels[truth_index], proba, labels[np.argmax(proba, axis=1)]


@pytest.mark.parametrize("classes", [[0, 1], ["no", "yes"], [False, True]])
def test_binary_metrics_are_those_of_the_positive_class(classes: list) -> None:
    y_true, proba, y_pred = noisy_predictions(classes, 500, seed=1)
    got = classification_metrics(y_true, y_pred, proba[:, 1], loss=0.25)
    positive = classes[1]
    expected = {
        "accuracy": skm.accuracy_score(y_true, y_pred),
        "precision": skm.precision_score(y_true, y_pred, pos_label=positive),
        "recall": skm.recall_score(y_true, y_pred, pos_label=positive),
        "f1": skm.f1_score(y_true, y_pred, pos_label=positive),
        "log_loss": skm.log_loss(y_true, proba, labels=classes),
        "loss": 0.25,
    }
    for average in ("macro", "weighted"):
        expected[f"precision_{average}"] = skm.precision_score(y_true, y_pred, average=average)
        expected[f"recall_{average}"] = skm.recall_score(y_true, y_pred, average=average)
        expected[f"f1_{average}"] = skm.f1_score(y_true, y_pred, average=average)
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert 0.5 < got["accuracy"] < 0.9  # a non-trivial case: precision, recall, F1 all differ
    assert len({got["precision"], got["recall"], got["f1"]}) == 3


def test_positive_class_can_be_chosen() -> None:
    y_true, proba, y_pred = noisy_predictions(["churn", "stay"], 300, seed=2)
    got = classification_metrics(y_true, y_pred, proba[:, 0], positive="churn")
    assert got["recall"] == pytest.approx(skm.recall_score(y_true, y_pred, pos_label="churn"))
    assert got["f1"] == pytest.approx(skm.f1_score(y_true, y_pred, pos_label="churn"))
    assert got["log_loss"] == pytest.approx(skm.log_loss(y_true, proba, labels=["churn", "stay"]))


def test_multiclass_metrics_macro_weighted_and_per_class() -> None:
    classes = ["bronze", "gold", "silver"]
    y_true, proba, y_pred = noisy_predictions(classes, 600, seed=3)
    got = classification_metrics(y_true, y_pred, proba)
    assert "f1" not in got  # no positive class in a multiclass problem
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred), rel=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y_true, proba, labels=classes), rel=1e-12)
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, average=average)
        assert got[f"precision_{average}"] == pytest.approx(p, rel=1e-12)
        assert got[f"recall_{average}"] == pytest.approx(r, rel=1e-12)
        assert got[f"f1_{average}"] == pytest.approx(f, rel=1e-12)
    p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=classes)
    for j, label in enumerate(classes):
        assert got[f"precision[{label}]"] == pytest.approx(p[j], rel=1e-12)
        assert got[f"recall[{label}]"] == pytest.approx(r[j], rel=1e-12)
        assert got[f"f1[{label}]"] == pytest.approx(f[j], rel=1e-12)


def test_probability_columns_follow_the_labels_given() -> None:
    """A model's class order need not be sorted; log loss must still pair the right columns."""
    order = ["silver", "bronze", "gold"]
    y_true, proba, y_pred = noisy_predictions(order, 400, seed=4)
    got = classification_metrics(y_true, y_pred, proba, labels=order)
    sorted_proba = proba[:, [1, 2, 0]]  # bronze, gold, silver
    assert got["log_loss"] == pytest.approx(skm.log_loss(y_true, sorted_proba), rel=1e-12)
    # A class never predicted nor seen still counts in the macro average when named.
    with_unseen = classification_metrics(y_true, y_pred, labels=[*order, "platinum"])
    assert with_unseen["f1[platinum]"] == 0.0
    assert with_unseen["f1_macro"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=[*order, "platinum"], average="macro", zero_division=0)
    )


def test_non_finite_probabilities_give_a_nan_log_loss_not_an_error() -> None:
    y_true, proba, y_pred = noisy_predictions([0, 1], 50, seed=5)
    proba[3, 0] = np.nan
    got = classification_metrics(y_true, y_pred, proba)
    assert np.isnan(got["log_loss"])
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([0, 1, 1], [0, 1]), {}, "y_true has 3 rows but y_pred has 2"),
        (
            ([0, 1], [[0.2, 0.8], [0.6, 0.4]]),
            {},
            "y_pred must hold one label per row, got shape \\(2, 2\\)",
        ),
        (
            ([0, 1], [0, 1], [[0.2, 0.3, 0.5], [0.1, 0.1, 0.8]]),
            {},
            "y_proba has 3 columns but 2 classes",
        ),
        (
            ([0, 1], [0, 1], [0.2, 0.8, 0.5]),
            {},
            "y_proba has shape \\(3, 2\\), expected \\(2, 2\\)",
        ),
        (
            ([0, 1], [0, 2]),
            {"labels": [0, 1]},
            "y_true or y_pred hold \\[2\\], which are not in labels=\\[0, 1\\]",
        ),
        (([0, 1], [0, 1]), {"positive": 5}, "positive class 5 is not one of the labels \\[0, 1\\]"),
        (([], []), {}, "no rows"),
        ((["a", "b"], [1, 0]), {}, "labels of different types"),
    ],
)
def test_misuse_is_named(args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(TrackingError, match=message):
        classification_metrics(*args, **kwargs)
