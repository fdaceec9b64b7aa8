"""The series limit (``modelmon serve --max-series``): versions past it load with reduced
monitoring, still count what they keep, are announced in modelmon_monitoring_reduced, and
never fail to load; unloading gives the room back."""

from __future__ import annotations

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from modelmon.monitoring.drift import DriftSettings
from modelmon.monitoring.metrics import Monitoring, ServerMetrics
from modelmon.monitoring.monitor import MonitorSettings, VersionMonitor
from modelmon.registry.profile import ProfileSettings, build_profile
from modelmon.types import FeatureBatch, FeatureSpec, ModelOutput, Signature

SIGNATURE = Signature(
    features=[FeatureSpec(name=f"x{i}", dtype="float64") for i in range(20)],
    classes=["a", "b"],
    input_layout="columns",
)
RNG = np.random.default_rng(0)
PROFILE, SAMPLE = build_profile(SIGNATURE, FeatureBatch(numeric=RNG.normal(size=(1000, 20)), categorical=np.empty((1000, 0), object)),
                                ProfileSettings(), None)


def load(server: ServerMetrics, version: str) -> VersionMonitor:
    return VersionMonitor(server, model="m", version=version, flavor="sklearn", signature=SIGNATURE, profile=PROFILE,
                          reference_sample=SAMPLE, settings=MonitorSettings(drift=DriftSettings(min_rows=1)))


def serve(monitor: VersionMonitor, rows: int = 20) -> None:
    batch = FeatureBatch(numeric=RNG.normal(size=(rows, 20)), categorical=np.empty((rows, 0), object))
    monitor.observe(batch, 0.001, ModelOutput.from_probabilities(RNG.dirichlet(np.ones(2), rows)), [0.0])
    monitor.metrics.observe_request("infer", 200, 0.002)


def scrape(server: ServerMetrics) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(server.render().decode())
        for s in family.samples
    }


def of_version(values: dict, version: str) -> set[str]:
    return {name for name, labels in values if ("version", version) in labels}


def costs() -> tuple[int, int, int]:
    """The series one version takes: always, with its predictions, and with everything."""
    unlimited = ServerMetrics()
    start = unlimited.series_count()
    assert load(unlimited, "1").monitoring is Monitoring.FULL
    full = unlimited.series_count() - start

    def size(names: set[str]) -> int:
        return sum(s.size for family in unlimited.arrays.families.values() if family.name in names
                   for s in family.series if s.base_labels == ["m", "1"])

    predictions = size(PREDICTION_FAMILIES)
    floor = full - predictions - size(FEATURE_FAMILIES) - unlimited._drift_series[("m", "1")]
    return floor, floor + predictions, full


PREDICTION_FAMILIES = {"modelmon_predictions", "modelmon_prediction_confidence", "modelmon_expected_confusion",
                       "modelmon_reference_class_ratio"}
FEATURE_FAMILIES = {"modelmon_feature_bin", "modelmon_reference_bin_ratio", "modelmon_feature_missing",
                    "modelmon_feature_unseen"}


def test_versions_past_the_limit_lose_drift_then_predictions_and_keep_serving():
    floor, with_predictions, full = costs()
    assert full > with_predictions + floor  # a second full version cannot fit in the room below
    base = ServerMetrics().series_count()
    # Room for one full version, then one without drift, then only the floor.
    server = ServerMetrics(max_series=base + full + with_predictions + floor + 5)
    first, second, third, fourth = (load(server, str(v)) for v in range(1, 5))
    assert [m.monitoring for m in (first, second, third, fourth)] == [
        Monitoring.FULL, Monitoring.NO_DRIFT, Monitoring.REQUESTS_ONLY, Monitoring.REQUESTS_ONLY]
    assert first.drift is not None and second.drift is None and third.drift is None
    for monitor in (first, second, third, fourth):
        serve(monitor)
    values = scrape(server)
    # Every version's requests are counted.
    for version in "1234":
        key = ("modelmon_requests_total", (("code", "200"), ("endpoint", "infer"), ("model", "m"), ("version", version)))
        assert values[key] == 1.0
        assert values[("modelmon_batch_size_count", (("model", "m"), ("version", version)))] == 1.0
    # What each level keeps.
    assert {"modelmon_feature_bin_total", "modelmon_feature_drift", "modelmon_predictions_total"} <= of_version(values, "1")
    assert "modelmon_predictions_total" in of_version(values, "2")
    assert sum(v for (n, labels), v in values.items() if n == "modelmon_predictions_total" and ("version", "2") in labels) == 20
    assert not of_version(values, "2") & {"modelmon_feature_bin_total", "modelmon_drift_window_rows", "modelmon_feature_drift"}
    assert not of_version(values, "3") & {"modelmon_predictions_total", "modelmon_prediction_confidence_bucket",
                                          "modelmon_feature_bin_total", "modelmon_drift_window_rows"}
    # Announced: one series per reduced version, saying what it goes without.
    reduced = {dict(labels)["version"]: dict(labels)["dropped"] for (n, labels), v in values.items()
               if n == "modelmon_monitoring_reduced" and v == 1.0}
    assert reduced == {"2": "drift", "3": "predictions_and_drift", "4": "predictions_and_drift"}
    assert values[("modelmon_monitoring_series_limit", ())] == server.max_series
    assert values[("modelmon_monitoring_series", ())] == server.series_count()
    # The exposition stays within the limit plus the request-level floor of the versions past it.
    exported = sum(1 for (n, _) in values if n.startswith("modelmon_") and not n.startswith("modelmon_monitoring"))
    assert exported <= server.max_series + floor


def test_unloading_gives_the_room_back():
    full = costs()[2]
    server = ServerMetrics(max_series=ServerMetrics().series_count() + full + 5)
    assert load(server, "1").monitoring is Monitoring.FULL
    assert load(server, "2").monitoring is not Monitoring.FULL
    server.unbind("m", "1")
    server.unbind("m", "2")
    assert ("modelmon_monitoring_reduced", (("dropped", "drift"), ("model", "m"), ("version", "2"))) not in scrape(server)
    assert load(server, "3").monitoring is Monitoring.FULL


def test_no_limit_by_default_in_python_and_zero_means_none():
    server = ServerMetrics(max_series=0)
    assert all(load(server, str(v)).monitoring is Monitoring.FULL for v in range(1, 4))
    assert scrape(server)[("modelmon_monitoring_series_limit", ())] == 0.0


def test_the_command_line_default_is_the_settings_default():
    import inspect

    from modelmon import cli
    from modelmon.monitoring.metrics import DEFAULT_MAX_SERIES
    from modelmon.serving.settings import ServingSettings

    assert inspect.signature(cli.serve).parameters["max_series"].default == DEFAULT_MAX_SERIES
    assert ServingSettings().max_series == DEFAULT_MAX_SERIES
