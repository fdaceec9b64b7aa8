"""The array-backed metrics must expose exactly what prometheus_client's own would."""

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.monitoring.array_metrics import ArrayCounter, ArrayHistogram, ArrayMetricsCollector
from modelmon.monitoring.metrics import CONFIDENCE_BUCKETS


def samples(registry: CollectorRegistry, name: str) -> dict[tuple, float]:
    text = generate_latest(registry).decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith(name):
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_array_histogram_matches_prometheus_client_histogram():
    rng = np.random.default_rng(1)
    # Include values exactly on bucket bounds: Prometheus buckets are "less than or equal".
    values = np.concatenate([rng.uniform(0, 1, 500), np.array(CONFIDENCE_BUCKETS), [0.0]])

    reference_registry = CollectorRegistry()
    reference = Histogram("conf", "doc", ["model"], buckets=CONFIDENCE_BUCKETS, registry=reference_registry)
    for v in values:
        reference.labels("m").observe(float(v))

    array_registry = CollectorRegistry()
    collector = ArrayMetricsCollector()
    family = collector.histogram_family("conf", "doc", ["model"])
    histogram = collector.add_histogram(family, ArrayHistogram(["m"], CONFIDENCE_BUCKETS))
    histogram.observe(values[:100])
    histogram.observe(values[100:])
    array_registry.register(collector)

    expected = {k: v for k, v in samples(reference_registry, "conf").items() if not k[0].endswith("_created")}
    actual = samples(array_registry, "conf")
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == value if not key[0].endswith("_sum") else abs(actual[key] - value) < 1e-9


def test_array_counter_exports_every_cell_from_zero_and_removes_a_version():
    registry = CollectorRegistry()
    collector = ArrayMetricsCollector()
    family = collector.counter_family("preds", "doc", ["model", "version", "class"])
    counter = collector.add_counter(family, ArrayCounter(["m", "1"], [["a"], ["b"], ["c"]]))
    registry.register(collector)
    assert samples(registry, "preds_total") == {
        ("preds_total", (("class", c), ("model", "m"), ("version", "1"))): 0.0 for c in "abc"
    }
    counter.add(np.bincount([0, 2, 2], minlength=3))
    counter.add(np.bincount([2], minlength=3))
    values = {dict(k[1])["class"]: v for k, v in samples(registry, "preds_total").items()}
    assert values == {"a": 1.0, "b": 0.0, "c": 3.0}
    collector.remove_series(["m", "1"])
    assert samples(registry, "preds_total") == {}
