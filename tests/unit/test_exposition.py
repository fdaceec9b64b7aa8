"""The exposition: pieces reused while their values stand still, gzip bodies made from
cached runs that decode to exactly the plain body, OpenMetrics that the OpenMetrics parser
accepts with the same samples as the text format, and the per-request list-backed series
that render as prometheus_client's did."""

from __future__ import annotations

import gzip
import mmap
import os
import random
import resource
import time
import zlib

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from modelmon.monitoring.array_metrics import ArrayMetrics, ListCounter, ListHistogram
from modelmon.monitoring.drift import DriftSettings
from modelmon.monitoring.exposition import (
    CrcCombiner,
    Deflater,
    Piece,
    Slicer,
    changed,
    wants_gzip,
    wants_openmetrics,
)
from modelmon.monitoring.families import Family
from modelmon.monitoring.metrics import LATENCY_BUCKETS, ServerMetrics
from modelmon.monitoring.monitor import MonitorSettings, VersionMonitor
from modelmon.registry.profile import ProfileSettings, build_profile
from modelmon.types import FeatureBatch, FeatureSpec, ModelOutput, Signature

#: What Prometheus 2.x sends by default, and what curl and httpx send.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)

SIGNATURE = Signature(
    features=[FeatureSpec(name="x", dtype="float64", nullable=True),
              FeatureSpec(name="c", dtype="string", categories=["u", 'v"q'], nullable=True)],
    classes=["a", "b", "c"],
    input_layout="columns",
)


def samples(families) -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples}


def batch(rng: np.random.Generator, n: int) -> FeatureBatch:
    return FeatureBatch(numeric=rng.normal(size=(n, 1)),
                        categorical=rng.choice(np.array(["u", 'v"q', "w", None], dtype=object), (n, 1)))


def served(versions: int = 2, max_series: int = 0, rows: int = 300) -> tuple[ServerMetrics, list[VersionMonitor]]:
    """A server's metrics with ``versions`` monitored versions, each with counted traffic and
    a drift report (so every family has samples)."""
    rng = np.random.default_rng(0)
    profile, sample = build_profile(SIGNATURE, batch(rng, 2000), ProfileSettings(), None)
    # Without the process metrics, which change at every scrape: these tests compare bodies.
    server = ServerMetrics(max_series=max_series, process_metrics=False)
    monitors = []
    for v in range(versions):
        monitor = VersionMonitor(server, model="m", version=str(v + 1), flavor="sklearn", signature=SIGNATURE,
                                 profile=profile, reference_sample=sample,
                                 settings=MonitorSettings(drift=DriftSettings(min_rows=10)))
        monitor.observe(batch(rng, rows), 0.002, ModelOutput.from_probabilities(rng.dirichlet(np.ones(3), rows)), [0.0001])
        monitor.metrics.observe_request("infer", 200, 0.003)
        monitor.metrics.count_error("missing_feature")
        monitor.score()
        monitors.append(monitor)
    return server, monitors


# -- negotiation ----------------------------------------------------------------------


def test_negotiation_reads_the_headers_as_prometheus_client_does():
    assert wants_openmetrics(PROMETHEUS_ACCEPT)
    assert wants_openmetrics("application/openmetrics-text; version=1.0.0")
    assert not wants_openmetrics("text/plain;version=0.0.4")
    assert not wants_openmetrics(None) and not wants_openmetrics("*/*")
    assert not wants_openmetrics("application/openmetrics-text;q=0, text/plain")
    assert wants_gzip("gzip") and wants_gzip("deflate, GZIP;q=0.5") and wants_gzip("gzip, deflate, br")
    assert not wants_gzip(None) and not wants_gzip("identity") and not wants_gzip("deflate")
    assert not wants_gzip("gzip;q=0")


# -- gzip from cached runs ------------------------------------------------------------


def test_crc_combine_equals_crc_of_the_concatenation():
    rng = random.Random(1)
    combiner = CrcCombiner()
    for _ in range(50):
        a = rng.randbytes(rng.randrange(0, 3000))
        b = rng.randbytes(rng.randrange(0, 70000))
        assert combiner.combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_gzip_bodies_decode_to_the_plain_body_whatever_changed():
    """Pieces change, appear and disappear between scrapes; every gzip body is one member
    that decodes (with gzip, and with zlib's single-member reader, as httpx and browsers
    do) to the plain body, and unchanged runs are not deflated again."""
    rng = random.Random(7)
    pieces = [Piece(rng.randbytes(rng.randrange(0, 400)) + b"\n" * rng.randrange(0, 3)) for _ in range(100)]
    pieces[3] = Piece(b"")
    deflater = Deflater()
    calls = []
    deflate = deflater.deflate
    deflater.deflate = lambda data: calls.append(data) or deflate(data)  # type: ignore[method-assign]
    for scrape in range(12):
        if scrape:
            for i in rng.sample(range(len(pieces)), rng.randrange(0, 4)):
                pieces[i] = changed(pieces[i], rng.choice([pieces[i].text, rng.randbytes(50)]))
            if scrape % 4 == 0:
                pieces.insert(rng.randrange(len(pieces)), Piece(b"new version\n"))
            if scrape % 5 == 0:
                del pieces[rng.randrange(len(pieces))]
        plain = b"".join(p.text for p in pieces)
        calls.clear()
        body = deflater.gzip(pieces)
        assert gzip.decompress(body) == plain
        reader = zlib.decompressobj(16 + zlib.MAX_WBITS)
        assert reader.decompress(body) == plain and reader.eof and not reader.unused_data
        if scrape == 0:
            assert len(calls) == -(-len(pieces) // Deflater.CHUNK)
        elif scrape == 1:
            assert len(calls) <= 9  # only in the runs holding a changed piece
    assert gzip.decompress(deflater.gzip([])) == b""


def test_a_version_with_traffic_costs_the_compression_of_its_own_pieces():
    pieces = [Piece(b"x %d\n" % i * 20) for i in range(64)]
    deflater = Deflater()
    deflater.gzip(pieces)
    calls: list[bytes] = []
    deflate = deflater.deflate
    deflater.deflate = lambda data: calls.append(data) or deflate(data)  # type: ignore[method-assign]
    for scrape in range(4):  # pieces 5 and 40 change at every scrape
        for i in (5, 40):
            pieces[i] = Piece(b"changed %d %d\n" % (i, scrape))
        calls.clear()
        body = deflater.gzip(pieces)
        assert gzip.decompress(body) == b"".join(p.text for p in pieces)
        if scrape:  # the stretches around them were deflated at the first change
            assert calls == [pieces[5].text, pieces[40].text]
    calls.clear()
    assert gzip.decompress(deflater.gzip(pieces)) == b"".join(p.text for p in pieces)
    assert calls == []  # idle again: the runs of the last scrape stand as they are


def test_a_servers_gzip_and_openmetrics_bodies_hold_its_plain_samples():
    server, monitors = served()
    plain, content_type = server.scrape()
    assert content_type.startswith("text/plain; version=0.0.4")
    compressed, same_type = server.scrape(gzip=True)
    assert same_type == content_type and gzip.decompress(compressed) == plain
    monitors[0].metrics.observe_request("infer", 200, 0.01)  # a change between scrapes
    plain = server.render()
    assert gzip.decompress(server.scrape(gzip=True)[0]) == plain
    openmetrics, content_type = server.scrape(openmetrics=True)
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert gzip.decompress(server.scrape(openmetrics=True, gzip=True)[0]) == openmetrics


# -- OpenMetrics ----------------------------------------------------------------------


def test_openmetrics_parses_with_the_same_samples_as_the_text_format():
    server, _ = served()
    server.registry.register(Counter("modelmon_prediction_log_rows", "rows", ["outcome"], registry=None))
    text = server.render().decode()
    openmetrics = server.scrape(openmetrics=True)[0].decode()
    assert openmetrics.endswith("\n# EOF\n") and openmetrics.count("# EOF") == 1
    parsed = list(parse_openmetrics(openmetrics))  # strict: grouping, histograms, counters, EOF
    assert samples(parsed) == samples(parse_text(text))
    kinds = {f.name: f.type for f in parsed}
    # Families are named without _total in OpenMetrics; the samples keep it.
    assert kinds["modelmon_requests"] == kinds["modelmon_feature_bin"] == kinds["modelmon_prediction_log_rows"] == "counter"
    assert kinds["modelmon_request_duration_seconds"] == kinds["modelmon_batch_size"] == "histogram"
    assert kinds["modelmon_feature_drift"] == "gauge"
    assert "# TYPE modelmon_requests counter\n" in openmetrics and "# TYPE modelmon_requests_total counter\n" in text
    # Some of every kind of family is there: drift scores (with a label value holding a quote).
    names = {s.name for f in parsed for s in f.samples}
    assert {"modelmon_feature_drift", "modelmon_feature_bin_total", "modelmon_requests_total",
            "modelmon_predictions_total", "modelmon_prediction_confidence_bucket"} <= names
    assert any(s.labels.get("bin") == 'v"q' for f in parsed for s in f.samples)


def test_openmetrics_escapes_quotes_in_help():
    arrays = ArrayMetrics()
    arrays.family(Family("x", "gauge", (), 'say "hi" \\ there'))
    arrays.add(Family("x", "gauge", (), ""), ListCounter([], [[]]))
    openmetrics = b"".join(p.text for p in arrays.pieces(openmetrics=True)).decode()
    (family,) = parse_openmetrics(openmetrics + "# EOF\n")
    assert family.documentation == 'say "hi" \\ there'


# -- reuse ----------------------------------------------------------------------------


def test_unchanged_series_keep_their_pieces_and_changed_ones_get_new_ones():
    server, monitors = served()
    first = server.exposition().pieces
    again = server.exposition().pieces
    assert [p is q for p, q in zip(first, again, strict=True)] == [True] * len(first)  # nothing changed
    monitors[1].metrics.observe_request("infer", 200, 0.01)
    third = server.exposition().pieces
    renewed = [q for p, q in zip(again, third, strict=True) if p is not q]
    # The requests counter and the latency histogram of version 2, nothing else.
    assert len(renewed) == 2
    assert all(b'version="2"' in p.text for p in renewed)


def test_writing_everything_at_every_scrape_gives_the_same_bytes():
    server, _ = served()
    cached = server.render()
    server.arrays.reuse = False
    assert server.render() == cached
    assert gzip.decompress(server.scrape(gzip=True)[0]) == cached


def test_a_scrape_counts_what_is_queued_first():
    server, monitors = served(versions=1)
    rng = np.random.default_rng(3)
    server.render()
    monitors[0].observe(batch(rng, 5), 0.001, ModelOutput.from_probabilities(rng.dirichlet(np.ones(3), 5)), [0.0])
    counts = samples(parse_text(server.render().decode()))
    assert counts[("modelmon_batch_size_count", (("model", "m"), ("version", "1")))] == 2.0
    assert sum(v for (name, labels), v in counts.items() if name == "modelmon_predictions_total") == 305


def test_the_slicer_gives_the_gil_away(monkeypatch):
    slept = []
    monkeypatch.setattr("modelmon.monitoring.exposition.time.sleep", slept.append)
    slicer = Slicer(seconds=0.0)
    for _ in range(3):
        slicer()
    assert slept == [0, 0, 0]
    Slicer(seconds=60.0)()
    assert len(slept) == 3  # not before its time
    server, _ = served(versions=1)
    assert gzip.decompress(server.scrape(gzip=True)[0]) == server.render()  # sliced scrapes are whole


# -- process metrics ------------------------------------------------------------------


def test_the_standard_process_metrics_read_this_process():
    """Checked against the OS's own answers in this process: CPU time from ``times()``, the
    descriptor limit from ``getrlimit``, descriptors and memory that the test itself opens and
    allocates; in both formats, as their own piece."""
    server = ServerMetrics()

    def values() -> dict[str, float]:
        return {name: v for (name, _), v in samples(parse_text(server.render().decode())).items() if name.startswith("process_")}

    before = os.times()
    first = values()
    after = os.times()
    assert set(first) == {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                          "process_open_fds", "process_max_fds", "process_start_time_seconds"}
    # Both count clock ticks (1/100 s); the float sums may round apart by a hair.
    assert before.user + before.system - 1e-6 <= first["process_cpu_seconds_total"] <= after.user + after.system + 1e-6
    assert first["process_max_fds"] == resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    files = [open(os.devnull, "rb") for _ in range(20)]
    block = mmap.mmap(-1, 16 * 2**20)  # 16 MiB of new pages (malloc might reuse resident ones)
    block.write(b"\1" * len(block))  # every page written
    try:
        second = values()
    finally:
        for f in files:
            f.close()
    assert second["process_open_fds"] - first["process_open_fds"] == 20
    assert second["process_resident_memory_bytes"] - first["process_resident_memory_bytes"] >= 15 * 2**20
    assert second["process_virtual_memory_bytes"] >= second["process_resident_memory_bytes"]
    assert second["process_resident_memory_bytes"] <= resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # <= the peak
    # A start time after boot and before now (the live server's test dates it by its launch).
    booted = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    assert booted - 1 <= second["process_start_time_seconds"] == first["process_start_time_seconds"] <= time.time()
    block.close()
    openmetrics = {f.name: f for f in parse_openmetrics(server.scrape(openmetrics=True)[0].decode())}
    assert openmetrics["process_cpu_seconds"].type == "counter" and openmetrics["process_open_fds"].type == "gauge"
    body = server.exposition()
    process_pieces = [p for p in body.pieces if p.text.startswith(b"# HELP process_")]
    assert len(process_pieces) == 1  # their own piece: the other pieces stay as they were
    assert ServerMetrics(process_metrics=False).render().count(b"process_") == 0


# -- list-backed series ---------------------------------------------------------------


@pytest.mark.parametrize("sort_labels", [False, True])
def test_list_series_render_as_prometheus_client_did(sort_labels):
    reference = CollectorRegistry()
    counter = Counter("reqs", "doc", ["model", "code"], registry=reference)
    histogram = Histogram("lat", "doc", ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=reference)
    arrays = ArrayMetrics()
    count_family = arrays.family(Family("reqs", "counter", ("model", "code"), "doc"), sort_labels)
    latency_family = arrays.family(Family("lat", "histogram", ("model", "endpoint"), "doc"), sort_labels)
    requests = arrays.add(count_family, ListCounter(['m"1'], [["200"]]))
    latency = arrays.add(latency_family, ListHistogram(['m"1'], [["infer"], ["ready"]], LATENCY_BUCKETS))
    ok, late = requests.child(0), requests.add_cell(["500"])  # a status code first seen later
    rng = np.random.default_rng(2)
    values = [*rng.exponential(0.01, 300), *LATENCY_BUCKETS, 0.0, 100.0]  # on the bounds too
    for i, v in enumerate(values):
        endpoint = ("infer", "ready")[i % 2]
        latency.child(i % 2).observe(v)
        histogram.labels('m"1', endpoint).observe(v)
        (ok if i % 3 else late).inc()
        counter.labels('m"1', "200" if i % 3 else "500").inc()
    expected = samples(parse_text(generate_latest(reference).decode()))
    actual = samples(parse_text(arrays.render()))
    assert actual.keys() == expected.keys()
    for key, value in expected.items():
        assert actual[key] == pytest.approx(value, rel=1e-12), key
    if sort_labels:  # byte for byte as prometheus_client writes its lines
        lines = set(generate_latest(reference).decode().splitlines())
        assert all(line in lines or line.startswith("lat_sum") for line in arrays.render().splitlines())
