"""A run's final validation metrics as a model version's baseline, and the link back.

When a model version is registered from a run, production monitoring compares live
quality against what the run measured on held-out data at its end; the run in turn
records which model version it produced, so either side leads to the other.
"""

from __future__ import annotations

import math
from pathlib import Path

from modelmon.store import Store, open_store
from modelmon.tracking import records
from modelmon.tracking.errors import TrackingError
from modelmon.tracking.run import VALIDATION, Run


def _resolve(run: Run | int, store: Store | str | Path | None) -> tuple[Store, int]:
    if isinstance(run, Run):
        run.flush()  # values still waiting in the writer are part of the baseline
        return run.store, run.id
    return open_store(store), int(run)


def run_baseline(
    run: Run | int, store: Store | str | Path | None = None, split: str = VALIDATION
) -> dict[str, float]:
    """Each metric of ``split`` at the last step it was logged, from ``run`` (a ``Run`` or
    a run id in ``store``). Non-finite values are left out: they cannot be a yardstick.

    A run that is still active gives its values so far, so a model can be registered from
    inside the ``with start_run(...)`` block; a failed run is refused.
    """
    opened, run_id = _resolve(run, store)
    record = records.get_run(opened, run_id)
    if record.status == "failed":
        raise TrackingError(
            f"run {run_id} failed ({record.error}); its metrics are no baseline for a model"
        )
    frame = records.metric_frame(opened, [run_id], split=split)
    if frame.empty:
        raise TrackingError(
            f"run {run_id} logged no {split!r} metrics, so it has no baseline; log them with "
            f"run.log_classification({split!r}, y_true, y_pred, ...)"
        )
    final = frame.sort_values(["metric", "step"]).groupby("metric").tail(1)
    return {
        str(metric): float(value)
        for metric, value in zip(final["metric"], final["value"], strict=True)
        if math.isfinite(value)
    }


def link_model_version(
    run: Run | int, name: str, version: int, store: Store | str | Path | None = None
) -> None:
    """Record on ``run`` that it produced model ``name`` version ``version``."""
    opened, run_id = _resolve(run, store)
    records.set_run_model(opened, run_id, name, int(version))
