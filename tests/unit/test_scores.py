import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

from modelmon.monitoring.scores import scores_from_confusion


@pytest.mark.parametrize("seed", range(4))
def test_scores_equal_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    classes = ["a", "b", "c", "d"]
    y_true = rng.choice(classes[:3], 200)  # "d" never occurs: left out of the macro average
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.choice(classes[:3], 200))
    if seed % 2:
        y_pred[y_pred == "c"] = "a"  # a class never predicted: F1 0 for it
    scores = scores_from_confusion(confusion_matrix(y_true, y_pred, labels=classes))
    assert scores["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert scores["f1_macro"] == pytest.approx(f1_score(y_true, y_pred, average="macro", zero_division=0))


def test_empty_matrix_has_no_scores():
    scores = scores_from_confusion(np.zeros((2, 2)))
    assert np.isnan(scores["accuracy"]) and scores["rows"] == 0
