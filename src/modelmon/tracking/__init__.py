"""Training runs: parameters and per-epoch metrics in the SQL store, live in Prometheus.

``start_run`` is the API; ``modelmon.tracking.keras``, ``.sklearn`` and ``.optuna`` build
on it for those libraries, and ``modelmon runs`` reads the store back.

Names are resolved on first use, as in ``modelmon.registry``: the command line imports
``modelmon.tracking.cli`` for every command, and ``modelmon serve`` must not pay for the
scikit-learn and pandas that the tracking API needs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelmon.lazy import lazy_attributes

__all__ = [
    "TRAIN",
    "VALIDATION",
    "Run",
    "TrackingError",
    "TrackingSettings",
    "classification_metrics",
    "link_model_version",
    "regression_metrics",
    "run_baseline",
    "serve_training_metrics",
    "start_run",
]

if TYPE_CHECKING:
    from modelmon.tracking.baseline import link_model_version, run_baseline
    from modelmon.tracking.classification import classification_metrics
    from modelmon.tracking.errors import TrackingError
    from modelmon.tracking.live import serve_training_metrics
    from modelmon.tracking.regression import regression_metrics
    from modelmon.tracking.run import TRAIN, VALIDATION, Run, start_run
    from modelmon.tracking.settings import TrackingSettings

_LAZY = {
    "link_model_version": "modelmon.tracking.baseline",
    "run_baseline": "modelmon.tracking.baseline",
    "classification_metrics": "modelmon.tracking.classification",
    "TrackingError": "modelmon.tracking.errors",
    "serve_training_metrics": "modelmon.tracking.live",
    "regression_metrics": "modelmon.tracking.regression",
    "TRAIN": "modelmon.tracking.run",
    "VALIDATION": "modelmon.tracking.run",
    "Run": "modelmon.tracking.run",
    "start_run": "modelmon.tracking.run",
    "TrackingSettings": "modelmon.tracking.settings",
}


__getattr__ = lazy_attributes("modelmon.tracking", _LAZY)
