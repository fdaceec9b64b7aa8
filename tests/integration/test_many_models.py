"""Many models in one live server: /metrics negotiated (gzip, OpenMetrics), the series
limit, and scrapes that run while one model is under load.

The registry holds copies of the breast-cancer model under many names (each copy is the same
registered version directory, renamed in its card), as a multi-model deployment would.
"""

from __future__ import annotations

import asyncio
import gzip
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from modelmon.registry import Registry
from modelmon.serving.app import ModelServer
from modelmon.serving.prediction_log import PredictionLogSettings
from modelmon.serving.settings import ServingSettings
from modelmon.stack.processes import stop_process
from tests.conftest import ServerProcess, start_server

pytestmark = pytest.mark.slow

MODELS = 24
#: Room for this many fully monitored versions; the others load with reduced monitoring.
FULL_VERSIONS = 18
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


#: Each server's start: the time before it was launched and the time it answered ready.
STARTED: dict[int, tuple[float, float]] = {}


def without_process_metrics(body: bytes) -> bytes:
    """A body without the process metrics, which change from one scrape to the next."""
    return b"".join(line for line in body.splitlines(keepends=True)
                    if not line.startswith((b"process_", b"# HELP process_", b"# TYPE process_")))


def names() -> list[str]:
    return [f"bc{i:02d}" for i in range(MODELS)]


@pytest.fixture(scope="module")
def many_registry(registry_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MODELS copies of the registered ``cancer`` model, named bc00, bc01, ..."""
    root = tmp_path_factory.mktemp("many-registry")
    source = Registry(registry_dir)
    card = source.card("cancer", "latest")
    registry = Registry(root)
    for name in names():
        shutil.copytree(source.version_dir("cancer", card.version), root / name / str(card.version))
        registry.write_card(card.model_copy(update={"name": name}))
    return root


@pytest.fixture(scope="module")
def many(many_registry: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server of every copy, with room for FULL_VERSIONS fully monitored versions."""
    probe = ModelServer(Registry(many_registry), [("bc00", "latest")],
                        ServingSettings(prediction_log=PredictionLogSettings(enabled=False), max_series=0))
    own = probe.metrics.series_count()  # the unknown model's and the limit's own series
    probe.load()
    one = probe.metrics.series_count() - own
    probe.executor.shutdown()
    launched = time.time()
    server = start_server(many_registry, tmp_path_factory.mktemp("many"), "--drain-seconds", "0",
                          "--no-prediction-log", "--max-series", str(own + FULL_VERSIONS * one))
    STARTED[server.port] = (launched, time.time())
    yield server
    stop_process(server.process)


def scrape(url: str, **headers: str) -> dict[tuple[str, tuple], float]:
    text = httpx.get(f"{url}/metrics", headers={"accept-encoding": "identity", **headers}, timeout=60).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for f in parse_text(text) for s in f.samples}


def infer_body(rows: list[list[float]]) -> dict:
    return {"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])], "datatype": "FP64",
                        "data": [v for row in rows for v in row]}]}


@pytest.fixture(scope="module")
def rows(cancer_frame) -> list[list[float]]:
    return cancer_frame.drop(columns="target").to_numpy().tolist()


def requests_counted(values: dict, model: str) -> float:
    key = ("modelmon_requests_total", (("code", "200"), ("endpoint", "infer"), ("model", model), ("version", "1")))
    return values[key]


# -- compression and formats ----------------------------------------------------------


def test_gzip_only_when_asked_and_it_decodes_to_the_plain_body(many: ServerProcess):
    with httpx.Client(timeout=60) as client:
        plain = client.get(f"{many.url}/metrics", headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
        # Read the raw bytes of a gzip answer (httpx would decode them).
        with client.stream("GET", f"{many.url}/metrics", headers={"accept-encoding": "gzip"}) as response:
            raw = b"".join(response.iter_raw())
            assert response.headers["content-encoding"] == "gzip"
            assert "Accept-Encoding" in response.headers["vary"]
    assert len(raw) < len(plain.content) / 5
    # Between the two scrapes only the server's own counters moved: compare the samples.
    assert {(s.name, tuple(sorted(s.labels.items()))) for f in parse_text(gzip.decompress(raw).decode()) for s in f.samples} \
        == {(s.name, tuple(sorted(s.labels.items()))) for f in parse_text(plain.text) for s in f.samples}
    again = httpx.get(f"{many.url}/metrics", headers={"accept-encoding": "identity"}, timeout=60).content
    with httpx.Client(timeout=60) as client, \
            client.stream("GET", f"{many.url}/metrics", headers={"accept-encoding": "gzip"}) as response:
        raw = b"".join(response.iter_raw())
    # Nothing changed on an idle server: the very same body, but for its CPU time and such.
    assert without_process_metrics(gzip.decompress(raw)) == without_process_metrics(again)
    assert b"process_cpu_seconds_total " in again


def test_the_standard_process_metrics_are_the_servers(many: ServerProcess):
    """prometheus_client's process collector, read against the server process as the test
    sees it from outside: its /proc status, its launch time, its file descriptor limit."""
    values = {name: value for (name, labels), value in scrape(many.url).items() if name.startswith("process_")}
    assert set(values) == {"process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
                           "process_open_fds", "process_max_fds", "process_start_time_seconds"}
    pid = many.process.pid
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    rss = int(status["VmRSS"].split()[0]) * 1024
    assert 0.8 * rss < values["process_resident_memory_bytes"] < 1.25 * rss
    assert values["process_virtual_memory_bytes"] == pytest.approx(int(status["VmSize"].split()[0]) * 1024, rel=0.1)
    launched, ready = STARTED[many.port]
    # btime is whole seconds, so the start time can be up to a second early.
    assert launched - 1.0 <= values["process_start_time_seconds"] <= ready
    limits = Path(f"/proc/{pid}/limits").read_text().splitlines()
    assert values["process_max_fds"] == float(next(line for line in limits if line.startswith("Max open files")).split()[3])
    assert 10 < values["process_open_fds"] < values["process_max_fds"]  # sockets, the store, onnxruntime's
    assert 0.5 < values["process_cpu_seconds_total"] < time.time() - launched + 5  # loading 24 models takes CPU


def test_openmetrics_when_negotiated_as_prometheus_does(many: ServerProcess):
    response = httpx.get(f"{many.url}/metrics", headers={"accept": PROMETHEUS_ACCEPT}, timeout=60)
    assert response.headers["content-type"] == "application/openmetrics-text; version=1.0.0; charset=utf-8"
    families = {f.name: f for f in parse_openmetrics(response.text)}
    assert families["modelmon_requests"].type == "counter"
    assert families["modelmon_feature_bin"].type == "counter"
    assert {s.labels["model"] for s in families["modelmon_model_info"].samples} == set(names())
    text = scrape(many.url)
    assert {(s.name, tuple(sorted(s.labels.items()))) for f in families.values() for s in f.samples} == set(text)


# -- the series limit -----------------------------------------------------------------


def test_versions_past_the_series_limit_still_serve_and_are_announced(many: ServerProcess, rows):
    values = scrape(many.url)
    reduced = {dict(labels)["model"]: dict(labels)["dropped"] for (name, labels), v in values.items()
               if name == "modelmon_monitoring_reduced" and v == 1}
    assert len(reduced) == MODELS - FULL_VERSIONS
    assert set(reduced.values()) <= {"drift", "predictions_and_drift"}
    assert values[("modelmon_monitoring_series", ())] <= values[("modelmon_monitoring_series_limit", ())] + \
        len(reduced) * 300  # at most the request-level floor of each reduced version past the limit
    for model in names():
        response = httpx.post(f"{many.url}/v2/models/{model}/infer", json=infer_body(rows[:3]), timeout=30)
        assert response.status_code == 200, (model, response.text)
        outputs = {o["name"]: o for o in response.json()["outputs"]}
        assert outputs["probabilities"]["shape"] == [3, 2]
    values = scrape(many.url)
    for model in names():
        assert requests_counted(values, model) >= 1
        has_bins = any(n == "modelmon_feature_bin_total" and ("model", model) in labels for n, labels in values)
        assert has_bins == (model not in reduced)


# -- scrapes under load ---------------------------------------------------------------


def test_inference_keeps_being_answered_while_scrapes_run(many: ServerProcess, rows):
    """Eight clients send inference requests to one model while a scraper reads /metrics
    (gzip OpenMetrics as Prometheus asks, and plain text) over and over. Every request is
    answered correctly, every scrape parses, counters never go back, and once the load
    stops a scrape counts exactly the requests sent."""
    model = names()[0]
    before = requests_counted(scrape(many.url), model)

    async def run() -> tuple[list[int], list[dict]]:
        answered: list[int] = []
        scrapes: list[dict] = []
        stop = asyncio.Event()
        async with httpx.AsyncClient(base_url=many.url, timeout=60) as client:

            async def infer(worker: int) -> None:
                i = worker
                while not stop.is_set() or len(answered) < 200:
                    body = infer_body(rows[i % len(rows): i % len(rows) + 1 + i % 3])
                    response = await client.post(f"/v2/models/{model}/infer", json=body)
                    assert response.status_code == 200, response.text
                    (probabilities,) = [o for o in response.json()["outputs"] if o["name"] == "probabilities"]
                    assert probabilities["shape"] == [len(body["inputs"][0]["data"]) // 30, 2]
                    answered.append(len(body["inputs"][0]["data"]) // 30)
                    i += 8

            async def scraper() -> None:
                for n in range(6):
                    headers = {"accept": PROMETHEUS_ACCEPT} if n % 2 == 0 else {"accept-encoding": "identity"}
                    response = await client.get("/metrics", headers=headers)
                    parse = parse_openmetrics if n % 2 == 0 else parse_text
                    scrapes.append({(s.name, tuple(sorted(s.labels.items()))): s.value
                                    for f in parse(response.text) for s in f.samples})
                stop.set()

            await asyncio.gather(scraper(), *(infer(w) for w in range(8)))
        return answered, scrapes

    answered, scrapes = asyncio.run(run())
    counted = [requests_counted(s, model) for s in scrapes]
    assert counted == sorted(counted)  # counters never go back
    rows_counted = [sum(v for (n, labels), v in s.items() if n == "modelmon_predictions_total" and ("model", model) in labels)
                    for s in scrapes]
    assert rows_counted == sorted(rows_counted)
    final = scrape(many.url)
    assert requests_counted(final, model) == before + len(answered)
    assert sum(v for (n, labels), v in final.items() if n == "modelmon_predictions_total" and ("model", model) in labels) \
        >= sum(answered)  # the earlier test's rows too
    batch_rows = final[("modelmon_batch_size_sum", (("model", model), ("version", "1")))]
    assert batch_rows >= sum(answered)
