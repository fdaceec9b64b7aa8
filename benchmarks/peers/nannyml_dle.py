"""NannyML 0.13 DLE (Direct Loss Estimation), run in the nannyml venv by ``benchmarks/dle.py``.

Two commands:

``dataset OUTDIR``
    Writes NannyML's shipped synthetic regression dataset (``load_synthetic_car_price_dataset``,
    it ships inside the package, no download) to Parquet: ``car_reference.parquet`` and
    ``car_analysis.parquet`` (the analysis targets joined on ``id``), with ``car.json`` naming
    its columns.

``estimate JOBDIR [JOBDIR ...]``
    For each job directory (``job.json`` with ``features``, ``categorical`` and ``chunk_size``;
    ``reference.parquet`` with the features, ``y_pred`` and ``y_true``; ``analysis.parquet``
    with the features, ``y_pred`` and ``window``): DLE with its defaults (LightGBM, default
    hyperparameters, no tuning) for ``mae`` and ``rmse``, fitted on the reference rows and
    estimated on the analysis rows in chunks of ``chunk_size`` rows, each chunk exactly one
    window (checked). Writes ``result.json`` in the job directory.

Run with NML_DISABLE_USAGE_LOGGING=1 (it otherwise reports usage over the network).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time
import warnings
from pathlib import Path

import nannyml as nml
import pandas as pd

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    # NannyML 0.13.1 reshapes a categorical column's values, which pandas 3's Arrow-backed
    # strings refuse (NotImplementedError): strings as Python objects, as pandas 2 had them.
    pd.set_option("future.infer_string", False)

CAR_FEATURES = ["car_age", "km_driven", "price_new", "accident_count", "door_count", "fuel", "transmission"]


def export_dataset(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    reference, analysis, targets = nml.load_synthetic_car_price_dataset()
    analysis = analysis.merge(targets, on="id", validate="one_to_one")
    for period, frame in (("reference", reference), ("analysis", analysis)):
        frame.drop(columns=[c for c in ("timestamp", "period") if c in frame]).to_parquet(
            out / f"car_{period}.parquet", index=False)
    (out / "car.json").write_text(json.dumps({
        "features": CAR_FEATURES, "categorical": ["fuel", "transmission"], "y_pred": "y_pred", "y_true": "y_true",
        "rows": {"reference": len(reference), "analysis": len(analysis)},
        "nannyml_version": importlib.metadata.version("nannyml"),
    }, indent=2))


def estimate(job: Path) -> None:
    spec = json.loads((job / "job.json").read_text())
    reference, analysis = pd.read_parquet(job / "reference.parquet"), pd.read_parquet(job / "analysis.parquet")
    for frame in (reference, analysis):
        for column in spec["categorical"]:
            frame[column] = frame[column].astype(object).astype("category")
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = nml.DLE(feature_column_names=spec["features"], y_pred="y_pred", y_true="y_true",
                            metrics=["mae", "rmse"], chunk_size=spec["chunk_size"])
        estimator.fit(reference)
        fitted = time.perf_counter()
        frame = estimator.estimate(analysis.drop(columns=["window"])).filter(period="analysis").to_df()
    finished = time.perf_counter()
    windows = analysis["window"].to_numpy()
    chunks = []
    for _, row in frame.iterrows():
        start, end = int(row[("chunk", "start_index")]), int(row[("chunk", "end_index")])
        inside = set(windows[start : end + 1].tolist())
        if len(inside) != 1 or end + 1 - start != spec["chunk_size"]:
            raise SystemExit(f"chunk {start}..{end} does not match one window (windows {sorted(inside)})")
        chunks.append({"window": int(windows[start]), "start": start, "end": end,
                       "mae": float(row[("mae", "value")]), "rmse": float(row[("rmse", "value")])})
    (job / "result.json").write_text(json.dumps({
        "version": importlib.metadata.version("nannyml"),
        "settings": "DLE defaults: LightGBM with default hyperparameters, no tuning; chunk_size = window rows",
        "seconds": {"fit": round(fitted - started, 3), "estimate": round(finished - fitted, 3)},
        "chunks": chunks,
    }, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    dataset = commands.add_parser("dataset")
    dataset.add_argument("out", type=Path)
    run = commands.add_parser("estimate")
    run.add_argument("jobs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "dataset":
        export_dataset(args.out)
        return
    for job in args.jobs:
        estimate(job)


if __name__ == "__main__":
    main()
