"""How good is modelmon's label-free quality estimate (CBPE)? Estimated against realized
accuracy and macro F1, per window, under covariate shift, side by side with NannyML's CBPE.

Every number on modelmon's side comes from the real server: each case's scikit-learn model is
registered with ``modelmon.register_model(..., reference=..., target=..., validation=...)``
(which calibrates its probabilities on the validation data), ``modelmon serve`` runs as a
child process on a free loopback port, each window's rows are sent over the Open Inference
Protocol, and ``modelmon_expected_confusion_total`` is read from /metrics before and after the
window: the difference is that window's expected confusion matrix, from which accuracy =
trace / total and macro F1 = mean over classes of 2 E[TP_k] / (E[predicted_k] + E[actual_k])
(the recording rules' definitions, ``modelmon.rules.quality``). Realized values are
scikit-learn's on the known labels and the server's predictions. NannyML 0.13.1's CBPE runs
in its own venv (``benchmarks/.peers/nannyml``, built on first use by ``peers/venvs.py``) on
the same windows and the same probabilities: fitted on the validation rows with the model's
probabilities, estimated on the probabilities and labels the server returned.

Cases (all windows of one case have the same number of rows; labels are never sent):

- ``generated binary``: four numeric features and one categorical, a non-linear truth, a
  random forest (probabilities pulled towards 0.5). Over 12 windows the informative features'
  spread shrinks, two others move and the categorical mix changes: accuracy falls.
- ``generated 3-class``: an ordinal three-class truth, Gaussian naive Bayes with a redundant
  feature (over-confident probabilities), the same kind of gradual shift.
- ``nannyml binary`` / ``nannyml multiclass`` with NannyML's shipped probabilities: the
  datasets carry their own model's probabilities, not the model. The registered model
  reproduces them exactly: a scikit-learn LogisticRegression whose coefficients are set by
  hand (binary: input logit(p), coefficient 1; multiclass: inputs log(p_k), coefficients the
  identity, so its softmax returns p). This is NannyML's own showcase, on NannyML's own scores;
  probabilities are clipped to [1e-6, 1 - 1e-6] to take a logarithm.
- ``nannyml binary`` / ``nannyml multiclass`` with our own model: a gradient-boosting pipeline
  on the datasets' real features (categorical ones one-hot encoded), trained on the first 60%
  of NannyML's reference period and calibrated on the rest.

NannyML's datasets are split into 10 windows (its own default of 10 chunks).

Reported per window: realized, modelmon's and NannyML's accuracy and macro F1 (for binary
cases NannyML's macro F1 comes from its estimated confusion matrix; its native ``f1``, the
positive class's, is compared as ``f1_positive``), and per case the mean absolute errors.
The target (issue 5): modelmon's MAE no worse than NannyML's, per case, for accuracy and for
macro F1 (equal to 1e-9 counts as no worse). Also per case, offline diagnostics of the
calibration choice made at registration (``calibration_diagnostics``): the MAE each method
would have had on the same served probabilities, and the method modelmon's calibration error
prefers when measured as ``calibrate`` does (five folds, out of fold) or with NannyML's 10 splits.

    python benchmarks/cbpe.py            # full run (a few minutes; builds the NannyML venv once)
    python benchmarks/cbpe.py --quick    # seconds: generated data, small windows; NannyML only if its venv exists

Writes benchmarks/results/cbpe.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from peers import venvs  # noqa: E402

RESULTS = HERE / "results" / "cbpe.json"
TARGET = "y"
REQUEST_ROWS = 1000
EXPECTED = "modelmon_expected_confusion_total"
V2_TYPES = {"float64": "FP64", "float32": "FP32", "int64": "INT64", "int32": "INT32", "bool": "BOOL", "string": "BYTES"}
CLIP = 1e-6
#: Two mean absolute errors this close are equal (floating-point rounding).
TIE = 1e-9


@dataclass
class Case:
    name: str  # registry model name
    title: str
    model: Any
    model_note: str
    reference: pd.DataFrame  # training features: the model's reference profile
    validation: pd.DataFrame  # features and TARGET: calibration and baseline
    windows: list[pd.DataFrame]  # features and TARGET, all the same length
    window_notes: list[str]
    result: dict[str, Any] = field(default_factory=dict)


# -- generated data ---------------------------------------------------------------------------


def _mix(start: list[float], end: list[float], t: float) -> np.ndarray:
    return np.array(start) * (1 - t) + np.array(end) * t


def generated_binary(rng: np.random.Generator, n: int, t: float) -> pd.DataFrame:
    """``t`` from 0 (the training distribution) to 1 (the most shifted). P(y | x) never
    changes: only the features' distribution does (covariate shift)."""
    z = rng.normal(size=(n, 4))
    spread = np.array([1 - 0.55 * t, 1 - 0.55 * t, 1.0, 1.0])  # informative features crowd the boundary
    x = t * np.array([0.3, 0.0, 0.8, -0.6]) + z * spread
    x[:, 1] = 0.4 * x[:, 0] + np.sqrt(1 - 0.16) * x[:, 1]
    channel = rng.choice(["a", "b", "c"], n, p=_mix([0.5, 0.3, 0.2], [0.2, 0.3, 0.5], t))
    logit = (2.5 * x[:, 0] - 1.5 * x[:, 1] + 1.0 * x[:, 2] * x[:, 3]
             + np.select([channel == "a", channel == "b"], [0.8, -0.4], 0.0) - 0.2)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(np.int64)
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "x4": x[:, 3], "channel": channel, TARGET: y})


def generated_multiclass(rng: np.random.Generator, n: int, t: float) -> pd.DataFrame:
    x = rng.normal(size=(n, 3))
    x[:, 0] = x[:, 0] * (1 - 0.5 * t) + 0.4 * t
    x[:, 2] = x[:, 2] + 0.8 * t
    x4 = x[:, 0] + 0.3 * rng.normal(size=n)  # a near copy of x1: naive Bayes counts it twice
    region = rng.choice(["north", "south", "east"], n, p=_mix([0.4, 0.35, 0.25], [0.2, 0.3, 0.5], t))
    score = (1.6 * x[:, 0] + 0.8 * x[:, 1] - 0.5 * x[:, 2] ** 2
             + np.select([region == "north", region == "south"], [0.4, -0.4], 0.0) + 0.6 * rng.logistic(size=n))
    y = np.where(score < -0.9, "low", np.where(score < 0.6, "mid", "high"))
    return pd.DataFrame({"x1": x[:, 0], "x2": x[:, 1], "x3": x[:, 2], "x4": x4, "region": region, TARGET: y})


def _pipeline(frame: pd.DataFrame, estimator: Any, dense: bool = False) -> Any:
    from sklearn.compose import make_column_transformer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = frame.drop(columns=TARGET)
    categorical = [c for c in features if not pd.api.types.is_numeric_dtype(features[c])]
    numeric = [c for c in features if c not in categorical]
    encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=not dense)
    return make_pipeline(make_column_transformer((StandardScaler(), numeric), (encoder, categorical)), estimator)


def generated_cases(quick: bool) -> list[Case]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.naive_bayes import GaussianNB

    train_rows, validation_rows, n_windows, window_rows = (4000, 4000, 4, 1000) if quick else (20000, 10000, 12, 2500)
    cases = []
    specs = [
        ("gen-binary", "generated binary", generated_binary,
         RandomForestClassifier(n_estimators=30 if quick else 100, min_samples_leaf=10, random_state=0, n_jobs=1),
         f"RandomForestClassifier({30 if quick else 100} trees, min_samples_leaf=10) after scaling and one-hot encoding", False),
        ("gen-3class", "generated 3-class", generated_multiclass, GaussianNB(),
         "GaussianNB after scaling and one-hot encoding (x4 nearly duplicates x1: over-confident)", True),
    ]
    for seed, (name, title, make, estimator, note, dense) in enumerate(specs):
        rng = np.random.default_rng(100 + seed)
        train, validation = make(rng, train_rows, 0.0), make(rng, validation_rows, 0.0)
        model = _pipeline(train, estimator, dense).fit(train.drop(columns=TARGET), train[TARGET])
        shifts = [w / (n_windows - 1) for w in range(n_windows)]
        cases.append(Case(name=name, title=title, model=model, model_note=note,
                          reference=train.drop(columns=TARGET), validation=validation,
                          windows=[make(rng, window_rows, t) for t in shifts],
                          window_notes=[f"shift t={t:.2f}" for t in shifts]))
    return cases


# -- NannyML's shipped datasets -----------------------------------------------------------------


def replay_model(classes: list[Any], columns: list[str]) -> Any:
    """A fitted-by-hand LogisticRegression that returns the probabilities it is given: binary
    input logit(p) with coefficient 1; multiclass inputs log(p_k) with the identity, whose
    softmax is p."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression()
    model.classes_ = np.array(classes, dtype=object if isinstance(classes[0], str) else np.int64)
    k = len(columns)
    model.coef_ = np.eye(k) if k > 1 else np.ones((1, 1))
    model.intercept_ = np.zeros(k)
    model.n_features_in_ = k
    model.feature_names_in_ = np.array(columns, dtype=object)
    model.n_iter_ = np.zeros(1, dtype=np.int32)
    return model


def replay_inputs(frame: pd.DataFrame, spec: dict) -> tuple[pd.DataFrame, np.ndarray]:
    """The replay model's input columns for a NannyML frame, and the probabilities they encode."""
    classes = spec["classes"]
    if len(classes) == 2:
        p1 = frame[spec["proba"]["1"]].to_numpy(dtype=np.float64)
        proba = np.column_stack([1 - p1, p1])
        p = np.clip(p1, CLIP, 1 - CLIP)
        return pd.DataFrame({"logit_proba": np.log(p / (1 - p))}), proba
    proba = frame[[spec["proba"][c] for c in classes]].to_numpy(dtype=np.float64)
    logs = np.log(np.clip(proba, CLIP, 1.0))
    return pd.DataFrame(logs, columns=[f"log_proba_{c}" for c in classes]), proba


def _real_features(frame: pd.DataFrame, spec: dict) -> pd.DataFrame:
    features = frame[spec["features"]].copy()
    for column in features:
        if pd.api.types.is_bool_dtype(features[column]):
            features[column] = features[column].map({True: "yes", False: "no"})
        elif not pd.api.types.is_numeric_dtype(features[column]):
            features[column] = features[column].astype(str)
    return features


def _windows(frame: pd.DataFrame, n: int) -> list[pd.DataFrame]:
    size = len(frame) // n
    return [frame.iloc[w * size : (w + 1) * size].reset_index(drop=True) for w in range(n)]


def nannyml_cases(directory: Path, n_windows: int = 10) -> list[Case]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    manifest = json.loads((directory / "datasets.json").read_text())
    cases = []
    for kind in ("binary", "multiclass"):
        spec = manifest[kind]
        reference = pd.read_parquet(directory / f"{kind}_reference.parquet")
        analysis = pd.read_parquet(directory / f"{kind}_analysis.parquet")
        truth_ref, truth_analysis = reference[spec["target"]].to_numpy(), analysis[spec["target"]].to_numpy()

        # 1. NannyML's own probabilities, reproduced by the registered model.
        inputs_ref, proba_ref = replay_inputs(reference, spec)
        inputs_analysis, _ = replay_inputs(analysis, spec)
        model = replay_model(spec["classes"], list(inputs_ref.columns))
        reproduced = model.predict_proba(inputs_ref)
        assert np.abs(reproduced - proba_ref).max() <= 2 * CLIP, "the replay model does not reproduce the probabilities"
        frames = _windows(inputs_analysis.assign(**{TARGET: truth_analysis}), n_windows)
        cases.append(Case(name=f"nml-{kind}-shipped", title=f"nannyml {kind}, shipped probabilities", model=model,
                          model_note="LogisticRegression set by hand to return NannyML's shipped probabilities "
                                     f"(max difference {np.abs(reproduced - proba_ref).max():.1e}, from clipping)",
                          reference=inputs_ref, validation=inputs_ref.assign(**{TARGET: truth_ref}), windows=frames,
                          window_notes=_halves(n_windows)))

        # 2. Our own model on the real features.
        features_ref, features_analysis = _real_features(reference, spec), _real_features(analysis, spec)
        cut = int(len(reference) * 0.6)
        train = features_ref.iloc[:cut].assign(**{TARGET: truth_ref[:cut]})
        validation = features_ref.iloc[cut:].reset_index(drop=True).assign(**{TARGET: truth_ref[cut:]})
        own = _pipeline(train, HistGradientBoostingClassifier(max_iter=200, random_state=0), dense=True)
        own.fit(train.drop(columns=TARGET), train[TARGET])
        frames = _windows(features_analysis.assign(**{TARGET: truth_analysis}), n_windows)
        cases.append(Case(name=f"nml-{kind}-own", title=f"nannyml {kind}, own model", model=own,
                          model_note=f"HistGradientBoostingClassifier(max_iter=200) on the real features, trained on "
                                     f"the first {cut:,} reference rows, calibrated on the other {len(reference) - cut:,}",
                          reference=train.drop(columns=TARGET), validation=validation, windows=frames,
                          window_notes=_halves(n_windows)))
    return cases


def _halves(n: int) -> list[str]:
    return ["analysis, 1st half" if w < n // 2 else "analysis, 2nd half" for w in range(n)]


def export_nannyml_datasets(python: Path, directory: Path) -> None:
    subprocess.run([str(python), str(HERE / "peers" / "nannyml_cbpe.py"), "datasets", str(directory)],
                   check=True, env=venvs.env())


# -- the server ---------------------------------------------------------------------------------


def start_server(registry: Path, home: Path, log: Path) -> tuple[subprocess.Popen, str]:
    from modelmon.stack.processes import free_port, wait_for_http

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", "serve", "--registry", str(registry), "--port", str(port),
         "--no-prediction-log", "--drain-seconds", "0"],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "MODELMON_HOME": str(home)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/v2/health/ready", timeout=120, process=process)
    except Exception:
        stop(process)
        raise RuntimeError(f"modelmon serve did not start:\n{log.read_text()[-3000:]}") from None
    return process, url


def stop(process: subprocess.Popen) -> None:
    from modelmon.stack.processes import stop_process

    stop_process(process)


def expected_cells(client: httpx.Client, model: str, classes: list[str]) -> np.ndarray:
    """The server's ``modelmon_expected_confusion_total`` for ``model`` as a matrix [actual, predicted]."""
    from prometheus_client.parser import text_string_to_metric_families

    index = {c: i for i, c in enumerate(classes)}
    cells = np.full((len(classes), len(classes)), np.nan)
    response = client.get("/metrics")
    response.raise_for_status()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == EXPECTED and sample.labels.get("model") == model:
                cells[index[sample.labels["actual"]], index[sample.labels["predicted"]]] = sample.value
    if np.isnan(cells).any():
        raise RuntimeError(f"/metrics lacks some {EXPECTED} cells of {model}")
    return cells


def infer(client: httpx.Client, model: str, signature: Any, frame: pd.DataFrame) -> tuple[np.ndarray, list]:
    """Probabilities and labels for ``frame``'s rows, from the server."""
    inputs = []
    for spec in signature.features:
        column = frame[spec.name]
        data = column.astype(str).tolist() if spec.is_categorical else column.tolist()
        inputs.append({"name": spec.name, "shape": [len(frame)], "datatype": V2_TYPES[spec.dtype], "data": data})
    response = client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    if response.status_code != 200:
        raise RuntimeError(f"{model}: HTTP {response.status_code}: {response.text[:500]}")
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    probabilities = outputs["probabilities"]
    return np.asarray(probabilities["data"], dtype=np.float64).reshape(probabilities["shape"]), outputs["label"]["data"]


def serve_windows(client: httpx.Client, case: Case, card: Any) -> list[dict[str, Any]]:
    from modelmon.registry.calibration import apply, expected_confusion

    classes = [str(c) for c in card.signature.classes]
    features = [f.name for f in card.signature.features]
    out = []
    for frame in case.windows:
        before = expected_cells(client, case.name, classes)
        started = time.perf_counter()
        parts = [infer(client, case.name, card.signature, frame.iloc[s : s + REQUEST_ROWS][features])
                 for s in range(0, len(frame), REQUEST_ROWS)]
        seconds = time.perf_counter() - started
        after = expected_cells(client, case.name, classes)
        proba = np.concatenate([p for p, _ in parts])
        labels = [str(v) for _, part_labels in parts for v in part_labels]
        predicted = proba.argmax(axis=1)
        if labels != [classes[i] for i in predicted]:
            raise RuntimeError(f"{case.name}: the server's labels are not the argmax of its probabilities")
        cells = after - before
        # The same matrix computed here from the returned probabilities and the card's calibration:
        # shows that the counters are what the server's code path says they are.
        offline = expected_confusion(apply(card.calibration, proba), predicted)
        out.append({"cells": cells, "proba": proba, "predicted": predicted, "seconds": seconds,
                    "server_vs_offline": float(np.abs(cells - offline).max()),
                    "cells_sum_minus_rows": float(cells.sum() - len(frame))})
    return out


# -- scores ---------------------------------------------------------------------------------------


def scores_from_cells(cells: np.ndarray) -> dict[str, float]:
    """Accuracy, macro F1 and per-class F1 from a confusion matrix [actual, predicted] of counts
    or expected counts, as the recording rules define them (scikit-learn's, zero_division=0)."""
    diagonal, predicted, actual = np.diag(cells), cells.sum(axis=0), cells.sum(axis=1)
    present = (predicted + actual) > 0
    f1 = np.zeros(len(cells))
    f1[present] = 2 * diagonal[present] / (predicted[present] + actual[present])
    return {"accuracy": float(diagonal.sum() / cells.sum()), "f1_macro": float(f1[present].mean()), "f1_per_class": f1.tolist()}


def realized(truth: np.ndarray, predicted: np.ndarray, n_classes: int) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    out = {"accuracy": float(accuracy_score(truth, predicted)),
           "f1_macro": float(f1_score(truth, predicted, average="macro", zero_division=0))}
    if n_classes == 2:
        out["f1_positive"] = float(f1_score(truth, predicted, pos_label=1, average="binary", zero_division=0))
    return out


def class_indices(values: pd.Series, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[str(v.item() if isinstance(v, np.generic) else v)] for v in values])


# -- NannyML ----------------------------------------------------------------------------------


def nannyml_job(case: Case, card: Any, served: list[dict], directory: Path) -> Path:
    """A job directory for ``peers/nannyml_cbpe.py estimate``: the validation rows with the
    model's probabilities (what ``register_model`` calibrated on) and labels as the reference,
    and the probabilities and predictions the server returned, by window, as the analysis."""
    classes = [str(c) for c in card.signature.classes]
    features = [f.name for f in card.signature.features]
    proba_ref = case.model.predict_proba(case.validation[features])
    columns = [f"proba_{j}" for j in range(len(classes))]
    reference = pd.DataFrame(proba_ref, columns=columns).assign(
        y_true=class_indices(case.validation[TARGET], classes), y_pred=proba_ref.argmax(axis=1))
    analysis = pd.concat([
        pd.DataFrame(w["proba"], columns=columns).assign(y_pred=w["predicted"], window=i)
        for i, w in enumerate(served)
    ], ignore_index=True)
    directory.mkdir()
    reference.to_parquet(directory / "reference.parquet", index=False)
    analysis.to_parquet(directory / "analysis.parquet", index=False)
    (directory / "job.json").write_text(json.dumps({"classes": len(classes), "chunk_size": len(case.windows[0])}))
    return directory


def run_nannyml(python: Path, jobs: list[Path]) -> list[dict[str, Any]]:
    command = [str(python), str(HERE / "peers" / "nannyml_cbpe.py"), "estimate", *map(str, jobs)]
    result = subprocess.run(command, capture_output=True, text=True, env=venvs.env())
    if result.returncode != 0:
        raise RuntimeError(f"NannyML failed:\n{result.stderr[-3000:]}")
    return [json.loads((job / "result.json").read_text()) for job in jobs]


# -- diagnostics: what modelmon's calibration choice cost ------------------------------------------


def calibration_diagnostics(case: Case, card: Any, served: list[dict]) -> dict[str, Any]:
    """Offline, with modelmon's own functions (``modelmon.registry.calibration``), on the same
    validation rows and the same served probabilities (the server's counters equal this
    computation, see ``server_vs_offline_max_abs``):

    - ``mae_if``: the error each method would have had, its map fitted on the whole
      validation set as ``calibrate`` does for the method it keeps;
    - ``cv_error_modelmon``: the out-of-sample calibration error ``calibrate`` chose by (five
      folds, out of fold), and ``cv_error_10x90``: the same error
      (``calibration_error``) pooled over 10 stratified 90/10 splits, NannyML's scheme."""
    from sklearn.model_selection import StratifiedShuffleSplit

    from modelmon.registry.calibration import (
        METHODS,
        Calibration,
        apply,
        calibration_error,
        expected_confusion,
        fit_maps,
    )

    classes = [str(c) for c in card.signature.classes]
    features = [f.name for f in card.signature.features]
    proba = case.model.predict_proba(case.validation[features])
    truth = class_indices(case.validation[TARGET], classes)
    mae_if, cv_10 = {}, {}
    for method in METHODS:
        calibration = Calibration(method=method, maps=fit_maps(proba, truth, method))
        errors: dict[str, list[float]] = {"accuracy": [], "f1_macro": []}
        for frame, result in zip(case.windows, served, strict=True):
            estimate = scores_from_cells(expected_confusion(apply(calibration, result["proba"]), result["predicted"]))
            actual = realized(class_indices(frame[TARGET], classes), result["predicted"], len(classes))
            for metric in errors:
                errors[metric].append(abs(estimate[metric] - actual[metric]))
        mae_if[method] = {metric: float(np.mean(v)) for metric, v in errors.items()}
        pooled_q, pooled_y = [], []
        for fit_rows, test_rows in StratifiedShuffleSplit(n_splits=10, test_size=0.1, random_state=42).split(proba, truth):
            fitted = Calibration(method=method, maps=fit_maps(proba[fit_rows], truth[fit_rows], method))
            pooled_q.append(apply(fitted, proba[test_rows]))
            pooled_y.append(truth[test_rows])
        cv_10[method] = calibration_error(np.concatenate(pooled_q), np.concatenate(pooled_y))
    chosen = card.calibration.method if card.calibration else "none"
    return {"chosen": chosen, "mae_if": mae_if,
            "cv_error_modelmon": card.calibration.cv_error if card.calibration else None, "cv_error_10x90": cv_10,
            "best_by_modelmon": min(card.calibration.cv_error, key=card.calibration.cv_error.get) if card.calibration else None,
            "best_by_10x90": min(cv_10, key=cv_10.get)}


# -- the run ------------------------------------------------------------------------------------


def mae(rows: list[dict], tool: str, metric: str) -> float | None:
    errors = [abs(r[tool][metric] - r["realized"][metric]) for r in rows if r.get(tool) and metric in r[tool]]
    return float(np.mean(errors)) if errors else None


def run_case(case: Case, card: Any, served: list[dict], nannyml: dict | None) -> dict[str, Any]:
    classes = [str(c) for c in card.signature.classes]
    binary = len(classes) == 2
    chunks = {c["window"]: c for c in nannyml["chunks"]} if nannyml else {}
    rows = []
    for w, (frame, result) in enumerate(zip(case.windows, served, strict=True)):
        truth = class_indices(frame[TARGET], classes)
        estimate = scores_from_cells(result["cells"])
        row = {
            "window": w, "rows": len(frame), "drift": case.window_notes[w],
            "realized": realized(truth, result["predicted"], len(classes)),
            "modelmon": {"accuracy": estimate["accuracy"], "f1_macro": estimate["f1_macro"]},
            "expected_confusion": result["cells"].round(6).tolist(),
            "server_vs_offline_max_abs": result["server_vs_offline"],
            "cells_sum_minus_rows": result["cells_sum_minus_rows"],
            "serve_seconds": round(result["seconds"], 3),
        }
        if binary:
            row["modelmon"]["f1_positive"] = estimate["f1_per_class"][1]
        if w in chunks:
            chunk = chunks[w]
            row["nannyml"] = {"accuracy": chunk["accuracy"], "f1_macro": chunk["f1_macro"]}
            if binary:
                row["nannyml"]["f1_positive"] = chunk["f1"]
        rows.append(row)
    metrics = ["accuracy", "f1_macro", *(["f1_positive"] if binary else [])]
    summary = {m: {"modelmon_mae": mae(rows, "modelmon", m), "nannyml_mae": mae(rows, "nannyml", m)} for m in metrics}
    for values in summary.values():
        if values["nannyml_mae"] is not None:  # equal up to rounding counts as no worse
            values["modelmon_no_worse"] = values["modelmon_mae"] <= values["nannyml_mae"] + TIE
    calibration = card.calibration
    return {
        "title": case.title, "model": case.model_note, "classes": classes,
        "train_rows": len(case.reference), "validation_rows": len(case.validation),
        "windows": len(case.windows), "window_rows": len(case.windows[0]),
        "onnx_served": card.serving_artifact is not None,
        "baseline": card.baseline,
        "modelmon_calibration": {"method": calibration.method, "cv_error": calibration.cv_error} if calibration else None,
        "nannyml_calibration": nannyml["calibration"] if nannyml else None,
        "nannyml_seconds": nannyml["seconds"] if nannyml else None,
        "mae": summary, "calibration_diagnostics": calibration_diagnostics(case, card, served), "per_window": rows,
    }


def pooled(results: dict[str, dict], metric: str, tool: str, prefix: str = "") -> float | None:
    errors = [abs(r[tool][metric] - r["realized"][metric]) for name, c in results.items() if name.startswith(prefix)
              for r in c["per_window"] if r.get(tool) and metric in r[tool]]
    return float(np.mean(errors)) if errors else None


def markdown(results: dict[str, dict]) -> str:
    f = lambda v: "" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| case | window | drift | realized acc | modelmon acc | NannyML acc | realized F1 | modelmon F1 | NannyML F1 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for case in results.values():
        for r in case["per_window"]:
            nml = r.get("nannyml") or {}
            lines.append(f"| {case['title']} | {r['window']} | {r['drift']} | {f(r['realized']['accuracy'])} | "
                         f"{f(r['modelmon']['accuracy'])} | {f(nml.get('accuracy'))} | {f(r['realized']['f1_macro'])} | "
                         f"{f(r['modelmon']['f1_macro'])} | {f(nml.get('f1_macro'))} |")
    lines += ["", "| case | calibration (modelmon / NannyML) | accuracy MAE modelmon | accuracy MAE NannyML "
                  "| macro F1 MAE modelmon | macro F1 MAE NannyML |", "|---|---|---|---|---|---|"]
    for case in results.values():
        m = case["mae"]
        nml_cal = case["nannyml_calibration"]
        nml_text = "" if nml_cal is None else ",".join(sorted(set(nml_cal.values()))) if len(set(nml_cal.values())) == 1 \
            else " ".join(f"{case['classes'][int(k)]}:{v}" for k, v in nml_cal.items())
        cal = f"{case['modelmon_calibration']['method']} / {nml_text or 'n/a'}"
        lines.append(f"| {case['title']} | {cal} | {f(m['accuracy']['modelmon_mae'])} | {f(m['accuracy']['nannyml_mae'])} | "
                     f"{f(m['f1_macro']['modelmon_mae'])} | {f(m['f1_macro']['nannyml_mae'])} |")
    lines += ["", "Offline diagnostics (modelmon's calibration functions, same probabilities): accuracy MAE had each "
                  "method been kept, and which method the calibration error picks with 5 folds (modelmon) or 10 "
                  "stratified 90/10 splits (NannyML's scheme).", "",
              "| case | kept | MAE if none | MAE if isotonic | MAE if sigmoid | lowest error, 5 folds | lowest error, 10 splits |",
              "|---|---|---|---|---|---|---|"]
    for case in results.values():
        d = case["calibration_diagnostics"]
        lines.append(f"| {case['title']} | {d['chosen']} | " + " | ".join(f(d["mae_if"][m]["accuracy"]) for m in ("none", "isotonic", "sigmoid"))
                     + f" | {d['best_by_modelmon']} | {d['best_by_10x90']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="generated data only, small windows (seconds)")
    parser.add_argument("--no-nannyml", action="store_true", help="modelmon only")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731

    from modelmon.registry import Registry, register_model

    python = None
    if not args.no_nannyml:
        python = venvs.python("nannyml") if venvs.installed("nannyml") else None
        if python is None and not args.quick:
            python = venvs.ensure("nannyml", log=log)
        if python is None:
            log("NannyML venv absent: modelmon only")

    with tempfile.TemporaryDirectory(prefix="cbpe-bench-") as tmp:
        work = Path(tmp)
        cases = generated_cases(args.quick)
        if python is not None and not args.quick:
            export_nannyml_datasets(python, work / "nannyml-datasets")
            cases += nannyml_cases(work / "nannyml-datasets")

        registry = Registry(work / "registry")
        cards, register_seconds = {}, {}
        for case in cases:
            log(f"registering {case.name}")
            started = time.perf_counter()
            cards[case.name] = register_model(case.model, name=case.name, reference=case.reference, target=TARGET,
                                              validation=case.validation, registry=registry)
            register_seconds[case.name] = round(time.perf_counter() - started, 2)

        process, url = start_server(work / "registry", work / "home", work / "server.log")
        served = {}
        try:
            with httpx.Client(base_url=url, timeout=120) as client:
                for case in cases:
                    log(f"serving {case.name}: {len(case.windows)} windows of {len(case.windows[0]):,} rows")
                    served[case.name] = serve_windows(client, case, cards[case.name])
        finally:
            stop(process)

        nannyml: list[dict | None] = [None] * len(cases)
        if python is not None:
            log("NannyML CBPE on the same windows and probabilities")
            jobs = [nannyml_job(case, cards[case.name], served[case.name], work / f"nannyml-{case.name}") for case in cases]
            nannyml = list(run_nannyml(python, jobs))
        results = {}
        for case, estimates in zip(cases, nannyml, strict=True):
            results[case.name] = run_case(case, cards[case.name], served[case.name], estimates)
            results[case.name]["register_seconds"] = register_seconds[case.name]

    overall = {}
    for prefix, label in (("gen-", "generated"), ("nml-", "nannyml"), ("", "all")):
        for metric in ("accuracy", "f1_macro"):
            values = {tool: pooled(results, metric, tool, prefix) for tool in ("modelmon", "nannyml")}
            if values["modelmon"] is not None:
                overall[f"{label} | {metric}"] = values
    verdicts = [v["modelmon_no_worse"] for c in results.values() for m, v in c["mae"].items()
                if m != "f1_positive" and "modelmon_no_worse" in v]
    report = {
        "benchmark": "cbpe", "quick": args.quick,
        "machine": {"python": platform.python_version(), "cores": os.cpu_count()},
        "versions": {"nannyml": venvs.version("nannyml", "nannyml") if python else None,
                     "scikit-learn": __import__("sklearn").__version__},
        "target": "modelmon's mean absolute error no worse than NannyML's (accuracy and macro F1, per case)",
        "target_met": all(verdicts) if verdicts else None,
        "pooled_mae": overall,
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(results))
    print()
    for key, values in overall.items():
        print(f"pooled MAE {key}: modelmon {values['modelmon']:.4f}"
              + (f", NannyML {values['nannyml']:.4f}" if values["nannyml"] is not None else ""))
    print(f"target met: {report['target_met']}")


if __name__ == "__main__":
    main()
