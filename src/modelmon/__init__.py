"""modelmon: serve trained models over the Open Inference Protocol, monitored with
Prometheus, Alertmanager and Grafana."""

from modelmon.registry import ModelCard, Registry, register_model
from modelmon.tracking import start_run

__version__ = "0.1.0"

__all__ = ["ModelCard", "Registry", "__version__", "register_model", "start_run"]
