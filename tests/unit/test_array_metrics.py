"""The array-backed metrics must expose exactly what prometheus_client's own would."""

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.monitoring.array_metrics import ArrayCounter, ArrayHistogram, ArrayMetrics
from modelmon.monitoring.families import Family
from modelmon.registry.profile import CONFIDENCE_BUCKETS


def parse(text: str) -> dict[tuple, float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_array_histogram_renders_like_prometheus_client():
    rng = np.random.default_rng(1)
    # Include values exactly on bucket bounds: Prometheus buckets are "less than or equal".
    values = np.concatenate([rng.uniform(0, 1, 500), np.array(CONFIDENCE_BUCKETS), [0.0]])
    reference_registry = CollectorRegistry()
    reference = Histogram("conf", "doc", ["model"], buckets=CONFIDENCE_BUCKETS, registry=reference_registry)
    for v in values:
        reference.labels('m"1').observe(float(v))

    arrays = ArrayMetrics()
    histogram = arrays.add(arrays.family(Family("conf", "histogram", ("model",), "doc")), ArrayHistogram(['m"1'], CONFIDENCE_BUCKETS))
    histogram.observe(values[:100])
    histogram.observe(values[100:])

    expected = parse(generate_latest(reference_registry).decode())
    actual = parse(arrays.render())
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == value if not key[0].endswith("_sum") else abs(actual[key] - value) < 1e-9


def test_array_counter_renders_like_prometheus_client_with_escaping():
    cells = [["a b"], ['quo"te'], ["back\\slash"], ["new\nline"]]
    reference_registry = CollectorRegistry()
    reference = Counter("preds", "doc \\ with backslash", ["model", "class"], registry=reference_registry)
    arrays = ArrayMetrics()
    counter = arrays.add(arrays.family(Family("preds", "counter", ("model", "class"), "doc \\ with backslash")), ArrayCounter(["m"], cells))
    increments = np.array([3, 0, 1, 2])
    counter.add(increments)
    for (cell,), n in zip(cells, increments, strict=True):
        reference.labels("m", cell).inc(int(n))
    assert parse(arrays.render()) == parse(generate_latest(reference_registry).decode())


def test_every_cell_exists_from_zero_and_a_version_can_be_removed():
    arrays = ArrayMetrics()
    family = arrays.family(Family("preds", "counter", ("model", "version", "class"), "doc"))
    counter = arrays.add(family, ArrayCounter(["m", "1"], [["a"], ["b"], ["c"]]))
    assert parse(arrays.render()) == {
        ("preds_total", (("class", c), ("model", "m"), ("version", "1"))): 0.0 for c in "abc"
    }
    counter.add(np.bincount([0, 2, 2], minlength=3))
    counter.add(np.bincount([2], minlength=3))
    values = {dict(k[1])["class"]: v for k, v in parse(arrays.render()).items()}
    assert values == {"a": 1.0, "b": 0.0, "c": 3.0}
    arrays.remove_series(["m", "1"])
    assert parse(arrays.render()) == {}


def test_gauge_family_type():
    arrays = ArrayMetrics()
    gauge = arrays.add(arrays.family(Family("ratio", "gauge", ("f",), "doc")), ArrayCounter([], [["x"]]))
    gauge.counts[:] = 0.25
    (family,) = text_string_to_metric_families(arrays.render())
    assert family.type == "gauge" and family.samples[0].value == 0.25


def test_values_of_every_kind_read_back_as_written():
    """``sample_lines`` writes by ``repr`` (and NaN/infinities as Prometheus spells them):
    the parser must read back exactly the values written."""
    from modelmon.monitoring.exposition import sample_lines

    values = [0.0, -0.0, 1.0, 0.1, 1e-7, 2.5e-05, 123456789.125, 12345678.0, 1e22, 5e-324, 3]
    prefixes = [f'x{{i="{i}"}} ' for i in range(len(values))]
    read = parse("# TYPE x gauge\n" + sample_lines(prefixes, values))
    assert [read[("x", (("i", str(i)),))] for i in range(len(values))] == [float(v) for v in values]
    special = parse("# TYPE x gauge\n" + sample_lines(prefixes[:4], [float("nan"), float("inf"), float("-inf"), 2.0]))
    assert np.isnan(special[("x", (("i", "0"),))])
    assert [special[("x", (("i", str(i)),))] for i in (1, 2, 3)] == [float("inf"), float("-inf"), 2.0]
    assert sample_lines([], []) == ""


def test_unchanged_series_reuse_their_text_and_changed_ones_are_rewritten():
    arrays = ArrayMetrics()
    counter = arrays.add(arrays.family(Family("rows", "counter", ("model", "cell"), "doc")), ArrayCounter(["m"], [["a"], ["b"]]))
    first = arrays.render()
    cached = counter.rendered
    assert arrays.render() == first and counter.rendered is cached  # nothing changed: not written again
    counter.add(np.array([2.0, 0.0]))
    assert parse(arrays.render())[("rows_total", (("cell", "a"), ("model", "m")))] == 2.0
