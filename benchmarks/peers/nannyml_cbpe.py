"""NannyML 0.13 CBPE, run in the nannyml venv by ``benchmarks/cbpe.py``.

Two commands:

``datasets OUTDIR``
    Writes NannyML's shipped synthetic datasets (``load_synthetic_binary_classification_dataset``
    and ``load_synthetic_multiclass_classification_dataset``; they ship inside the package, no
    download) to Parquet, the analysis targets joined on ``id``, with ``datasets.json`` naming
    each dataset's columns.

``estimate JOBDIR [JOBDIR ...]``
    For each job directory (``job.json`` with ``classes`` N and ``chunk_size`` ROWS,
    ``reference.parquet``, ``analysis.parquet``; one process for all, NannyML takes seconds to
    import): CBPE with its defaults (isotonic calibration, kept per class only when it lowers
    the expected calibration error over 10 stratified splits) fitted on the reference rows
    (``y_true``, ``y_pred`` and ``proba_0``..``proba_{N-1}``; classes are the integers 0..N-1,
    1 is the positive class of a binary problem) and estimated on the analysis rows (the same
    columns without ``y_true``, plus ``window``), in chunks of ROWS rows. Each chunk must be
    exactly one window, which is checked. Writes ``result.json`` in the job directory. Reports per chunk the estimated accuracy and
    F1 (NannyML's ``f1``: the positive class's for binary, the macro average for multiclass)
    and, for binary, the estimated confusion matrix, from which the macro F1 is derived.

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


def export_datasets(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    binary_reference, binary_analysis, binary_targets = nml.load_synthetic_binary_classification_dataset()
    multi_reference, multi_analysis, multi_targets = nml.load_synthetic_multiclass_classification_dataset()
    specs = {
        "binary": {
            "target": "work_home_actual",
            "proba": {"0": None, "1": "y_pred_proba"},  # class 0's is 1 - class 1's
            "classes": [0, 1],
            "features": ["distance_from_office", "salary_range", "gas_price_per_litre", "public_transportation_cost",
                         "wfh_prev_workday", "workday", "tenure"],
            "frames": (binary_reference, binary_analysis.merge(binary_targets, on="id", validate="one_to_one")),
        },
        "multiclass": {
            "target": "y_true",
            "proba": {c: f"y_pred_proba_{c}" for c in ("prepaid_card", "highstreet_card", "upmarket_card")},
            "classes": ["highstreet_card", "prepaid_card", "upmarket_card"],
            "features": ["acq_channel", "app_behavioral_score", "requested_credit_limit", "app_channel",
                         "credit_bureau_score", "stated_income", "is_customer"],
            "frames": (multi_reference, multi_analysis.merge(multi_targets, on="id", validate="one_to_one")),
        },
    }
    manifest = {}
    for name, spec in specs.items():
        reference, analysis = spec.pop("frames")
        for period, raw in (("reference", reference), ("analysis", analysis)):
            frame = raw.drop(columns=[c for c in ("timestamp", "period") if c in raw])
            frame.to_parquet(out / f"{name}_{period}.parquet", index=False)
        manifest[name] = {**spec, "rows": {"reference": len(reference), "analysis": len(analysis)}}
    manifest["nannyml_version"] = importlib.metadata.version("nannyml")
    (out / "datasets.json").write_text(json.dumps(manifest, indent=2))


def estimate(reference_path: Path, analysis_path: Path, n_classes: int, chunk_size: int, out: Path) -> None:
    reference, analysis = pd.read_parquet(reference_path), pd.read_parquet(analysis_path)
    binary = n_classes == 2
    metrics = ["accuracy", "f1", "confusion_matrix"] if binary else ["accuracy", "f1"]
    proba = "proba_1" if binary else {k: f"proba_{k}" for k in range(n_classes)}
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimator = nml.CBPE(
            y_pred_proba=proba, y_pred="y_pred", y_true="y_true", metrics=metrics, chunk_size=chunk_size,
            problem_type="classification_binary" if binary else "classification_multiclass",
        )
        estimator.fit(reference)
        fitted = time.perf_counter()
        frame = estimator.estimate(analysis.drop(columns=["window"])).filter(period="analysis").to_df()
    finished = time.perf_counter()

    windows = analysis["window"].to_numpy()
    chunks = []
    for _, row in frame.iterrows():
        start, end = int(row[("chunk", "start_index")]), int(row[("chunk", "end_index")])
        inside = set(windows[start : end + 1].tolist())
        if len(inside) != 1 or end + 1 - start != chunk_size:
            raise SystemExit(f"chunk {start}..{end} does not match one window (windows {sorted(inside)})")
        chunk = {"window": int(windows[start]), "start": start, "end": end,
                 "accuracy": float(row[("accuracy", "value")]), "f1": float(row[("f1", "value")])}
        if binary:
            tp, fp, tn, fn = (float(row[(c, "value")]) for c in ("true_positive", "false_positive", "true_negative", "false_negative"))
            chunk |= {"true_positive": tp, "false_positive": fp, "true_negative": tn, "false_negative": fn,
                      # Macro F1 from NannyML's own estimated confusion matrix: the mean of the
                      # positive and the negative class's F1.
                      "f1_macro": (2 * tp / (2 * tp + fp + fn) + 2 * tn / (2 * tn + fn + fp)) / 2}
        else:
            chunk["f1_macro"] = chunk["f1"]
        chunks.append(chunk)
    if binary:
        calibration = {"1": "isotonic" if estimator.needs_calibration else "none"}
    else:
        calibration = {str(k): "none" if type(c).__name__ == "NoopCalibrator" else "isotonic"
                       for k, c in estimator._calibrators.items()}
    out.write_text(json.dumps({
        "version": importlib.metadata.version("nannyml"),
        "settings": "CBPE defaults: isotonic calibration where it lowers ECE (10 stratified splits), chunk_size = window rows",
        "calibration": calibration,
        "seconds": {"fit": round(fitted - started, 3), "estimate": round(finished - fitted, 3)},
        "chunks": chunks,
    }, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command", required=True)
    datasets = commands.add_parser("datasets")
    datasets.add_argument("out", type=Path)
    run = commands.add_parser("estimate")
    run.add_argument("jobs", type=Path, nargs="+")
    args = parser.parse_args()
    if args.command == "datasets":
        export_datasets(args.out)
        return
    for job in args.jobs:
        spec = json.loads((job / "job.json").read_text())
        estimate(job / "reference.parquet", job / "analysis.parquet", spec["classes"], spec["chunk_size"],
                 job / "result.json")


if __name__ == "__main__":
    main()
