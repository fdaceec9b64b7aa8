"""Training scikit-learn models epoch by epoch: every strategy, and the values logged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.compose import make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression, SGDClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from modelmon.store import open_store
from modelmon.tracking import TrackingError, records, start_run
from modelmon.tracking.sklearn import EpochReport, fit_epochs

EPOCHS = 4


def split(frame: pd.DataFrame, target: str) -> tuple:
    train, valid = frame.iloc[:450], frame.iloc[450:]
    return train.drop(columns=target), train[target], valid.drop(columns=target), valid[target]


@pytest.mark.parametrize(
    ("make_model", "grows"),
    [
        pytest.param(
            lambda: SGDClassifier(loss="log_loss", random_state=0), "partial_fit", id="partial_fit"
        ),
        pytest.param(lambda: LogisticRegression(), "max_iter", id="warm_start-max_iter"),
        pytest.param(
            lambda: RandomForestClassifier(random_state=0), "n_estimators", id="warm_start-trees"
        ),
        pytest.param(
            lambda: HistGradientBoostingClassifier(random_state=0),
            "boosting iterations",
            id="warm_start-boosting",
        ),
    ],
)
def test_every_epoch_logs_both_splits_as_sklearn_computes_them(
    sqlite_url: str, cancer_frame: pd.DataFrame, make_model, grows: str
) -> None:
    X, y, X_val, y_val = split(cancer_frame.sample(frac=1, random_state=0), "target")
    model = make_pipeline(StandardScaler(), make_model())
    reports: list[EpochReport] = []
    with start_run("sklearn", store=sqlite_url) as run:
        fitted = fit_epochs(model, X, y, run=run, epochs=EPOCHS, validation=(X_val, y_val),
                            on_epoch=reports.append)
    assert fitted is model
    assert [r.epoch for r in reports] == list(range(1, EPOCHS + 1))
    assert all(r.epochs == EPOCHS for r in reports)
    assert reports[-1].elapsed >= reports[0].elapsed > 0

    frame = records.metric_frame(open_store(sqlite_url), [run.id])
    assert sorted(frame["step"].unique()) == list(range(1, EPOCHS + 1))
    assert set(frame["split"]) == {"train", "validation"}
    # The last epoch's values are the returned pipeline's, as sklearn.metrics computes them.
    for split_name, features, labels in (("train", X, y), ("validation", X_val, y_val)):
        last = frame[(frame["split"] == split_name) & (frame["step"] == EPOCHS)]
        got = dict(zip(last["metric"], last["value"], strict=True))
        predicted = model.predict(features)
        assert got["accuracy"] == pytest.approx(skm.accuracy_score(labels, predicted), rel=1e-12)
        assert got["f1"] == pytest.approx(skm.f1_score(labels, predicted), rel=1e-12)
        assert got["log_loss"] == pytest.approx(
            skm.log_loss(labels, model.predict_proba(features)), rel=1e-12
        )
        assert reports[-1].metrics[split_name] == got
    if grows == "n_estimators":
        assert len(model[-1].estimators_) == EPOCHS
    if grows == "boosting iterations":
        assert model[-1].n_iter_ == EPOCHS


def test_a_pipeline_with_categorical_features_learns_across_epochs(
    sqlite_url: str, shop_frame: pd.DataFrame
) -> None:
    X, y, X_val, y_val = split(shop_frame, "segment")
    model = make_pipeline(
        make_column_transformer(
            (StandardScaler(), ["amount", "items"]),
            (OneHotEncoder(handle_unknown="ignore"), ["channel", "region"]),
        ),
        LogisticRegression(),
    )
    with start_run("sklearn", store=sqlite_url) as run:
        fit_epochs(model, X, y, run=run, epochs=6, validation=(X_val, y_val), per_epoch=2)
    frame = records.metric_frame(open_store(sqlite_url), [run.id], split="train")
    losses = frame[frame["metric"] == "log_loss"].sort_values("step")["value"].to_numpy()
    assert (np.diff(losses) < 0).all()  # warm-started iterations keep lowering the loss
    assert {"f1[gold]", "f1_macro", "precision_weighted"} <= set(frame["metric"])
    assert (
        model.predict(X_val.head(3)).tolist()
        == model[-1].predict(model[:-1].transform(X_val.head(3))).tolist()
    )


def test_models_without_probabilities_log_metrics_without_log_loss(
    sqlite_url: str, cancer_frame
) -> None:
    X, y, X_val, y_val = split(cancer_frame, "target")
    with start_run("sklearn", store=sqlite_url) as run:
        fit_epochs(make_pipeline(StandardScaler(), SGDClassifier(loss="hinge", random_state=0)),
                   X, y, run=run, epochs=2, validation=(X_val, y_val))
    metrics = set(records.metric_frame(open_store(sqlite_url), [run.id])["metric"])
    assert "f1" in metrics and "log_loss" not in metrics


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (SVC(), "SVC can be trained epoch by epoch only with partial_fit or warm_start"),
        (LinearRegression(), "LinearRegression can be trained epoch by epoch only"),
    ],
)
def test_estimators_that_cannot_train_by_epoch_are_named(
    sqlite_url: str, model, message: str
) -> None:
    with start_run("sklearn", store=sqlite_url) as run:
        with pytest.raises(TrackingError, match=message):
            fit_epochs(model, np.zeros((4, 2)), [0, 1, 0, 1], run=run, epochs=2)
