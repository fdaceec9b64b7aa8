"""The /metrics exposition, read back through a real Prometheus.

One server and one Prometheus for the module. Prometheus scrapes once before any traffic
(the zero-valued series must already be there), then a fixed, seeded set of requests goes
to both models, good and bad, sequential and concurrent. Every count Prometheus reports
must equal what the client counted from what it sent and what it was answered.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.errors import ERROR_REASONS
from modelmon.monitoring.metrics import UNKNOWN_MODEL
from modelmon.registry import Registry
from modelmon.stack.processes import stop_process
from modelmon.stack.prometheus import Prometheus
from tests.conftest import ServerProcess, start_server
from tests.integration.prom_helpers import (
    is_finite,
    promtool_check_metrics,
    scalar_at,
    vector,
    wait_for_first_scrape,
    wait_for_vector,
    wait_until,
)

pytestmark = pytest.mark.slow

MODELS = ("cancer", "shop")
#: Small enough to test 413 cheaply, large enough for every good request below.
MAX_BODY_BYTES = 65536
SEED = 20240601


# -- the stack ------------------------------------------------------------------------


@dataclass
class Stack:
    server: ServerProcess
    prom: Prometheus
    registry: Registry

    def card(self, model: str) -> Any:
        return self.registry.card(model, "latest")

    def classes(self, model: str) -> list[str]:
        return [str(c) for c in self.card(model).signature.classes]


@pytest.fixture(scope="module")
def stack(registry_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    server = start_server(
        registry_dir, tmp_path_factory.mktemp("prom-server"),
        "--drain-seconds", "0", "--max-body-bytes", str(MAX_BODY_BYTES),
    )
    try:
        prom = Prometheus.start(
            tmp_path_factory.mktemp("prometheus"),
            targets=[f"127.0.0.1:{server.port}"],
            scrape_interval="1s",
        )
    except Exception:
        stop_process(server.process)
        raise
    try:
        yield Stack(server=server, prom=prom, registry=Registry(registry_dir))
    finally:
        prom.stop()
        stop_process(server.process)


@dataclass
class BeforeTraffic:
    """What Prometheus held after its first scrape, before any request was sent."""

    predictions: dict[tuple[str, ...], float]
    errors: dict[tuple[str, ...], float]
    model_info: dict[tuple[str, ...], float]
    requests: dict[tuple[str, ...], float]
    batch_size_count: dict[tuple[str, ...], float]
    confidence_count: dict[tuple[str, ...], float]


@pytest.fixture(scope="module")
def before_traffic(stack: Stack) -> BeforeTraffic:
    wait_for_first_scrape(stack.prom)
    p = stack.prom
    return BeforeTraffic(
        predictions=vector(p, "modelmon_predictions_total", ("model", "class")),
        errors=vector(p, "modelmon_request_errors_total", ("model", "reason")),
        model_info=vector(p, "modelmon_model_info", ("model", "version", "flavor")),
        requests=vector(p, "modelmon_requests_total", ("model", "endpoint", "code")),
        batch_size_count=vector(p, "modelmon_batch_size_count", ("model",)),
        confidence_count=vector(p, "modelmon_prediction_confidence_count", ("model",)),
    )


# -- the traffic ----------------------------------------------------------------------


@dataclass
class Call:
    """One request, with what the metrics must say about it."""

    what: str
    model: str  # the `model` label it must be counted under
    endpoint: str
    method: str
    path: str
    expected_code: int
    reason: str | None = None  # the `reason` label of a rejected request
    rows: int = 0
    json_body: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False  # send ``content`` in chunks, without a Content-Length
    # filled in when answered
    code: int | None = None
    labels: list[str] = field(default_factory=list)
    answer: str = ""


def cancer_rows(frame: pd.DataFrame, rng: np.random.Generator, n: int) -> list[list[float]]:
    features = frame.drop(columns="target")
    picked = features.iloc[rng.choice(len(features), size=n, replace=False)]
    return [[float(v) for v in row] for row in picked.to_numpy()]


def shop_rows(frame: pd.DataFrame, rng: np.random.Generator, n: int) -> list[dict[str, Any]]:
    picked = frame.drop(columns="segment").iloc[rng.choice(len(frame), size=n, replace=False)]
    return [
        {"amount": float(r.amount), "items": int(r["items"]), "channel": str(r.channel), "region": str(r.region)}
        for _, r in picked.iterrows()
    ]


def cancer_v2_json(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [len(rows), 30], "datatype": "FP64", "data": rows}]}


def cancer_v2_binary(rows: list[list[float]]) -> tuple[bytes, dict[str, str]]:
    raw = np.asarray(rows, dtype="<f8").tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": [len(rows), 30], "datatype": "FP64",
                                      "parameters": {"binary_data_size": len(raw)}}]}).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header)),
                          "Content-Type": "application/octet-stream"}


def shop_v2(rows: list[dict[str, Any]]) -> dict[str, Any]:
    types = {"amount": "FP64", "items": "INT64", "channel": "BYTES", "region": "BYTES"}
    return {"inputs": [{"name": k, "shape": [len(rows)], "datatype": t, "data": [r[k] for r in rows]}
                       for k, t in types.items()]}


def records(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"instances": rows}


def infer_path(model: str) -> str:
    return f"/v2/models/{model}/infer"


def predict_path(model: str) -> str:
    return f"/v1/models/{model}:predict"


def good_calls(cancer_frame: pd.DataFrame, shop_frame: pd.DataFrame, rng: np.random.Generator) -> list[Call]:
    names = [c for c in cancer_frame.columns if c != "target"]
    calls: list[Call] = []
    for n in (1, 3, 8, 17, 40, 2, 5, 1, 11, 6, 1, 25):
        rows = cancer_rows(cancer_frame, rng, n)
        calls.append(Call(f"cancer V2 matrix, {n} rows", "cancer", "infer", "POST", infer_path("cancer"),
                          200, rows=n, json_body=cancer_v2_json(rows)))
    for n in (4, 64, 1):
        content, headers = cancer_v2_binary(cancer_rows(cancer_frame, rng, n))
        calls.append(Call(f"cancer V2 binary, {n} rows", "cancer", "infer", "POST", infer_path("cancer"),
                          200, rows=n, content=content, headers=headers))
    for n in (1, 2, 9, 4, 1, 15):
        rows = [dict(zip(names, r, strict=True)) for r in cancer_rows(cancer_frame, rng, n)]
        calls.append(Call(f"cancer /v1, {n} rows", "cancer", "predict", "POST", predict_path("cancer"),
                          200, rows=n, json_body=records(rows)))
    for n in (1, 2, 5, 12, 30, 3, 1, 7, 50, 2):
        calls.append(Call(f"shop V2 columns, {n} rows", "shop", "infer", "POST", infer_path("shop"),
                          200, rows=n, json_body=shop_v2(shop_rows(shop_frame, rng, n))))
    for n in (1, 6, 20, 2, 1, 9):
        calls.append(Call(f"shop /v1, {n} rows", "shop", "predict", "POST", predict_path("shop"),
                          200, rows=n, json_body=records(shop_rows(shop_frame, rng, n))))
    for _ in range(3):
        calls.append(Call("cancer metadata", "cancer", "metadata", "GET", "/v2/models/cancer", 200))
    for _ in range(2):
        calls.append(Call("shop ready", "shop", "ready", "GET", "/v2/models/shop/ready", 200))
    return calls


def bad_calls(cancer_frame: pd.DataFrame, shop_frame: pd.DataFrame, rng: np.random.Generator) -> list[Call]:
    names = [c for c in cancer_frame.columns if c != "target"]
    c_rows = cancer_rows(cancer_frame, rng, 3)
    s_rows = shop_rows(shop_frame, rng, 3)
    c_records = [dict(zip(names, r, strict=True)) for r in c_rows]

    def cancer_infer(what: str, reason: str, body: Any = None, content: bytes | None = None, code: int = 400) -> Call:
        return Call(what, "cancer", "infer", "POST", infer_path("cancer"), code, reason, json_body=body, content=content)

    def cancer_predict(what: str, reason: str, body: Any = None, content: bytes | None = None, code: int = 400) -> Call:
        return Call(what, "cancer", "predict", "POST", predict_path("cancer"), code, reason, json_body=body, content=content)

    def shop_infer(what: str, reason: str, body: Any = None, content: bytes | None = None, code: int = 400) -> Call:
        return Call(what, "shop", "infer", "POST", infer_path("shop"), code, reason, json_body=body, content=content)

    def shop_predict(what: str, reason: str, body: Any = None, content: bytes | None = None, code: int = 400) -> Call:
        return Call(what, "shop", "predict", "POST", predict_path("shop"), code, reason, json_body=body, content=content)

    no_region = shop_v2(s_rows)
    no_region["inputs"] = [i for i in no_region["inputs"] if i["name"] != "region"]
    extra_input = shop_v2(s_rows)
    extra_input["inputs"].append({"name": "colour", "shape": [3], "datatype": "BYTES", "data": ["a", "b", "c"]})
    channel_as_number = shop_v2(s_rows)
    channel_as_number["inputs"][2] = {"name": "channel", "shape": [3], "datatype": "FP64", "data": [1.0, 2.0, 3.0]}
    unknown_datatype = cancer_v2_json(c_rows)
    unknown_datatype["inputs"][0]["datatype"] = "FLOAT"
    amount_as_text = shop_v2(s_rows)
    amount_as_text["inputs"][0]["data"] = [1.0, "lots", 3.0]
    ragged_rows = shop_v2(s_rows)
    ragged_rows["inputs"][1] = {"name": "items", "shape": [2], "datatype": "INT64", "data": [1, 2]}
    missing_radius = [dict(r) for r in c_records]
    del missing_radius[1]["mean_radius"]
    text_value = [dict(r) for r in c_records]
    text_value[2]["mean_area"] = "big"
    extra_feature = [dict(r) for r in s_rows]
    extra_feature[0]["colour"] = "red"
    # A NaN sent as the JSON literal NaN (what Python's json module writes), for features
    # that cannot be missing: `mean_texture` (cancer) and `amount` (shop).
    nan_matrix = [list(r) for r in c_rows]
    nan_matrix[1][1] = float("nan")
    nan_records = [dict(r) for r in s_rows]
    nan_records[0]["amount"] = float("nan")
    nan_bodies = [json.dumps(cancer_v2_json(nan_matrix)).encode(), json.dumps(records(nan_records)).encode()]
    assert all(b"NaN" in body for body in nan_bodies)
    too_big = json.dumps(cancer_v2_json(cancer_rows(cancer_frame, rng, 400))).encode()
    assert len(too_big) > MAX_BODY_BYTES  # valid JSON, sent with its Content-Length
    # Chunked, so without a Content-Length: the limit must hold while the body is read.
    chunked = Call("shop /v1 chunked body over the limit", "shop", "predict", "POST", predict_path("shop"),
                   413, "body_too_large", content=b" " * (MAX_BODY_BYTES + 8192), stream=True)

    calls = [
        shop_infer("shop V2 without the `region` input", "missing_feature", no_region),
        cancer_predict("cancer /v1 row without `mean_radius`", "missing_feature", records(missing_radius)),
        shop_infer("shop V2 with an extra `colour` input", "unknown_feature", extra_input),
        shop_predict("shop /v1 row with an extra `colour` key", "unknown_feature", records(extra_feature)),
        shop_infer("shop V2 categorical `channel` sent as FP64", "wrong_datatype", channel_as_number),
        cancer_infer("cancer V2 with datatype FLOAT", "wrong_datatype", unknown_datatype),
        cancer_predict("cancer /v1 with the string 'big' for `mean_area`", "invalid_value", records(text_value)),
        shop_infer("shop V2 with the string 'lots' in `amount`", "invalid_value", amount_as_text),
        cancer_infer("cancer V2 with a JSON NaN", "missing_value", content=nan_bodies[0]),
        shop_predict("shop /v1 with a JSON NaN `amount`", "missing_value", content=nan_bodies[1]),
        cancer_infer("cancer V2 matrix of shape [3, 29]", "wrong_shape",
                     {"inputs": [{"name": "input", "shape": [3, 29], "datatype": "FP64", "data": [r[:29] for r in c_rows]}]}),
        shop_infer("shop V2 with 3 rows of `amount` and 2 of `items`", "wrong_shape", ragged_rows),
        cancer_predict("cancer /v1 with an empty instance list", "wrong_shape", {"instances": []}),
        cancer_infer("cancer V2 truncated JSON", "malformed_request", content=b'{"inputs": [{"name": "input", "sha'),
        shop_predict("shop /v1 truncated JSON", "malformed_request", content=b'{"instances": [{"amount": 1'),
        shop_predict("shop /v1 without `instances`", "malformed_request", {"rows": []}),
        cancer_infer(f"cancer V2 body of {len(too_big)} bytes", "body_too_large", content=too_big, code=413),
        chunked,
        Call("V2 infer on model `nope`", UNKNOWN_MODEL, "infer", "POST", infer_path("nope"), 404,
             "model_not_found", json_body=cancer_v2_json(c_rows)),
        Call("V2 infer on shop version 99", UNKNOWN_MODEL, "infer", "POST", "/v2/models/shop/versions/99/infer",
             404, "model_not_found", json_body=shop_v2(s_rows)),
        Call("/v1 predict on model `nope`", UNKNOWN_MODEL, "predict", "POST", predict_path("nope"), 404,
             "model_not_found", json_body=records(s_rows)),
    ]
    return calls


async def send(client: httpx.AsyncClient, call: Call) -> None:
    kwargs: dict[str, Any] = {"headers": call.headers}
    if call.stream:
        body = call.content or b""

        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 4096):
                yield body[i : i + 4096]

        kwargs["content"] = chunks()
    elif call.content is not None:
        kwargs["content"] = call.content
    elif call.json_body is not None:
        kwargs["json"] = call.json_body
    try:
        response = await client.request(call.method, call.path, **kwargs)
    except httpx.TransportError as exc:
        call.answer = f"{type(exc).__name__}: {exc}"
        return
    call.code = response.status_code
    call.answer = response.text[:300]
    if response.status_code != 200 or call.endpoint not in ("infer", "predict"):
        return
    body = response.json()
    if call.endpoint == "infer":
        (label,) = [o for o in body["outputs"] if o["name"] == "label"]
        call.labels = [str(v) for v in label["data"]]
    else:
        call.labels = [str(p["label"]) for p in body["predictions"]]


@dataclass
class Traffic:
    calls: list[Call]
    finished_at: float  # unix time the last answer came back

    def answered(self) -> list[Call]:
        return [c for c in self.calls if c.code is not None]

    def predicted_classes(self, model: str) -> Counter[str]:
        return Counter(label for c in self.answered() if c.model == model for label in c.labels)

    def predicted_rows(self, model: str) -> int:
        return sum(self.predicted_classes(model).values())


@pytest.fixture(scope="module")
def traffic(
    stack: Stack, before_traffic: BeforeTraffic, cancer_frame: pd.DataFrame, shop_frame: pd.DataFrame
) -> Traffic:
    """Send the known traffic once, after the pre-traffic scrape, and record every answer."""
    rng = np.random.default_rng(SEED)
    good = good_calls(cancer_frame, shop_frame, rng)
    bad = bad_calls(cancer_frame, shop_frame, rng)
    for call in good:
        size = len(call.content) if call.content is not None else len(json.dumps(call.json_body).encode())
        assert size < MAX_BODY_BYTES, f"{call.what}: the test sends a {size}-byte body, over the limit"
    calls = good + bad
    order = rng.permutation(len(calls))
    sequential = [calls[i] for i in order[:12]]
    concurrent = [calls[i] for i in order[12:]]

    async def run() -> None:
        async with httpx.AsyncClient(base_url=stack.server.url, timeout=30) as client:
            for call in sequential:
                await send(client, call)
            await asyncio.gather(*(send(client, call) for call in concurrent))

    asyncio.run(run())
    return Traffic(calls=calls, finished_at=time.time())


# -- before traffic -------------------------------------------------------------------


def test_prediction_series_exist_at_zero_before_traffic(stack: Stack, before_traffic: BeforeTraffic) -> None:
    expected = {(m, c): 0.0 for m in MODELS for c in stack.classes(m)}
    assert before_traffic.predictions == expected
    assert ("shop", "gold") in expected and ("cancer", "0") in expected  # labels are the class strings
    assert before_traffic.batch_size_count.get(("cancer",)) == 0.0
    assert before_traffic.batch_size_count.get(("shop",)) == 0.0
    assert before_traffic.confidence_count.get(("cancer",)) == 0.0
    assert before_traffic.confidence_count.get(("shop",)) == 0.0


def test_error_series_exist_at_zero_before_traffic(before_traffic: BeforeTraffic) -> None:
    for model in MODELS:
        seen = {reason: v for (m, reason), v in before_traffic.errors.items() if m == model}
        assert seen == {reason: 0.0 for reason in ERROR_REASONS}, model
    # A request for a model that is not served can only fail one way.
    seen = {reason: v for (m, reason), v in before_traffic.errors.items() if m == UNKNOWN_MODEL}
    assert seen == {"model_not_found": 0.0}


def test_model_info_before_traffic(stack: Stack, before_traffic: BeforeTraffic) -> None:
    expected = {(m, str(stack.card(m).version), stack.card(m).flavor): 1.0 for m in MODELS}
    assert before_traffic.model_info == expected


def test_request_series_for_error_codes_exist_before_traffic(before_traffic: BeforeTraffic) -> None:
    """docs/metrics.md: counts that land before Prometheus first sees a series are invisible to
    ``increase()``, so the first 4xx/5xx of an endpoint must not create its series:
    ``rate(modelmon_requests_total{code=~"5.."}[5m])`` would miss it."""
    wanted = {(m, e, code) for m in MODELS for e in ("infer", "predict") for code in ("200", "400", "413", "500")}
    wanted |= {(UNKNOWN_MODEL, e, "404") for e in ("infer", "predict")}
    missing = sorted(wanted - set(before_traffic.requests))
    assert not missing, f"modelmon_requests_total series created only at their first increment: {missing}"
    assert all(before_traffic.requests[key] == 0.0 for key in wanted)


# -- after traffic --------------------------------------------------------------------


def test_every_request_was_answered_as_intended(traffic: Traffic) -> None:
    wrong = [f"{c.what}: expected {c.expected_code}, got {c.code} ({c.answer[:150]})"
             for c in traffic.calls if c.code != c.expected_code]
    assert not wrong, "\n".join(wrong)
    for call in traffic.calls:
        if call.expected_code == 200 and call.endpoint in ("infer", "predict"):
            assert len(call.labels) == call.rows, call.what
    # The seeded traffic reaches every class, so a class miscounted as another shows up.
    assert set(traffic.predicted_classes("cancer")) == {"0", "1"}
    assert set(traffic.predicted_classes("shop")) == {"bronze", "gold", "silver"}


def test_predictions_by_class(stack: Stack, traffic: Traffic) -> None:
    for model in MODELS:
        expected = {(c,): 0.0 for c in stack.classes(model)}
        expected.update({(c,): float(n) for c, n in traffic.predicted_classes(model).items()})
        promql = f'sum by (class) (modelmon_predictions_total{{model="{model}"}})'
        assert wait_for_vector(stack.prom, promql, ("class",), expected) == expected, model


def test_requests_by_endpoint_and_code(stack: Stack, traffic: Traffic) -> None:
    counted = Counter((c.model, c.endpoint, str(c.code)) for c in traffic.answered())
    expected = {key: float(n) for key, n in counted.items()}
    promql = "sum by (model, endpoint, code) (modelmon_requests_total) > 0"
    assert wait_for_vector(stack.prom, promql, ("model", "endpoint", "code"), expected) == expected


def test_request_duration_counts_every_request(stack: Stack, traffic: Traffic) -> None:
    counted = Counter((c.model, c.endpoint) for c in traffic.answered())
    expected = {key: float(n) for key, n in counted.items()}
    promql = "sum by (model, endpoint) (modelmon_request_duration_seconds_count) > 0"
    assert wait_for_vector(stack.prom, promql, ("model", "endpoint"), expected) == expected


def test_errors_by_reason(stack: Stack, traffic: Traffic) -> None:
    counted = Counter((c.model, c.reason) for c in traffic.answered() if c.code != 200)
    expected = {key: float(n) for key, n in counted.items()}
    assert all(reason in ERROR_REASONS for _, reason in expected)
    promql = "sum by (model, reason) (modelmon_request_errors_total) > 0"
    assert wait_for_vector(stack.prom, promql, ("model", "reason"), expected) == expected


def test_batch_size_and_confidence_count_rows(stack: Stack, traffic: Traffic) -> None:
    for model in MODELS:
        rows = traffic.predicted_rows(model)
        assert rows > 0
        for promql in (f'sum(modelmon_batch_size_sum{{model="{model}"}})',
                       f'sum(modelmon_prediction_confidence_count{{model="{model}"}})',
                       f'sum(modelmon_prediction_confidence_bucket{{model="{model}",le="+Inf"}})'):
            assert stack.prom.wait_for(promql, rows) == rows, promql
        # One queue wait per request that reached the model.
        calls = sum(1 for c in traffic.answered() if c.model == model and c.labels)
        promql = f'sum(modelmon_queue_duration_seconds_count{{model="{model}"}})'
        assert stack.prom.wait_for(promql, calls) == calls, promql
        # Merged batches: at least one model call, never more than one per request.
        batches = wait_until(stack.prom, f'sum(modelmon_batch_size_count{{model="{model}"}})',
                             lambda v: v is not None and v > 0)
        assert batches is not None and 1 <= batches <= calls, (model, batches, calls)
        top_rows = f'sum(modelmon_batch_size_bucket{{model="{model}",le="+Inf"}})'
        assert stack.prom.scalar(top_rows) == batches


def test_nothing_left_in_flight(stack: Stack, traffic: Traffic) -> None:
    assert traffic.answered()
    assert stack.prom.wait_for("sum(modelmon_inflight_requests)", 0.0) == 0.0


def test_latency_p99_is_inside_the_buckets(stack: Stack, traffic: Traffic) -> None:
    # docs/metrics.md: buckets sized for ML latency, sub-millisecond to tens of seconds.
    bounds = sorted(float(le) for (le,) in vector(
        stack.prom, "count by (le) (modelmon_request_duration_seconds_bucket)", ("le",)))
    assert bounds[-1] == math.inf and bounds[0] < 0.001 and bounds[-2] >= 10, bounds
    promql = "histogram_quantile(0.99, sum by (le) (rate(modelmon_request_duration_seconds_bucket[1m])))"
    # Evaluated a few seconds after the traffic, so the 1m window holds it (and a scrape
    # from before it) however long the tests before this one took.
    at = traffic.finished_at + 5
    deadline = time.monotonic() + 30
    while not is_finite(p99 := scalar_at(stack.prom, promql, min(at, time.time()))) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert is_finite(p99), f"{promql} = {p99}"
    assert 0 < p99 < bounds[-2], f"p99 {p99} s is clamped at the top bucket {bounds[-2]} s"


def test_promtool_accepts_the_exposition(stack: Stack, traffic: Traffic) -> None:
    assert traffic.answered()
    exposition = httpx.get(f"{stack.server.url}/metrics", timeout=10).content
    assert b"modelmon_predictions_total" in exposition
    result = promtool_check_metrics(exposition)
    problems = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and not problems, problems


def scraped(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The /metrics samples of one server, keyed by name and sorted labels."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_request_rejected_after_inference_counts_no_prediction(
    registry_dir: Path, tmp_path: Path, cancer_frame: pd.DataFrame
) -> None:
    """Asking for an output the model does not have is a 400 (``invalid_input``). The
    client gets no prediction, so none may be counted: the prediction counters, like the
    client, only see rows that were answered."""
    server = start_server(registry_dir, tmp_path, "--drain-seconds", "0")
    try:
        rows = cancer_rows(cancer_frame, np.random.default_rng(SEED), 5)
        good = httpx.post(f"{server.url}{infer_path('cancer')}", json=cancer_v2_json(rows[:3]), timeout=30)
        assert good.status_code == 200, good.text
        bad_body = {**cancer_v2_json(rows[3:]), "outputs": [{"name": "score"}]}
        bad = httpx.post(f"{server.url}{infer_path('cancer')}", json=bad_body, timeout=30)
        assert bad.status_code == 400 and "score" in bad.json()["error"], bad.text
        samples = scraped(server.url)
        base = (("model", "cancer"), ("version", "1"))

        def value(name: str, *extra: tuple[str, str]) -> float:
            return samples[(name, tuple(sorted((*base, *extra))))]

        assert value("modelmon_request_errors_total", ("reason", "invalid_input")) == 1
        assert value("modelmon_requests_total", ("endpoint", "infer"), ("code", "400")) == 1
        assert value("modelmon_requests_total", ("endpoint", "infer"), ("code", "200")) == 1
        predicted = sum(value("modelmon_predictions_total", ("class", c)) for c in ("0", "1"))
        assert predicted == 3, f"{predicted} rows counted as predicted; 3 were answered"
        assert value("modelmon_prediction_confidence_count") == 3
        assert value("modelmon_batch_size_sum") == 3
    finally:
        stop_process(server.process)
