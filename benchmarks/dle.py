"""How good is modelmon's label-free error estimate for regression models? Estimated against
realized MAE and RMSE, per window, side by side with NannyML's DLE and the naive estimate.

Every number on modelmon's side comes from the real server: each case's scikit-learn model is
registered with ``modelmon.register_model(..., reference=..., target=..., validation=...)``
(which fits the loss estimator, ``modelmon.registry.loss_estimator``, on the validation rows),
``modelmon serve`` runs as a child process on a free loopback port, each window's rows are
sent over the Open Inference Protocol, and the counters ``modelmon_regression_estimated``,
``modelmon_regression_expected_absolute_error`` and ``..._expected_squared_error`` are read
from /metrics before and after the window: estimated MAE = expected absolute error / rows and
RMSE = sqrt(expected squared error / rows) (what the PromQL ratio gives,
docs/regression-estimate.md). The same numbers computed offline from the registered estimator
on the served predictions are reported (``server_vs_offline_max_relative``) to show that the
counters are that code path. Realized values are scikit-learn's on the known targets and the
server's predictions. NannyML 0.13.1's DLE runs in its own venv (``benchmarks/.peers/nannyml``,
built on first use by ``peers/venvs.py``) on the same rows: fitted on the validation rows
with the model's predictions and targets, estimated on the features and the served
predictions, one chunk per window. The naive estimate is the validation rows' MAE and RMSE,
constant.

Cases (all windows of one case have the same number of rows; targets are never sent):

- ``nannyml car price``: NannyML's shipped synthetic regression dataset
  (``load_synthetic_car_price_dataset``) with its shipped predictions. The registered model
  reproduces them: a scikit-learn pipeline whose input ``model_prediction`` is the shipped
  ``y_pred`` and whose LinearRegression has coefficient 1 on it and 0 elsewhere (set by hand),
  so the served model has the dataset's seven features and returns its predictions. Validation
  (the estimators' fit) = NannyML's 60,000 reference rows; the 60,000 analysis rows in 10
  windows (NannyML's own example uses chunks of 6,000).
- ``generated shift``: five numeric features and one categorical, a non-linear mean, noise
  whose scale depends on x1, x5 and the region; a HistGradientBoostingRegressor. Over 12
  windows x1 moves up by 1.6 sd, x3 by 0.5 and the region mix changes (covariate shift:
  P(y | x) never changes), towards rows with larger errors, inside the reference's support
  (the share of rows beyond the reference's 99.9th percentile of x1 is reported per window).

Two more generated cases break the estimate's assumptions on purpose (docs/regression-estimate.md),
and are reported beside the others, not judged by the target:

- ``generated outside support``: x1 moves 3.5 sd up, far beyond the reference's range, where
  the noise keeps growing and the model's trees extrapolate flat;
- ``generated concept drift``: the features never change; the noise grows by half and the
  target gains a term in x2 (P(y | x) changes).

The target (issue 18): modelmon's mean absolute error (estimate against realized, per window)
no worse than NannyML's on each judged case (car price, generated shift), for MAE and RMSE,
and lower on their pooled windows (each error divided by its case's naive value, so the
currency-scaled car prices and the generated case pool).

    python benchmarks/dle.py            # full run (minutes; builds the NannyML venv once)
    python benchmarks/dle.py --quick    # generated data, small windows; NannyML only if its venv exists

Writes benchmarks/results/dle.json and prints a Markdown table.
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
from cbpe import start_server, stop  # noqa: E402
from peers import venvs  # noqa: E402

RESULTS = HERE / "results" / "dle.json"
TARGET = "y"
REQUEST_ROWS = 1000
COUNTERS = ("modelmon_regression_estimated", "modelmon_regression_expected_absolute_error",
            "modelmon_regression_expected_squared_error")
V2_TYPES = {"float64": "FP64", "float32": "FP32", "int64": "INT64", "int32": "INT32", "bool": "BOOL", "string": "BYTES"}
METRICS = ("mae", "rmse")
TOOLS = ("modelmon", "nannyml", "naive")
TIE = 1e-9


@dataclass
class Case:
    name: str
    title: str
    model: Any
    model_note: str
    reference: pd.DataFrame  # training features: the model's reference profile
    validation: pd.DataFrame  # features and TARGET: the estimators' fit and the naive baseline
    windows: list[pd.DataFrame]  # features and TARGET, all the same length
    window_notes: list[str]
    categorical: list[str]
    result: dict[str, Any] = field(default_factory=dict)


# -- generated data ---------------------------------------------------------------------------


def generated(rng: np.random.Generator, n: int, t: float, kind: str = "shift") -> pd.DataFrame:
    """``t`` from 0 (the training distribution) to 1 (the most changed). ``kind``:

    - ``shift``: covariate shift inside the reference's support (x1 up by 1.6 sd, x3 by 0.5,
      the region mix), towards rows with larger errors; P(y | x) never changes;
    - ``outside``: x1 up by 3.5 sd, far outside the reference's range, where the noise keeps
      growing (its scale is linear in |x1|) and the model's trees extrapolate flat;
    - ``concept``: the features never change; the noise grows by half and y gains a term in
      x2 (concept drift: P(y | x) changes)."""
    x = rng.normal(size=(n, 5))
    p_region = np.array([0.5, 0.3, 0.2])
    if kind == "shift":
        x[:, 0] = x[:, 0] * (1 - 0.3 * t) + 1.6 * t
        x[:, 2] = x[:, 2] + 0.5 * t
        p_region = p_region * (1 - t) + np.array([0.2, 0.3, 0.5]) * t
    elif kind == "outside":
        x[:, 0] = x[:, 0] + 3.5 * t
    region = rng.choice(["north", "south", "east"], n, p=p_region)
    mean = 3 * x[:, 0] + 2 * np.sin(2 * x[:, 1]) + x[:, 2] * x[:, 3] + np.select([region == "north", region == "south"], [1.0, -1.0], 0.0)
    if kind == "outside":
        scale = 0.4 + 0.6 * np.abs(x[:, 0]) + 0.8 * (region == "east")
    else:
        scale = 0.4 + 1.6 / (1 + np.exp(-2 * x[:, 0])) + 0.8 * (region == "east") + 0.3 * np.abs(x[:, 4])
    if kind == "concept":
        mean = mean + 1.5 * t * x[:, 1]
        scale = scale * (1 + 0.5 * t)
    y = mean + scale * rng.normal(size=n)
    frame = pd.DataFrame({f"x{i + 1}": x[:, i] for i in range(5)})
    return frame.assign(region=region, **{TARGET: y})


GENERATED = {
    "gen-shift": ("generated shift", "shift", "covariate shift inside the reference's support"),
    "gen-outside": ("generated outside support", "outside", "assumption broken: shift far outside the reference's range"),
    "gen-concept": ("generated concept drift", "concept", "assumption broken: P(y | x) changes"),
}
#: The cases the target is judged on; the others show what happens when an assumption breaks.
TARGET_CASES = ("nml-car-price", "gen-shift")


def generated_cases(quick: bool) -> list[Case]:
    from sklearn.compose import make_column_transformer
    from sklearn.ensemble import HistGradientBoostingRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    train_rows, validation_rows, n_windows, window_rows = (3000, 3000, 4, 1000) if quick else (20000, 10000, 12, 2500)
    cases = []
    for seed, (name, (title, kind, note)) in enumerate(GENERATED.items()):
        if quick and kind != "shift":
            continue
        rng = np.random.default_rng(7 + 10 * seed)
        train, validation = generated(rng, train_rows, 0.0, kind), generated(rng, validation_rows, 0.0, kind)
        numeric = [f"x{i + 1}" for i in range(5)]
        model = make_pipeline(
            make_column_transformer((OneHotEncoder(handle_unknown="ignore", sparse_output=False), ["region"]),
                                    ("passthrough", numeric)),
            HistGradientBoostingRegressor(max_iter=200, random_state=0),
        ).fit(train.drop(columns=TARGET), train[TARGET])
        shifts = [w / (n_windows - 1) for w in range(n_windows)]
        windows = [generated(rng, window_rows, t, kind) for t in shifts]
        edge = np.quantile(train["x1"], 0.999)
        notes = [f"t={t:.2f}, {100 * (w['x1'] > edge).mean():.1f}% of x1 beyond the reference's 99.9th pct"
                 for t, w in zip(shifts, windows, strict=True)]
        cases.append(Case(name=name, title=title, model=model,
                          model_note=f"{note}; HistGradientBoostingRegressor(max_iter=200) after one-hot encoding the region",
                          reference=train.drop(columns=TARGET), validation=validation, windows=windows,
                          window_notes=notes, categorical=["region"]))
    return cases


# -- NannyML's shipped dataset ----------------------------------------------------------------


def replay_model(frame: pd.DataFrame, features: list[str]) -> Any:
    """A pipeline on ``features`` + ``model_prediction`` that returns ``model_prediction``: a
    LinearRegression set by hand to coefficient 1 on it, 0 on the rest."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LinearRegression
    from sklearn.pipeline import make_pipeline

    pipeline = make_pipeline(make_column_transformer(("passthrough", ["model_prediction"])), LinearRegression())
    pipeline.fit(frame[[*features, "model_prediction"]], frame["model_prediction"])
    regression = pipeline[-1]
    regression.coef_ = np.array([1.0])
    regression.intercept_ = 0.0
    return pipeline


def nannyml_cases(directory: Path, n_windows: int = 10) -> list[Case]:
    spec = json.loads((directory / "car.json").read_text())
    features = spec["features"]
    reference = pd.read_parquet(directory / "car_reference.parquet")
    analysis = pd.read_parquet(directory / "car_analysis.parquet")

    def frame(raw: pd.DataFrame) -> pd.DataFrame:
        out = raw[features].copy()
        for column in spec["categorical"]:
            out[column] = out[column].astype(str)
        return out.assign(model_prediction=raw[spec["y_pred"]].astype(np.float64), **{TARGET: raw[spec["y_true"]].astype(np.float64)})

    reference_rows, analysis_rows = frame(reference), frame(analysis)
    model = replay_model(reference_rows, features)
    reproduced = model.predict(reference_rows.drop(columns=TARGET))
    assert np.abs(reproduced - reference_rows["model_prediction"]).max() < 1e-6, "the replay model does not reproduce y_pred"
    size = len(analysis_rows) // n_windows
    windows = [analysis_rows.iloc[w * size : (w + 1) * size].reset_index(drop=True) for w in range(n_windows)]
    notes = ["analysis, 1st half" if w < n_windows // 2 else "analysis, 2nd half" for w in range(n_windows)]
    return [Case(name="nml-car-price", title="nannyml car price", model=model,
                 model_note="pipeline returning NannyML's shipped y_pred (input model_prediction, LinearRegression "
                            "coefficient 1 set by hand) beside the dataset's seven features",
                 reference=reference_rows.drop(columns=TARGET), validation=reference_rows, windows=windows,
                 window_notes=notes, categorical=list(spec["categorical"]))]


def export_nannyml_dataset(python: Path, directory: Path) -> None:
    subprocess.run([str(python), str(HERE / "peers" / "nannyml_dle.py"), "dataset", str(directory)],
                   check=True, env=venvs.env())


# -- the server ---------------------------------------------------------------------------------


def counters(client: httpx.Client, model: str) -> np.ndarray:
    """[rows estimated, sum of expected |error|, sum of expected error**2] of ``model``."""
    from prometheus_client.parser import text_string_to_metric_families

    values = dict.fromkeys(COUNTERS, np.nan)
    response = client.get("/metrics")
    response.raise_for_status()
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            name = sample.name.removesuffix("_total")
            if name in values and sample.labels.get("model") == model:
                values[name] = sample.value
    if any(np.isnan(v) for v in values.values()):
        raise RuntimeError(f"/metrics lacks some of {COUNTERS} for {model}")
    return np.array([values[c] for c in COUNTERS])


def infer(client: httpx.Client, model: str, signature: Any, frame: pd.DataFrame) -> np.ndarray:
    inputs = []
    for spec in signature.features:
        column = frame[spec.name]
        data = column.astype(str).tolist() if spec.is_categorical else column.tolist()
        inputs.append({"name": spec.name, "shape": [len(frame)], "datatype": V2_TYPES[spec.dtype], "data": data})
    response = client.post(f"/v2/models/{model}/infer", json={"inputs": inputs})
    if response.status_code != 200:
        raise RuntimeError(f"{model}: HTTP {response.status_code}: {response.text[:500]}")
    outputs = {o["name"]: o for o in response.json()["outputs"]}
    return np.asarray(outputs["prediction"]["data"], dtype=np.float64)


def serve_windows(client: httpx.Client, case: Case, card: Any) -> list[dict[str, Any]]:
    features = [f.name for f in card.signature.features]
    out = []
    for frame in case.windows:
        before = counters(client, case.name)
        started = time.perf_counter()
        predicted = np.concatenate([infer(client, case.name, card.signature, frame.iloc[s : s + REQUEST_ROWS][features])
                                    for s in range(0, len(frame), REQUEST_ROWS)])
        seconds = time.perf_counter() - started
        for _ in range(50):  # the monitor counts at its flush; a scrape sees what is queued
            delta = counters(client, case.name) - before
            if delta[0] >= len(frame):
                break
            time.sleep(0.1)
        out.append({"predicted": predicted, "counters": delta, "seconds": seconds})
    return out


# -- scores ---------------------------------------------------------------------------------------


def realized(truth: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import mean_absolute_error, mean_squared_error

    return {"mae": float(mean_absolute_error(truth, predicted)), "rmse": float(np.sqrt(mean_squared_error(truth, predicted)))}


def offline(case: Case, card: Any, registry: Any, served: list[dict]) -> tuple[list[np.ndarray], float]:
    """The registered estimator applied here to each window and the served predictions, and
    its cost in CPU µs per row (1,000-row batches, as the monitor's flush sees them)."""
    from modelmon.registry.loss_estimator import LossEstimator
    from modelmon.types import FeatureBatch

    estimator = LossEstimator.load(registry.version_dir(case.name, card.version))
    assert estimator is not None, f"{case.name} was registered without a loss estimator"
    features = [f.name for f in card.signature.features]
    sums, cpu, rows = [], 0.0, 0
    for frame, result in zip(case.windows, served, strict=True):
        total = np.zeros(3)
        for s in range(0, len(frame), REQUEST_ROWS):
            batch = FeatureBatch.from_frame(frame.iloc[s : s + REQUEST_ROWS][features], card.signature)
            started = time.process_time()
            absolute, squared = estimator.expected_errors(batch, result["predicted"][s : s + REQUEST_ROWS])
            cpu += time.process_time() - started
            rows += batch.n_rows
            total += [batch.n_rows, absolute.sum(), squared.sum()]
        sums.append(total)
    return sums, 1e6 * cpu / rows


def nannyml_job(case: Case, served: list[dict], directory: Path) -> Path:
    """A job for ``peers/nannyml_dle.py estimate``: the validation rows with the model's
    predictions and targets as the reference; the windows' features and served predictions."""
    features = [c for c in case.reference.columns]
    validation = case.validation
    reference = validation[features].assign(y_pred=case.model.predict(validation[features]), y_true=validation[TARGET])
    analysis = pd.concat([w[features].assign(y_pred=s["predicted"], window=i)
                          for i, (w, s) in enumerate(zip(case.windows, served, strict=True))], ignore_index=True)
    directory.mkdir()
    reference.to_parquet(directory / "reference.parquet", index=False)
    analysis.to_parquet(directory / "analysis.parquet", index=False)
    (directory / "job.json").write_text(json.dumps({"features": features, "categorical": case.categorical,
                                                    "chunk_size": len(case.windows[0])}))
    return directory


def run_nannyml(python: Path, jobs: list[Path]) -> list[dict[str, Any]]:
    command = [str(python), str(HERE / "peers" / "nannyml_dle.py"), "estimate", *map(str, jobs)]
    result = subprocess.run(command, capture_output=True, text=True, env=venvs.env())
    if result.returncode != 0:
        raise RuntimeError(f"NannyML failed:\n{result.stderr[-3000:]}")
    return [json.loads((job / "result.json").read_text()) for job in jobs]


def run_case(case: Case, card: Any, served: list[dict], offline_sums: list[np.ndarray], cost: float,
             nannyml: dict | None) -> dict[str, Any]:
    features = [c for c in case.reference.columns]
    naive = realized(case.validation[TARGET].to_numpy(), case.model.predict(case.validation[features]))
    chunks = {c["window"]: c for c in nannyml["chunks"]} if nannyml else {}
    rows = []
    for w, (frame, result, mine) in enumerate(zip(case.windows, served, offline_sums, strict=True)):
        n, absolute, squared = result["counters"]
        row = {
            "window": w, "rows": len(frame), "drift": case.window_notes[w],
            "realized": realized(frame[TARGET].to_numpy(), result["predicted"]),
            "modelmon": {"mae": float(absolute / n), "rmse": float(np.sqrt(squared / n))},
            "naive": naive,
            "counted_rows": float(n),
            "server_vs_offline_max_relative": float(np.max(np.abs(result["counters"] - mine) / np.abs(mine))),
            "serve_seconds": round(result["seconds"], 3),
        }
        if w in chunks:
            row["nannyml"] = {"mae": chunks[w]["mae"], "rmse": chunks[w]["rmse"]}
        rows.append(row)
    summary: dict[str, dict[str, Any]] = {m: {f"{t}_mae": mae(rows, t, m) for t in TOOLS} for m in METRICS}
    for values in summary.values():
        if values["nannyml_mae"] is not None:
            values["modelmon_no_worse"] = values["modelmon_mae"] <= values["nannyml_mae"] + TIE
    judged = case.name in TARGET_CASES
    return {
        "title": case.title, "model": case.model_note, "judged_by_target": judged, "train_rows": len(case.reference),
        "validation_rows": len(case.validation), "windows": len(case.windows), "window_rows": len(case.windows[0]),
        "onnx_served": card.serving_artifact is not None, "baseline": card.baseline,
        "expected_errors_us_per_row": round(cost, 2),
        "nannyml_seconds": nannyml["seconds"] if nannyml else None,
        "mae": summary, "per_window": rows,
    }


def mae(rows: list[dict], tool: str, metric: str) -> float | None:
    errors = [abs(r[tool][metric] - r["realized"][metric]) for r in rows if r.get(tool)]
    return float(np.mean(errors)) if errors else None


def pooled(results: dict[str, dict], metric: str, tool: str, normalised: bool = False) -> float | None:
    """Mean absolute error over every window of every case; ``normalised``: each error divided
    by its case's naive (reference) value of the metric, so cases of different scales pool."""
    errors = [abs(r[tool][metric] - r["realized"][metric]) / (r["naive"][metric] if normalised else 1.0)
              for c in results.values() for r in c["per_window"] if r.get(tool)]
    return float(np.mean(errors)) if errors else None


def markdown(results: dict[str, dict]) -> str:
    f = lambda v: "" if v is None else f"{v:.3f}" if abs(v) < 100 else f"{v:,.0f}"  # noqa: E731
    lines = ["| case | window | drift | realized MAE | modelmon | NannyML | naive | realized RMSE | modelmon | NannyML | naive |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for case in results.values():
        for r in case["per_window"]:
            nml = r.get("nannyml") or {}
            lines.append(f"| {case['title']} | {r['window']} | {r['drift']} | " + " | ".join(
                f(v) for m in METRICS for v in (r["realized"][m], r["modelmon"][m], nml.get(m), r["naive"][m])) + " |")
    lines += ["", "| case | MAE: modelmon | NannyML | naive | RMSE: modelmon | NannyML | naive | µs/row |",
              "|---|---|---|---|---|---|---|---|"]
    for case in results.values():
        m = case["mae"]
        lines.append(f"| {case['title']} | " + " | ".join(f(m[metric][f'{t}_mae']) for metric in METRICS for t in TOOLS)
                     + f" | {case['expected_errors_us_per_row']} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="generated data only, small windows")
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

    with tempfile.TemporaryDirectory(prefix="dle-bench-") as tmp:
        work = Path(tmp)
        cases = generated_cases(args.quick)
        if python is not None and not args.quick:
            export_nannyml_dataset(python, work / "nannyml-dataset")
            cases = nannyml_cases(work / "nannyml-dataset") + cases

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
            with httpx.Client(base_url=url, timeout=300) as client:
                for case in cases:
                    log(f"serving {case.name}: {len(case.windows)} windows of {len(case.windows[0]):,} rows")
                    served[case.name] = serve_windows(client, case, cards[case.name])
        finally:
            stop(process)

        nannyml: list[dict | None] = [None] * len(cases)
        if python is not None:
            log("NannyML DLE on the same windows and predictions")
            jobs = [nannyml_job(case, served[case.name], work / f"nannyml-{case.name}") for case in cases]
            nannyml = list(run_nannyml(python, jobs))
        results = {}
        for case, estimates in zip(cases, nannyml, strict=True):
            sums, cost = offline(case, cards[case.name], registry, served[case.name])
            results[case.name] = run_case(case, cards[case.name], served[case.name], sums, cost, estimates)
            results[case.name]["register_seconds"] = register_seconds[case.name]

    judged = {name: c for name, c in results.items() if name in TARGET_CASES}
    overall = {metric: {t: pooled(judged, metric, t, normalised=True) for t in TOOLS} for metric in METRICS}
    overall_all = {metric: {t: pooled(results, metric, t, normalised=True) for t in TOOLS} for metric in METRICS}
    verdicts = [v["modelmon_no_worse"] for c in judged.values() for v in c["mae"].values() if "modelmon_no_worse" in v]
    pooled_better = [overall[m]["modelmon"] < overall[m]["nannyml"] for m in METRICS if overall[m]["nannyml"] is not None]
    report = {
        "benchmark": "dle", "quick": args.quick, "modelmon_side": "live server: /metrics counters",
        "machine": {"python": platform.python_version(), "cores": os.cpu_count()},
        "versions": {"nannyml": venvs.version("nannyml", "nannyml") if python else None,
                     "scikit-learn": __import__("sklearn").__version__},
        "target": "modelmon's mean absolute error no worse than NannyML's DLE on every case (MAE and RMSE), "
                  "and lower on the pooled windows, judged on " + ", ".join(TARGET_CASES)
                  + " (the other cases break an assumption on purpose)",
        "target_met": (all(verdicts) and all(pooled_better)) if verdicts else None,
        "pooled_mae_relative_to_naive_value": overall,
        "pooled_mae_relative_to_naive_value_all_cases": overall_all,
        "cases": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(markdown(results))
    print()
    for label, table in (("target cases", overall), ("all cases", overall_all)):
        for metric, values in table.items():
            print(f"pooled {metric} error / naive value, {label}: "
                  + ", ".join(f"{t} {v:.4f}" for t, v in values.items() if v is not None))
    print(f"target met: {report['target_met']}")


if __name__ == "__main__":
    main()
