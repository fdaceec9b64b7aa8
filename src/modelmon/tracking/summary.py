"""Which metrics to show first, and each run's final and best values: shared by the CLI
tables and the plot so they always agree."""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

#: A headline metric per family: the first name a run logged (binary problems log
#: ``f1``, multiclass ones ``f1_macro``; Keras logs ``loss``, scikit-learn ``log_loss``).
FAMILIES: dict[str, tuple[str, ...]] = {
    "loss": ("loss", "log_loss"),
    "accuracy": ("accuracy",),
    "precision": ("precision", "precision_macro"),
    "recall": ("recall", "recall_macro"),
    "f1": ("f1", "f1_macro"),
}
SPLIT_ORDER = ("train", "validation", "test")


def headline_metrics(available: Iterable[str], families: Iterable[str] = FAMILIES) -> list[str]:
    present = set(available)
    chosen = []
    for family in families:
        name = next((n for n in FAMILIES[family] if n in present), None)
        if name is not None:
            chosen.append(name)
    return chosen


def lower_is_better(metric: str) -> bool:
    return "loss" in metric or "error" in metric


def ordered_splits(splits: Iterable[str]) -> list[str]:
    known = [s for s in SPLIT_ORDER if s in set(splits)]
    return known + sorted(set(splits) - set(known))


def final_and_best(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run, split and metric of a ``metric_frame``: ``final`` (the value at
    the last step), ``best`` and ``best_step`` (lowest for losses, else highest, ignoring
    non-finite values) and ``steps``."""
    rows = []
    for (run_id, split, metric), unsorted in frame.groupby(["run_id", "split", "metric"], sort=True):
        group = unsorted.sort_values("step")
        finite = group[group["value"].abs() < float("inf")]
        best = None
        if not finite.empty:
            values = finite["value"].to_numpy()
            # The first row holding the best value (as idxmin/idxmax would give, by position).
            best = finite.iloc[int(values.argmin() if lower_is_better(str(metric)) else values.argmax())]
        rows.append({
            "run_id": run_id, "split": split, "metric": metric,
            "final": group["value"].iloc[-1], "final_step": group["step"].iloc[-1],
            "best": None if best is None else best["value"],
            "best_step": None if best is None else best["step"], "steps": len(group),
        })
    return pd.DataFrame(
        rows,
        columns=["run_id", "split", "metric", "final", "final_step", "best", "best_step", "steps"],
    )
