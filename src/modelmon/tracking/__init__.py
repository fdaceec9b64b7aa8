"""Training runs: parameters and per-epoch metrics in the SQL store, live in Prometheus.

``start_run`` is the API; ``modelmon.tracking.keras``, ``.sklearn`` and ``.optuna`` build
on it for those libraries, and ``modelmon runs`` reads the store back.
"""

from modelmon.tracking.baseline import link_model_version, run_baseline
from modelmon.tracking.classification import classification_metrics
from modelmon.tracking.errors import TrackingError
from modelmon.tracking.live import serve_training_metrics
from modelmon.tracking.run import TRAIN, VALIDATION, Run, start_run
from modelmon.tracking.settings import TrackingSettings

__all__ = [
    "TRAIN",
    "VALIDATION",
    "Run",
    "TrackingError",
    "TrackingSettings",
    "classification_metrics",
    "link_model_version",
    "run_baseline",
    "serve_training_metrics",
    "start_run",
]
