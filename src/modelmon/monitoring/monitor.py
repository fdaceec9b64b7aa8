"""One monitor per served model version: every series and statistic monitoring keeps of it.

A monitor is built when a version loads and registered with the server's metrics as one
unit (``ServerMetrics.add_monitor``); ``ServerMetrics.unbind`` removes it as one unit. It owns
the version's request-level children, its task's output series (``tasks``), its feature
accounting and drift scores (``accountant``, ``drift``) and the queue that counts model calls
in bulk (``batch_accounting``). The server's scrape and the drift scorer's thread call its
methods; nothing is wired together with callbacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modelmon.monitoring.accounting import FeatureAccountant
from modelmon.monitoring.batch_accounting import BatchAccounting
from modelmon.monitoring.drift import DriftMonitor, DriftReport, DriftSettings
from modelmon.monitoring.metrics import ModelMetrics, ServerMetrics
from modelmon.monitoring.tasks import TaskCounts, task_counts_for
from modelmon.registry.calibration import Calibration
from modelmon.registry.profile import ReferenceProfile
from modelmon.types import FeatureBatch, ModelOutput, Signature


@dataclass(slots=True)
class MonitorSettings:
    """``enabled``: count model calls at all (``--no-monitoring`` serves with the series at
    zero); ``drift``: the drift windows and thresholds."""

    enabled: bool = True
    drift: DriftSettings = field(default_factory=DriftSettings)


class VersionMonitor:
    def __init__(
        self,
        server: ServerMetrics,
        *,
        model: str,
        version: str,
        flavor: str,
        signature: Signature,
        baseline: dict[str, float] | None = None,
        profile: ReferenceProfile | None = None,
        calibration: Calibration | None = None,
        reference_sample: dict[str, np.ndarray] | None = None,
        settings: MonitorSettings | None = None,
    ) -> None:
        settings = settings or MonitorSettings()
        self.key = (model, version)
        self.signature = signature
        classes = [str(c) for c in signature.class_labels]
        self.metrics: ModelMetrics = server.bind(model, version, flavor, classes, baseline=baseline)
        base = [model, version]
        self.task: TaskCounts = task_counts_for(signature.task)(server.arrays, base, signature, profile, calibration)
        self.drift: DriftMonitor | None = None
        self.accounting: BatchAccounting | None = None
        if settings.enabled:
            if profile is not None:
                accountant = FeatureAccountant(
                    signature, profile, base, settings.drift.recent_rows, settings.drift.max_features
                )
                for family, series in accountant.series():
                    server.arrays.add(family, series)
                self.drift = DriftMonitor(accountant, reference_sample or {}, self.task.distributions(), settings.drift)
            self.accounting = BatchAccounting(self.metrics, self.task, self.drift)
        server.add_monitor(self.key, self)

    def observe(self, batch: FeatureBatch, seconds: float, output: ModelOutput, waits: list[float]) -> None:
        """One model call, queued for counting (the request path: a list append)."""
        if self.accounting is not None:
            self.accounting.add(batch, seconds, output, waits)

    def flush(self) -> None:
        """Count what is queued (before anything reads the counts)."""
        if self.accounting is not None:
            self.accounting.flush()

    def flush_if_idle(self, idle_seconds: float) -> None:
        if self.accounting is not None:
            self.accounting.flush_if_idle(idle_seconds)

    def score(self) -> DriftReport | None:
        """Count what is queued, then score drift over the window and keep the report for
        scrapes (None when the version has no reference profile or monitoring is off)."""
        self.flush()
        return self.drift.refresh() if self.drift is not None else None
