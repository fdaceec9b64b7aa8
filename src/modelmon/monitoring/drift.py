"""Per-replica drift scores over a sliding window, computed when Prometheus scrapes.

The window is taken from cumulative counts: snapshots of the counters are kept every
``snapshot_seconds``, and the window's counts are the counters now minus the snapshot at
the window's start. So the request path only counts, and scoring costs the same whatever
the traffic.

Which score decides (the *verdict*) depends on the window's size, because p-values shrink
with sample size: on a window of 100,000 rows a KS or chi-square test flags differences far
too small to matter, while effect sizes (PSI, Jensen-Shannon, Wasserstein) do not grow with
the window. So:

- fewer than ``min_rows`` rows: no score at all (insufficient data, exported as NaN);
- up to ``pvalue_max_rows`` rows: the verdict is the KS test (numeric) or the chi-square
  test (categorical) at ``pvalue_threshold``, since effect sizes are noisy on few rows;
- above that: the verdict is PSI >= ``psi_threshold`` (both kinds).

Every score that applies is exported with its threshold, so dashboards and custom alerts
can use any of them. The dataset verdict is the share of features drifted by their verdict,
compared with ``dataset_drift_share``.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, Field

from modelmon.monitoring import drift_stats
from modelmon.monitoring.accounting import FeatureAccountant
from modelmon.monitoring.methods import METHODS, get_method, method_names, setting_default
from modelmon.monitoring.tasks import PredictionDistribution

NAN = float("nan")


class DriftSettings(BaseModel):
    window_seconds: float = Field(3600.0, gt=0, description="The window's length in time.")
    window_rows: int | None = Field(
        None, ge=1, description="If set, the window is the most recent stretch holding at least this many rows (within window_seconds)."
    )
    min_rows: int = Field(100, ge=1, description="Rows a window needs before any score is reported.")
    pvalue_max_rows: int = Field(1000, ge=1, description="Up to this many rows the verdict is a p-value test.")
    recent_rows: int = Field(2000, ge=10, description="Most recent rows kept for KS and Wasserstein.")
    snapshot_seconds: float | None = Field(None, gt=0, description="Counter snapshot interval [default: window / 60, at least 1 s].")
    # One field per setting of the method table (monitoring/methods.py), defaulting to it.
    psi_threshold: float = setting_default("psi_threshold")
    js_threshold: float = setting_default("js_threshold")
    wasserstein_threshold: float = setting_default("wasserstein_threshold")
    pvalue_threshold: float = setting_default("pvalue_threshold")
    dataset_drift_share: float = Field(0.5, gt=0, le=1, description="Share of drifted features for a dataset-level drift.")
    max_features: int = Field(100, ge=1, description="Features monitored per model version (the first ones in the signature).")
    score_seconds: float = Field(5.0, gt=0, description="How often the scores are recomputed in the background.")

    @property
    def snapshot_interval(self) -> float:
        return self.snapshot_seconds or max(1.0, self.window_seconds / 60)

    def thresholds(self) -> dict[str, float]:
        """The threshold in force for every method, by name."""
        return {m.name: getattr(self, m.setting) for m in METHODS.values()}


#: Methods where a low value means drift (p-values); for the rest a high value does.
PVALUE_METHODS = frozenset(method_names(direction="low"))


def is_drift(method: str, score: float, threshold: float) -> bool:
    return get_method(method).drifted(score, threshold)


@dataclass
class DriftReport:
    window_rows: int
    sufficient: bool
    scores: dict[str, dict[str, float]] = field(default_factory=dict)  # feature -> method -> score
    verdict_method: dict[str, str] = field(default_factory=dict)  # feature -> method
    drifted: dict[str, bool] = field(default_factory=dict)
    prediction: dict[str, dict[str, float]] = field(default_factory=dict)  # "class"/"confidence" -> method -> score

    @property
    def drift_share(self) -> float:
        return float(np.mean(list(self.drifted.values()))) if self.sufficient and self.drifted else NAN


class DriftMonitor:
    """Windowed drift scores for one model version: its features' bins (``accountant``) and
    its task's prediction distributions, compared with the reference's."""

    def __init__(
        self,
        accountant: FeatureAccountant,
        reference_sample: dict[str, np.ndarray],
        distributions: Sequence[PredictionDistribution],
        settings: DriftSettings,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.accountant = accountant
        self.sample = reference_sample
        self.settings = settings
        self.clock = clock
        self.lock = threading.Lock()
        self.rows = np.zeros(1)
        self.distributions = list(distributions)
        # Live arrays whose windowed values the scores need; all cumulative.
        self.tracked = [accountant.bins.counts, *(d.counts for d in self.distributions), self.rows]
        self.latest: DriftReport | None = None
        self.snapshots: deque[tuple[float, list[np.ndarray]]] = deque()
        self.snapshots.append((clock(), [np.zeros_like(a) for a in self.tracked]))

    def record(self, rows: int) -> None:
        """Call with the lock held, before a batch's counts are added."""
        now = self.clock()
        if now - self.snapshots[-1][0] >= self.settings.snapshot_interval:
            self.snapshots.append((now, [a.copy() for a in self.tracked]))
            horizon = now - self.settings.window_seconds - self.settings.snapshot_interval
            while len(self.snapshots) > 1 and self.snapshots[1][0] <= horizon:
                self.snapshots.popleft()
        self.rows += rows

    def _window(self) -> list[np.ndarray]:
        """Counts inside the window: now minus the oldest snapshot within ``window_seconds``
        (or, with ``window_rows``, the newest snapshot that still leaves that many rows)."""
        current = [a.copy() for a in self.tracked]
        start = self.clock() - self.settings.window_seconds
        candidates = [counts for taken, counts in self.snapshots if taken >= start]
        base = candidates[0] if candidates else self.snapshots[-1][1]
        if self.settings.window_rows is not None:
            for counts in reversed(candidates):
                if current[-1][0] - counts[-1][0] >= self.settings.window_rows:
                    base = counts
                    break
        return [c - b for c, b in zip(current, base, strict=True)]

    def refresh(self) -> DriftReport:
        """Score the current window and keep the result for scrapes to read."""
        self.latest = self.report()
        return self.latest

    def report(self) -> DriftReport:
        """Scores of the current window, as counted so far (``VersionMonitor.score`` counts
        the queued work first)."""
        with self.lock:
            bins, *outputs, rows = self._window()
        window_rows = int(rows[0])
        report = DriftReport(window_rows=window_rows, sufficient=window_rows >= self.settings.min_rows)
        if not report.sufficient:
            return report
        small = window_rows <= self.settings.pvalue_max_rows
        accountant = self.accountant
        for i, p in enumerate(accountant.numeric):
            offset = accountant.numeric_offsets[i]
            counts = bins[offset : offset + len(p.bin_labels)]
            scores = self._binned(np.asarray(p.shares), counts)
            reference_values = self.sample.get(p.name)
            recent = accountant.recent_values(i, window_rows)
            if reference_values is not None and reference_values.size and recent.size:
                scores["wasserstein"] = drift_stats.wasserstein_normalised(reference_values, recent, p.std)
                if small:
                    scores["ks"] = drift_stats.ks_pvalue(reference_values, recent)
            self._decide(report, p.name, scores, "ks" if small and "ks" in scores else "psi")
        for j, cat in enumerate(accountant.categorical):
            offset = accountant.categorical_offsets[j]
            counts = bins[offset : offset + len(cat.bin_labels)]
            scores = self._binned(np.asarray(cat.shares), counts)
            if small and counts.sum() > 0:
                reference_counts = np.asarray(cat.shares) * cat.count
                scores["chi2_pvalue"] = drift_stats.chi2_pvalue(reference_counts, counts)
            self._decide(report, cat.name, scores, "chi2_pvalue" if "chi2_pvalue" in scores else "psi")
        for distribution, counts in zip(self.distributions, outputs, strict=True):
            if distribution.reference_shares is not None and counts.sum() > 0:
                report.prediction[distribution.output] = self._binned(distribution.reference_shares, counts)
        return report

    @staticmethod
    def _binned(reference: np.ndarray, counts: np.ndarray) -> dict[str, float]:
        if counts.sum() == 0:  # every row of the window was missing this feature
            return {"psi": NAN, "js": NAN}
        return {"psi": drift_stats.psi(reference, counts), "js": drift_stats.js_distance(reference, counts)}

    def _decide(self, report: DriftReport, feature: str, scores: dict[str, float], method: str) -> None:
        report.scores[feature] = scores
        report.verdict_method[feature] = method
        score = scores.get(method, NAN)
        if not np.isnan(score):
            report.drifted[feature] = is_drift(method, score, self.settings.thresholds()[method])
