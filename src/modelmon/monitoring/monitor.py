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

from modelmon.monitoring import families
from modelmon.monitoring.accounting import FeatureAccountant
from modelmon.monitoring.array_metrics import ArrayMetrics, Series
from modelmon.monitoring.batch_accounting import BatchAccounting
from modelmon.monitoring.drift import DriftMonitor, DriftReport, DriftSettings
from modelmon.monitoring.drift_exporter import series_bound
from modelmon.monitoring.families import Family
from modelmon.monitoring.metrics import ModelMetrics, Monitoring, ServerMetrics
from modelmon.monitoring.tasks import (
    ErrorEstimator,
    PredictionDistribution,
    TaskCounts,
    task_counts_for,
)
from modelmon.registry.calibration import Calibration
from modelmon.registry.profile import ReferenceProfile
from modelmon.types import FeatureBatch, ModelOutput, Signature


@dataclass(slots=True)
class MonitorSettings:
    """``enabled``: count model calls at all (``--no-monitoring`` serves with the series at
    zero); ``drift``: the drift windows and thresholds."""

    enabled: bool = True
    drift: DriftSettings = field(default_factory=DriftSettings)


def staged_series(staged: ArrayMetrics) -> list[tuple[Family, Series]]:
    """The series built in a staging set, with their families."""
    by_name = {f.name: f for f in families.ARRAY_FAMILIES}
    return [(by_name[name], series) for name, family in staged.families.items() for series in family.series]


class Uncounted(TaskCounts):
    """A version monitored for its requests only (past the series limit): its outputs are
    not counted."""

    tasks = ()

    def count(self, output: ModelOutput, batch: FeatureBatch | None = None) -> None:
        pass

    def distributions(self) -> list[PredictionDistribution]:
        return []


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
        loss_estimator: ErrorEstimator | None = None,
    ) -> None:
        settings = settings or MonitorSettings()
        self.key = (model, version)
        self.signature = signature
        classes = [str(c) for c in signature.class_labels]
        self.metrics: ModelMetrics = server.bind(model, version, flavor, classes, baseline=baseline)
        base = [model, version]
        # The task's and the features' series are built aside, then added as far as the
        # server's series limit allows (``ServerMetrics.admit``).
        staged = server.staging()
        task = task_counts_for(signature.task)(staged, base, signature, profile, calibration, loss_estimator)
        accountant = None
        if settings.enabled and profile is not None:
            accountant = FeatureAccountant(signature, profile, base, settings.drift.recent_rows, settings.drift.max_features)
        features = sum(series.size for _, series in accountant.series()) if accountant is not None else 0
        drift = series_bound(len(accountant.numeric), len(accountant.categorical), len(task.distributions())) if accountant else 0
        self.monitoring = server.admit(model, version, staged_series(staged), features, drift)
        self.task: TaskCounts = task if self.monitoring is not Monitoring.REQUESTS_ONLY else Uncounted(staged, base, signature, None, None)
        self.drift: DriftMonitor | None = None
        self.accounting: BatchAccounting | None = None
        if settings.enabled:
            if accountant is not None and self.monitoring is Monitoring.FULL:
                for family, series in accountant.series():
                    server.arrays.add(family, series)
                self.drift = DriftMonitor(accountant, reference_sample or {}, self.task.distributions(), settings.drift)
            self.accounting = BatchAccounting(self.metrics, self.task, self.drift)
        server.admitted()
        server.add_monitor(self.key, self)

    def observe(self, batch: FeatureBatch, seconds: float, output: ModelOutput, waits: list[float]) -> None:
        """One model call, queued for counting (the request path: a list append)."""
        if self.accounting is not None:
            self.accounting.add(batch, seconds, output, waits)

    def flush(self, settle: bool = True) -> None:
        """Count what is queued (before anything reads the counts); ``settle=False`` leaves
        the task's slow work (a regressor's estimate) to a thread (``settle``)."""
        if self.accounting is not None:
            self.accounting.flush(settle)

    def settle(self) -> None:
        """Finish the task's slow work left by the event loop's counting (off the loop)."""
        self.task.settle()

    def flush_if_idle(self, idle_seconds: float) -> None:
        if self.accounting is not None:
            self.accounting.flush_if_idle(idle_seconds)

    def score(self) -> DriftReport | None:
        """Count what is queued, then score drift over the window and keep the report for
        scrapes (None when the version has no reference profile or monitoring is off)."""
        self.flush()
        return self.drift.refresh() if self.drift is not None else None
