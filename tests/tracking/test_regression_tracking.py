"""Training runs of regressors (issue 18): per-epoch MAE, RMSE, R² and mean error of both
splits through the run API, the scikit-learn helper, the Keras callback and an Optuna study,
each value checked against sklearn.metrics on the model as it stood at that epoch."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before Keras is first imported

import numpy as np
import optuna
import pandas as pd
import pytest
from sklearn import metrics as skm
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import SGDRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from modelmon.registry import register_model
from modelmon.store import open_store
from modelmon.tracking import TrackingError, records, regression_metrics, start_run
from modelmon.tracking.optuna import OptunaCallback
from modelmon.tracking.sklearn import EpochReport, fit_epochs

EPOCHS = 3


def data(seed: int = 0) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"x{i}": rng.normal(size=600) for i in range(4)})
    y = 10 + 3 * frame.x0 - 2 * frame.x1 + frame.x2 * frame.x3 + rng.normal(size=600)
    return frame.iloc[:450], y.iloc[:450], frame.iloc[450:], y.iloc[450:]


def sklearn_figures(truth, predicted) -> dict[str, float]:
    return {
        "mae": skm.mean_absolute_error(truth, predicted),
        "rmse": np.sqrt(skm.mean_squared_error(truth, predicted)),
        "r2": skm.r2_score(truth, predicted),
        "mean_error": float(np.mean(np.asarray(predicted) - np.asarray(truth))),
    }


def stored(url: str, run_id: int, split: str) -> pd.DataFrame:
    frame = records.metric_frame(open_store(url), [run_id], split=split)
    return frame.pivot(index="step", columns="metric", values="value")


def test_regression_metrics_are_sklearns_and_refuse_bad_input() -> None:
    truth, predicted = np.array([3.0, -0.5, 2.0, 7.0]), np.array([[2.5], [0.0], [2.0], [8.0]])
    got = regression_metrics(truth, predicted, loss=0.25)
    expected = sklearn_figures(truth, predicted.ravel())
    assert {k: got[k] for k in expected} == pytest.approx(expected, rel=1e-15)
    assert got["loss"] == 0.25
    with pytest.raises(TrackingError, match="one number per row"):
        regression_metrics(truth, np.ones((4, 2)))
    with pytest.raises(TrackingError, match="4 rows but y_pred has 3"):
        regression_metrics(truth, truth[:3])
    with pytest.raises(TrackingError, match="must hold numbers"):
        regression_metrics(np.array(["a", "b"]), np.array([1.0, 2.0]))


@pytest.mark.parametrize(
    "make_model",
    [
        pytest.param(lambda: SGDRegressor(random_state=0), id="partial_fit"),
        pytest.param(lambda: HistGradientBoostingRegressor(random_state=0), id="warm_start-boosting"),
        pytest.param(lambda: RandomForestRegressor(n_estimators=2, random_state=0), id="warm_start-trees"),
    ],
)
def test_fit_epochs_logs_a_regressors_figures_per_epoch(sqlite_url: str, make_model, tmp_path) -> None:
    X, y, X_val, y_val = data()
    model = make_pipeline(StandardScaler(), make_model())
    at_epoch: dict[int, dict[str, dict[str, float]]] = {}

    def check(report: EpochReport) -> None:  # the model as it stands after this epoch
        at_epoch[report.epoch] = {"train": sklearn_figures(y, model.predict(X)),
                                  "validation": sklearn_figures(y_val, model.predict(X_val))}
        assert report.metrics["validation"] == pytest.approx(at_epoch[report.epoch]["validation"], rel=1e-12)

    with start_run("regression", store=sqlite_url) as run:
        fit_epochs(model, X, y, run=run, epochs=EPOCHS, validation=(X_val, y_val), on_epoch=check)
        # Registered from the run without validation data: the run's final figures are the baseline.
        card = register_model(model, name="price", reference=X.assign(y=y), target="y", registry=tmp_path, run=run)
    for split in ("train", "validation"):
        frame = stored(sqlite_url, run.id, split)
        assert frame.index.tolist() == list(range(1, EPOCHS + 1))
        for epoch in range(1, EPOCHS + 1):
            row = frame.loc[epoch]
            assert {k: row[k] for k in ("mae", "rmse", "r2", "mean_error")} == pytest.approx(at_epoch[epoch][split], rel=1e-12)
    assert card.baseline == pytest.approx(at_epoch[EPOCHS]["validation"], rel=1e-12)
    # The curve learns: the last epoch is better than the first on the training rows (SGD's
    # first pass is already close, so this is checked on the ensembles only).
    if not isinstance(model[-1], SGDRegressor):
        assert at_epoch[EPOCHS]["train"]["rmse"] < at_epoch[1]["train"]["rmse"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_keras_callback_logs_a_regressors_figures(sqlite_url: str) -> None:
    import keras

    from modelmon.tracking.keras import ModelmonCallback

    X, y, X_val, y_val = (np.asarray(a, dtype="float32") for a in data())
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    seen: list[dict[str, dict[str, float]]] = []

    class After(keras.callbacks.Callback):  # runs after modelmon's: the weights it saw
        def on_epoch_end(self, epoch, logs=None):
            seen.append({"train": sklearn_figures(y, model.predict(X, verbose=0).ravel()),
                         "validation": sklearn_figures(y_val, model.predict(X_val, verbose=0).ravel())})

    with start_run("keras-regression", store=sqlite_url) as run:
        history = model.fit(X, y, validation_data=(X_val, y_val), epochs=EPOCHS, batch_size=64, verbose=0,
                            callbacks=[ModelmonCallback(run, (X_val, y_val), task="regression", training_data=(X, y)),
                                       After()])
    for split in ("train", "validation"):
        frame = stored(sqlite_url, run.id, split)
        assert frame.index.tolist() == [1, 2, 3]
        for epoch in range(1, EPOCHS + 1):
            row = frame.loc[epoch]
            # float32 predictions: figures agree to float32 precision.
            assert {k: row[k] for k in ("mae", "rmse", "r2", "mean_error")} == pytest.approx(seen[epoch - 1][split], rel=1e-5, abs=1e-5)
    validation = stored(sqlite_url, run.id, "validation")
    assert validation["loss"].tolist() == pytest.approx(history.history["val_loss"], rel=1e-6)
    # Keras's validation MSE is the RMSE squared.
    assert (validation["rmse"] ** 2).tolist() == pytest.approx(history.history["val_loss"], rel=1e-4)


def test_an_optuna_study_of_a_regressor_records_its_rmse_curve(sqlite_url: str) -> None:
    """Each trial trains by epochs, reports the validation RMSE at each, and the callback
    records the curve under ``rmse``: the values are scikit-learn's at each epoch."""
    X, y, X_val, y_val = data()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    curves: dict[int, dict[int, float]] = {}

    def objective(trial: optuna.Trial) -> float:
        model = make_pipeline(StandardScaler(), SGDRegressor(alpha=trial.suggest_float("alpha", 1e-5, 1e-1, log=True), random_state=0))
        curve: dict[int, float] = {}

        def report(r: EpochReport) -> None:
            curve[r.epoch] = float(np.sqrt(skm.mean_squared_error(y_val, model.predict(X_val))))
            trial.report(r.metrics["validation"]["rmse"], r.epoch)

        with start_run(f"trial-{trial.number}", store=sqlite_url) as run:
            fit_epochs(model, X, y, run=run, epochs=EPOCHS, validation=(X_val, y_val), on_epoch=report)
        curves[trial.number] = curve
        return curve[EPOCHS]

    study = optuna.create_study(study_name="sgd", sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=2, callbacks=[OptunaCallback("tuning", store=sqlite_url, metric="rmse")])
    for trial, run in zip(study.trials, records.list_runs(open_store(sqlite_url), "tuning"), strict=True):
        frame = records.metric_frame(open_store(sqlite_url), [run.id], split="validation")
        recorded = dict(zip(frame["step"], frame["value"], strict=True))
        assert recorded == pytest.approx(curves[trial.number], rel=1e-12)
