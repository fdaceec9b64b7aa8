"""The Keras 3 callback with a real small model on the torch backend."""

from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is first imported

import keras
import numpy as np
import pandas as pd
import pytest
from sklearn import metrics as skm

from modelmon.store import open_store
from modelmon.tracking import records, start_run
from modelmon.tracking.keras import ModelmonCallback

pytestmark = [
    pytest.mark.slow,
    # Keras's torch backend calls np.array on tensors the way numpy 2 deprecates.
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
]
EPOCHS = 3


@pytest.fixture(scope="module")
def data(cancer_frame: pd.DataFrame) -> tuple[np.ndarray, ...]:
    frame = cancer_frame.sample(frac=1, random_state=0)
    X = frame.drop(columns="target").to_numpy(dtype="float32")
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    y = frame["target"].to_numpy()
    return X[:400], y[:400], X[400:], y[400:]


def run_metrics(url: str, run_id: int, split: str) -> pd.DataFrame:
    frame = records.metric_frame(open_store(url), [run_id], split=split)
    return frame.pivot(index="step", columns="metric", values="value")


def test_binary_sigmoid_model(store_url: str, data) -> None:
    X, y, X_val, y_val = data
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((X.shape[1],)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    with start_run("keras", store=store_url) as run:
        history = model.fit(X, y, validation_data=(X_val, y_val), epochs=EPOCHS, batch_size=64,
                            verbose=0, callbacks=[ModelmonCallback(run, (X_val, y_val))])

    train = run_metrics(store_url, run.id, "train")
    assert train.index.tolist() == [1, 2, 3]
    # Keras's own epoch logs, as Keras reported them.
    assert train["loss"].tolist() == pytest.approx(history.history["loss"], rel=1e-6)
    assert train["accuracy"].tolist() == pytest.approx(history.history["accuracy"], rel=1e-6)
    validation = run_metrics(store_url, run.id, "validation")
    assert validation["loss"].tolist() == pytest.approx(history.history["val_loss"], rel=1e-6)
    # Precision, recall and F1 on the validation data after the last epoch equal
    # scikit-learn's on the trained model's predictions.
    proba = model.predict(X_val, verbose=0).reshape(-1)
    predicted = (proba > 0.5).astype(int)
    final = validation.loc[EPOCHS]
    assert final["precision"] == pytest.approx(skm.precision_score(y_val, predicted), rel=1e-12)
    assert final["recall"] == pytest.approx(skm.recall_score(y_val, predicted), rel=1e-12)
    assert final["f1"] == pytest.approx(skm.f1_score(y_val, predicted), rel=1e-12)
    assert final["accuracy"] == pytest.approx(skm.accuracy_score(y_val, predicted), rel=1e-12)
    assert final["log_loss"] == pytest.approx(skm.log_loss(y_val, proba), rel=1e-12)
    # Keras's binary cross-entropy on the validation data is the same log loss.
    assert final["log_loss"] == pytest.approx(final["loss"], rel=1e-4)


def test_multiclass_softmax_model_with_one_hot_labels_and_names(sqlite_url: str) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4)).astype("float32")
    y = np.argmax(X[:, :3] + rng.normal(scale=0.5, size=(300, 3)), axis=1)
    one_hot = np.eye(3)[y]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy")
    names = ["bronze", "silver", "gold"]
    with start_run("keras", store=sqlite_url) as run:
        model.fit(X[:200], one_hot[:200], epochs=EPOCHS, batch_size=32, verbose=0,
                  callbacks=[ModelmonCallback(run, (X[200:], one_hot[200:]), labels=names)])
    validation = run_metrics(sqlite_url, run.id, "validation")
    predicted = np.asarray(names)[np.argmax(model.predict(X[200:], verbose=0), axis=1)]
    truth = np.asarray(names)[y[200:]]
    final = validation.loc[EPOCHS]
    proba = model.predict(X[200:], verbose=0)  # columns bronze, silver, gold
    assert final["log_loss"] == pytest.approx(skm.log_loss(truth, proba[:, [0, 2, 1]]), rel=1e-12)
    assert final["f1_macro"] == pytest.approx(
        skm.f1_score(truth, predicted, average="macro"), rel=1e-12
    )
    assert final["recall[gold]"] == pytest.approx(
        skm.recall_score(truth, predicted, labels=["gold"], average=None)[0], rel=1e-12
    )
    assert "loss" not in validation  # no validation_data given to fit: no val_loss
    assert run_metrics(sqlite_url, run.id, "train")["loss"].notna().all()
