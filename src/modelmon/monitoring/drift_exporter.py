"""Exports each model version's drift report as gauges when Prometheus scrapes."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelmon.monitoring.drift import DriftMonitor


class DriftCollector(Collector):
    def __init__(self) -> None:
        self.monitors: dict[tuple[str, str], DriftMonitor] = {}

    def add(self, model: str, version: str, monitor: DriftMonitor) -> None:
        self.monitors[(model, version)] = monitor

    def remove(self, model: str, version: str) -> None:
        self.monitors.pop((model, version), None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        drift = GaugeMetricFamily(
            "modelmon_feature_drift", "Drift score of the latest window (p-values for ks and chi2_pvalue).",
            labels=["model", "version", "feature", "method"],
        )  # fmt: skip
        threshold = GaugeMetricFamily(
            "modelmon_feature_drift_threshold", "The threshold in force for each drift score.",
            labels=["model", "version", "feature", "method"],
        )  # fmt: skip
        rows = GaugeMetricFamily(
            "modelmon_drift_window_rows", "Rows in the window the drift scores were computed on.",
            labels=["model", "version"],
        )  # fmt: skip
        sufficient = GaugeMetricFamily(
            "modelmon_drift_sufficient_data", "1 when the window holds enough rows for drift scores, else 0 (insufficient data).",
            labels=["model", "version"],
        )  # fmt: skip
        share = GaugeMetricFamily(
            "modelmon_dataset_drift_share", "Share of monitored features drifted by their verdict score.",
            labels=["model", "version"],
        )  # fmt: skip
        prediction = GaugeMetricFamily(
            "modelmon_prediction_drift", "Drift of the model's outputs against its validation outputs.",
            labels=["model", "version", "output", "method"],
        )  # fmt: skip
        for (model, version), monitor in list(self.monitors.items()):
            report = monitor.report()
            rows.add_metric([model, version], report.window_rows)
            sufficient.add_metric([model, version], 1.0 if report.sufficient else 0.0)
            if not report.sufficient:
                continue
            thresholds = monitor.settings.thresholds()
            for feature, scores in report.scores.items():
                for method, value in scores.items():
                    drift.add_metric([model, version, feature, method], value)
                    threshold.add_metric([model, version, feature, method], thresholds[method])
            share.add_metric([model, version], report.drift_share)
            for output, scores in report.prediction.items():
                for method, value in scores.items():
                    prediction.add_metric([model, version, output, method], value)
        yield from (drift, threshold, rows, sufficient, share, prediction)
