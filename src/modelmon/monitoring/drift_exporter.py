"""Drift reports, refreshed on a timer and rendered as gauges when Prometheus scrapes.

Scoring a version costs milliseconds (Wasserstein sorts thousands of values per feature), so
it runs on a background thread every ``score_seconds`` instead of inside the scrape: a scrape
only writes out the latest reports, and stays fast however many versions are loaded.
The same thread counts what an idle server left queued for bulk counting
(``batch_accounting``), so that rows are dated within a second for drift windows.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from modelmon.monitoring import families
from modelmon.monitoring.drift import DriftMonitor, DriftReport
from modelmon.monitoring.exposition import (
    Piece,
    changed,
    family_header,
    sample_lines,
    series_prefix,
)
from modelmon.monitoring.methods import method_names

#: How often the scorer's thread counts what an idle server left queued.
IDLE_FLUSH_SECONDS = 1.0


class Scored(Protocol):
    """What the scorer needs of a version's monitor (``monitor.VersionMonitor``)."""

    @property
    def drift(self) -> DriftMonitor | None: ...

    def flush(self, settle: bool = True) -> None: ...

    def settle(self) -> None: ...

    def flush_if_idle(self, idle_seconds: float) -> None: ...

    def score(self) -> DriftReport | None: ...

logger = logging.getLogger("modelmon.monitoring")

FAMILIES = {f.name: (f.help, list(f.labels)) for f in families.DRIFT_FAMILIES}


def series_bound(numeric: int, categorical: int, outputs: int) -> int:
    """The most series a version's drift reports write: every method that applies to each of
    its ``numeric`` and ``categorical`` features (a score and its threshold), the window's
    rows, sufficiency and drift share, and PSI and JS of each of its task's ``outputs``."""
    per_feature = len(method_names(kind="numeric")) * numeric + len(method_names(kind="categorical")) * categorical
    return 2 * per_feature + 3 + 2 * outputs


class DriftExporter:
    """Scores every served version's drift on a timer, and writes the latest reports out."""

    def __init__(self, monitors: dict[tuple[str, str], Scored]) -> None:
        self.monitors = monitors  # the server's, kept up to date by it
        self._prefixes: dict[tuple[str, ...], str] = {}
        self._rendered: dict[tuple[str, str], tuple[DriftReport, dict[str, Piece]]] = {}
        self._headers: dict[tuple[str, bool], Piece] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def forget(self, model: str, version: str) -> None:
        """Drop the written-out text of a version that is no longer served."""
        self._rendered.pop((model, version), None)

    def start(self, interval: float) -> None:
        if self._thread is None and self.monitors:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, args=(interval,), name="drift-scorer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _run(self, interval: float) -> None:
        tick = min(interval, IDLE_FLUSH_SECONDS)
        next_score = time.monotonic() + interval
        while not self._stop.wait(tick):
            score = time.monotonic() >= next_score
            if score:
                next_score += interval
            for monitor in list(self.monitors.values()):
                try:
                    if score:
                        monitor.score()  # counts the queued work first
                    else:
                        monitor.flush_if_idle(IDLE_FLUSH_SECONDS)
                        monitor.settle()  # the slow counting the event loop left (a regressor's estimate)
                except Exception:  # a scoring bug must not stop scoring for the others
                    logger.exception("drift scoring failed")

    def _prefix(self, name: str, *values: str) -> str:
        key = (name, *values)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self._prefixes[key] = series_prefix(name, FAMILIES[name][1], values)
        return prefix

    def pieces(self, openmetrics: bool = False, reuse: bool = True, pause: Callable[[], None] = lambda: None) -> list[Piece]:
        """Every version's latest report, family by family. A report's lines are written once
        and reused by every scrape until the next score replaces it (every ``score_seconds``);
        a new report's lines that read the same as the last keep the last pieces (and their
        compressed bytes): an idle version's report never changes."""
        parts: dict[str, list[Piece]] = {name: [] for name in FAMILIES}
        served = list(self.monitors.items())
        for i, (key, version_monitor) in enumerate(served):
            monitor = version_monitor.drift
            if monitor is None:
                continue
            if monitor.latest is None:  # not scored yet: count what is queued first
                version_monitor.flush()
            report = monitor.latest or monitor.refresh()
            cached = self._rendered.get(key)
            if cached is None or cached[0] is not report or not reuse:
                previous = cached[1] if cached is not None and reuse else {}
                lines = self._report_lines(*key, monitor, report)
                cached = self._rendered[key] = (
                    report, {name: changed(previous.get(name), text.encode()) for name, text in lines.items()}
                )
            for name, piece in cached[1].items():
                parts[name].append(piece)
            if i % 16 == 15:
                pause()
        for key in set(self._rendered) - {key for key, _ in served}:  # unloaded meanwhile
            self._rendered.pop(key, None)
        out: list[Piece] = []
        for name, pieces in parts.items():
            out.append(self._header(name, openmetrics))
            out += pieces
        return out

    def render(self) -> str:
        """The text format of every version's latest report."""
        return b"".join(p.text for p in self.pieces()).decode()

    def _header(self, name: str, openmetrics: bool) -> Piece:
        piece = self._headers.get((name, openmetrics))
        if piece is None:
            piece = self._headers[(name, openmetrics)] = Piece(family_header(name, FAMILIES[name][0], "gauge", openmetrics).encode())
        return piece

    def _report_lines(self, model: str, version: str, monitor: DriftMonitor, report: DriftReport) -> dict[str, str]:
        """One report's lines, per family."""
        lines: dict[str, list[tuple[str, float]]] = {name: [] for name in FAMILIES}
        lines["modelmon_drift_window_rows"].append((self._prefix("modelmon_drift_window_rows", model, version), report.window_rows))
        lines["modelmon_drift_sufficient_data"].append(
            (self._prefix("modelmon_drift_sufficient_data", model, version), 1.0 if report.sufficient else 0.0)
        )
        if report.sufficient:
            thresholds = monitor.settings.thresholds()
            for feature, scores in report.scores.items():
                for method, value in scores.items():
                    lines["modelmon_feature_drift"].append((self._prefix("modelmon_feature_drift", model, version, feature, method), value))
                    lines["modelmon_feature_drift_threshold"].append(
                        (self._prefix("modelmon_feature_drift_threshold", model, version, feature, method), thresholds[method])
                    )
            lines["modelmon_dataset_drift_share"].append((self._prefix("modelmon_dataset_drift_share", model, version), report.drift_share))
            for output, scores in report.prediction.items():
                for method, value in scores.items():
                    lines["modelmon_prediction_drift"].append((self._prefix("modelmon_prediction_drift", model, version, output, method), value))
        return {name: sample_lines([p for p, _ in samples], [v for _, v in samples]) for name, samples in lines.items()}
