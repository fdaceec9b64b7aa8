"""A model that fails on some requests, served for real (``modelmon serve``, REST and gRPC
share the batcher): when concurrent requests are merged into one model call and that call
fails, only the requests that make the model fail get an error, each its own, and the
valid ones batched with them are answered (serving/batching.py, "A model that fails").

The regressor refuses negative inputs (tests/integration/raising_models.py), as a
``log1p`` pipeline does: one request in five carries a negative value of its own, which
its error must name. Each call takes 3 ms, so concurrent requests queue and merge; the
model writes each call's size and outcome to a file, so the test sees that merged calls
really failed (otherwise it would prove nothing)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import tritonclient.grpc as triton
from sklearn.linear_model import LinearRegression
from tritonclient.utils import InferenceServerException

from modelmon.registry import register_model
from modelmon.stack.processes import free_port, stop_process
from tests.conftest import ServerProcess, start_server
from tests.integration.raising_models import NegativeRefusingRegressor
from tests.integration.test_http_api import error_counts, metric_value

pytestmark = pytest.mark.slow
REQUESTS = 150
CLIENTS = 16


def frame(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.gamma(2.0, 2.0, n), rng.gamma(3.0, 1.0, n)
    return pd.DataFrame({"a": a, "b": b, "target": 3 * np.log1p(a) - 2 * np.log1p(b) + rng.normal(0, 0.1, n)})


@pytest.fixture(scope="module")
def model() -> NegativeRefusingRegressor:
    data = frame()
    X = np.log1p(data[["a", "b"]].to_numpy())
    return NegativeRefusingRegressor(LinearRegression().fit(X, data["target"])).fit(X, data["target"])


@pytest.fixture(scope="module")
def served(tmp_path_factory, model: NegativeRefusingRegressor) -> Iterator[tuple[ServerProcess, int, Path]]:
    """(server, gRPC port, the model's calls file) serving ``logm``."""
    directory = tmp_path_factory.mktemp("batch-failures")
    calls = directory / "calls.txt"
    served_model = NegativeRefusingRegressor(model.model, delay=0.003, calls_file=str(calls)).fit(np.zeros((1, 2)), None)
    register_model(served_model, name="logm", reference=frame(), target="target", validation=frame(seed=1),
                   registry=directory / "registry", convert_to_onnx=False)
    grpc_port = free_port()
    handle = start_server(directory / "registry", directory, "--grpc-port", str(grpc_port), "--drain-seconds", "0")
    yield handle, grpc_port, calls
    stop_process(handle.process)


def requests() -> list[np.ndarray]:
    """Requests of 1-3 rows; every fifth has one row with a negative ``a`` of its own."""
    rng = np.random.default_rng(11)
    bodies = []
    for i in range(REQUESTS):
        rows = np.column_stack([rng.gamma(2.0, 2.0, 1 + i % 3), rng.gamma(3.0, 1.0, 1 + i % 3)])
        if i % 5 == 0:
            rows[i % len(rows), 0] = -1.0 - i / 1000  # log1p: NaN below -1, so a model must refuse it
        bodies.append(rows)
    return bodies


def rest_call(url: str, client: httpx.Client, rows: np.ndarray) -> tuple[int, dict]:
    body = {"inputs": [{"name": n, "shape": [len(rows)], "datatype": "FP64", "data": rows[:, k].tolist()}
                       for k, n in enumerate(("a", "b"))]}
    response = client.post(f"{url}/v2/models/logm/infer", json=body)
    if response.status_code != 200:
        return response.status_code, response.json()
    outputs = {o["name"]: o["data"] for o in response.json()["outputs"]}
    return 200, {"prediction": outputs["prediction"], "ids": outputs["prediction_id"]}


def grpc_call(client: triton.InferenceServerClient, rows: np.ndarray) -> tuple[int, dict]:
    tensors = []
    for k, name in enumerate(("a", "b")):
        tensor = triton.InferInput(name, [len(rows)], "FP64")
        tensor.set_data_from_numpy(np.ascontiguousarray(rows[:, k]))
        tensors.append(tensor)
    try:
        result = client.infer("logm", tensors)
    except InferenceServerException as exc:
        return 500 if exc.status() == "StatusCode.INTERNAL" else -1, {"error": exc.message()}
    ids = [v.decode() for v in result.as_numpy("prediction_id")]
    return 200, {"prediction": result.as_numpy("prediction").ravel().tolist(), "ids": ids}


def call_sizes(calls: Path) -> list[tuple[int, str]]:
    return [(int(n), outcome) for n, outcome in (line.split() for line in calls.read_text().splitlines())]


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_only_the_failing_requests_of_a_merged_call_fail(served, model, protocol):
    server, grpc_port, calls = served
    endpoint = "infer" if protocol == "rest" else "grpc_infer"
    bodies = requests()
    bad = {i for i in range(REQUESTS) if i % 5 == 0}
    valid_rows = sum(len(bodies[i]) for i in range(REQUESTS) if i not in bad)

    def scrape() -> tuple[float, float, float, float, float]:
        return (metric_value(server.url, "modelmon_requests_total", model="logm", endpoint=endpoint, code="200"),
                metric_value(server.url, "modelmon_requests_total", model="logm", endpoint=endpoint, code="500"),
                error_counts(server.url, "logm").get("inference_error", 0.0),
                metric_value(server.url, "modelmon_batch_size_sum", model="logm"),
                metric_value(server.url, "modelmon_prediction_log_rows_total", outcome="written"))

    before, calls_before = scrape(), len(call_sizes(calls))
    local = threading.local()

    def send(i: int) -> tuple[int, dict]:
        if protocol == "rest":
            if not hasattr(local, "client"):
                local.client = httpx.Client(timeout=30)
            return rest_call(server.url, local.client, bodies[i])
        if not hasattr(local, "client"):
            local.client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        return grpc_call(local.client, bodies[i])

    with ThreadPoolExecutor(CLIENTS) as pool:
        answers = list(pool.map(send, range(REQUESTS)))

    # Calls merged several requests and failed: the situation under test arose.
    made = call_sizes(calls)[calls_before:]
    failed_merged = [n for n, outcome in made if outcome == "failed" and n > 3]  # > 3 rows: more than one request
    assert len(failed_merged) >= 3, made

    ids: list[str] = []
    for i, (status, answer) in enumerate(answers):
        if i in bad:
            assert status == 500, (i, answer)
            assert f"cannot take a log of {-1.0 - i / 1000!r}" in answer["error"], (i, answer)
            continue
        assert status == 200, (i, answer)
        np.testing.assert_allclose(answer["prediction"], model.predict(bodies[i]), rtol=1e-12)
        ids += answer["ids"]
    assert len(ids) == valid_rows and len(set(ids)) == valid_rows

    # Each request counted once, and each answered row once (in the calls' row counts and in
    # the prediction log, which the writer process reaches a moment later).
    deadline = time.monotonic() + 20
    while (after := scrape())[4] - before[4] < valid_rows and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    after = scrape()
    assert [a - b for a, b in zip(after, before, strict=True)] == [
        REQUESTS - len(bad), len(bad), len(bad), valid_rows, valid_rows
    ]
