"""modelmon: serve trained models over the Open Inference Protocol, monitored with
Prometheus, Alertmanager and Grafana."""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelmon.lazy import lazy_attributes

__version__ = "0.1.0"

__all__ = ["ModelCard", "Registry", "__version__", "register_model", "start_run"]

if TYPE_CHECKING:
    from modelmon.registry import ModelCard, Registry, register_model
    from modelmon.tracking import start_run

#: The public API, imported on first use: scikit-learn, scipy and ONNX take seconds to
#: import, and every `modelmon` command would pay for them at start-up.
_LAZY = {
    "ModelCard": "modelmon.registry",
    "Registry": "modelmon.registry",
    "register_model": "modelmon.registry",
    "start_run": "modelmon.tracking",
}


__getattr__ = lazy_attributes("modelmon", _LAZY)
