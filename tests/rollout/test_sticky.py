"""A canary sticky by a feature value, end to end: two real servers on one PostgreSQL store
route each row by the hash of its ``customer`` feature, so one customer sees one version on
every replica, stays on the candidate as the share grows, and a request holding customers of
both versions gets each row answered by its customer's version.

The model ``shop`` has a primary (version 1) and a candidate (version 2) trained on inverted
labels, so the two answer most rows differently. The rollout's only gate is ``errors`` and it
needs a million requests a step: it stays at the step the test sets.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelmon.cli import app
from modelmon.registry import register_model
from modelmon.stack.processes import free_port, stop_process
from modelmon.store import open_store, rollouts
from tests.conftest import ServerProcess, start_server
from tests.rollout.test_rollout import SERVER_ARGS, metric, status
from tests.tracking.conftest import postgres_schema

pytestmark = pytest.mark.slow
MODEL = "shop"
CUSTOMERS = list(range(300))


def expected_version(customer: int, share: float) -> str:
    """The version a customer's rows go to, computed here from the documented rule (BLAKE2b
    of the value's canonical text, an integer without ".0"), not with modelmon's code."""
    place = (
        int.from_bytes(hashlib.blake2b(str(customer).encode(), digest_size=8).digest(), "big")
        / 2**64
    )
    return "2" if place < share else "1"


def shop_frame() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 2))
    return pd.DataFrame(
        {
            "customer": rng.integers(0, 1000, 600),
            "x1": x[:, 0],
            "x2": x[:, 1],
            "target": (x[:, 0] + x[:, 1] > 0).astype(int),
        }
    )


@pytest.fixture(scope="module")
def sticky_registry(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sticky-registry")
    frame = shop_frame()
    X, y = frame.drop(columns="target"), frame["target"]
    for model in (LogisticRegression().fit(X, y), LogisticRegression().fit(X, 1 - y)):
        register_model(
            model,
            name=MODEL,
            reference=frame,
            target="target",
            validation=frame,
            registry=root,
            convert_to_onnx=False,
        )
    return root


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def replicas(
    sticky_registry: Path, grpc_port: int, tmp_path_factory
) -> Iterator[tuple[list[ServerProcess], str]]:
    """Two servers on one PostgreSQL store (the first also serves gRPC), and the store's URL."""
    logs = tmp_path_factory.mktemp("sticky-logs")
    with postgres_schema() as url:
        args = (*SERVER_ARGS, "--store", url, "--no-prediction-log")
        with ThreadPoolExecutor(2) as pool:  # started side by side: each start takes seconds
            servers = list(
                pool.map(
                    lambda extra: start_server(sticky_registry, logs, *args, *extra),
                    [("--grpc-port", str(grpc_port)), ()],
                )
            )
        try:
            yield servers, url
        finally:
            for server in servers:
                stop_process(server.process)


def records(
    url: str, rows: list[dict], version: str | None = None, client: httpx.Client | None = None
) -> dict:
    path = (
        f"/v1/models/{MODEL}:predict"
        if version is None
        else f"/v2/models/{MODEL}/versions/{version}/infer"
    )
    payload = {"instances": rows} if version is None else v2_body(rows)
    response = (client or httpx).post(f"{url}{path}", json=payload, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def v2_body(rows: list[dict]) -> dict:
    return {
        "inputs": [
            {
                "name": "customer",
                "datatype": "INT64",
                "shape": [len(rows)],
                "data": [r["customer"] for r in rows],
            },
            {
                "name": "x1",
                "datatype": "FP64",
                "shape": [len(rows)],
                "data": [r["x1"] for r in rows],
            },
            {
                "name": "x2",
                "datatype": "FP64",
                "shape": [len(rows)],
                "data": [r["x2"] for r in rows],
            },
        ]
    }


def rows_of(customers: list[int], seed: int) -> list[dict]:
    x = np.random.default_rng(seed).normal(size=(len(customers), 2))
    return [
        {"customer": c, "x1": float(a), "x2": float(b)}
        for c, (a, b) in zip(customers, x, strict=True)
    ]


def requests_counted(url: str, version: str) -> float:
    return (
        metric(
            url,
            "modelmon_requests_total",
            {"model": MODEL, "version": version, "endpoint": "predict", "code": "200"},
        )
        or 0.0
    )


def grpc_requests(url: str, version: str) -> float:
    labels = {"model": MODEL, "version": version, "endpoint": "grpc_infer", "code": "200"}
    return metric(url, "modelmon_requests_total", labels) or 0.0


def test_bad_sticky_starts_get_a_400_naming_the_field_and_write_nothing(replicas, sticky_registry):
    (server, _), store_url = replicas
    for payload, message in [
        (
            {"sticky_feature": "account"},
            "sticky_feature: 'account' is not a feature of shop version 1; its features: ['customer', 'x1', 'x2']",
        ),
        ({"sticky_feature": ["customer"]}, "sticky_feature: ['customer'] is not a feature"),
        (
            {"sticky_feature": "customer", "sticky_header": "x-customer"},
            "give sticky_header or sticky_feature, not both",
        ),
        (
            {"sticky_feature": "customer", "mode": "shadow"},
            "sticky_feature: only a canary splits traffic by a key",
        ),
    ]:
        response = httpx.post(
            f"{server.url}/v2/repository/models/{MODEL}/rollout/start",
            json={"candidate": 2, **payload},
        )
        assert (response.status_code, message in response.json()["error"]) == (400, True), (
            payload,
            response.text,
        )
    result = CliRunner().invoke(
        app,
        [
            "rollout",
            "start",
            MODEL,
            "--candidate",
            "2",
            "--sticky-feature",
            "account",
            "--registry",
            str(sticky_registry),
            "--store",
            store_url,
        ],
    )
    assert result.exit_code == 2 and "sticky_feature: 'account' is not a feature" in " ".join(
        result.output.split()
    )
    # Nothing was written.
    assert httpx.get(f"{server.url}/v2/repository/models/{MODEL}/rollout").status_code == 404
    assert rollouts.latest(open_store(store_url), MODEL) is None


def wait_for_share(urls: list[str], share: float) -> None:
    for url in urls:  # each replica follows the store at its next check (0.1 s)
        for _ in range(200):
            if metric(url, "modelmon_rollout_share", {"model": MODEL}) == share:
                break
            time.sleep(0.05)
        assert metric(url, "modelmon_rollout_share", {"model": MODEL}) == share


def test_one_customer_sees_one_version_on_every_replica_as_the_share_grows(replicas):
    servers, store_url = replicas
    urls = [s.url for s in servers]
    response = httpx.post(
        f"{urls[0]}/v2/repository/models/{MODEL}/rollout/start",
        json={
            "candidate": 2,
            "steps": [10, 50, 100],
            "gates": ["errors"],
            "min_requests": 1_000_000,
            "sticky_feature": "customer",
        },
    )
    assert response.status_code == 200, response.text
    # The other replica reads the same plan.
    assert status(urls[1], MODEL)["sticky_feature"] == "customer"
    wait_for_share(urls, 0.1)
    rows = rows_of(CUSTOMERS, seed=1)
    before = {v: requests_counted(urls[0], v) for v in ("1", "2")}
    seen: dict[float, dict[int, str]] = {}
    for share in (0.1, 0.5):
        if share == 0.5:  # the next step, as the evaluator would write it
            store = open_store(store_url)
            rollouts.apply(
                store, rollouts.latest(store, MODEL), "advance", decided_by="test", evidence={}
            )
            wait_for_share(urls, 0.5)
        expected = {c: expected_version(c, share) for c in CUSTOMERS}
        for url in urls:  # one row a request, each customer on both replicas
            with httpx.Client() as client:
                answered = {
                    row["customer"]: records(url, [row], client=client)["model_version"]
                    for row in rows
                }
            assert answered == expected, url
        # The same customer written 7.0 instead of 7 is the same customer.
        as_floats = [{**row, "customer": float(row["customer"])} for row in rows[:50]]
        with httpx.Client() as client:
            assert {
                r["customer"]: records(urls[1], [r], client=client)["model_version"]
                for r in as_floats
            } == {c: expected[c] for c in CUSTOMERS[:50]}
        seen[share] = expected
    on_candidate = {s: {c for c, v in seen[s].items() if v == "2"} for s in seen}
    # A customer on the candidate at 10% stays there at 50%.
    assert on_candidate[0.1] < on_candidate[0.5]
    assert (
        0 < len(on_candidate[0.1]) < len(CUSTOMERS) / 4
        and len(CUSTOMERS) / 4 < len(on_candidate[0.5]) < 3 * len(CUSTOMERS) / 4
    )
    # Each request is counted on the version that answered it (the gates' evidence).
    after = {v: requests_counted(urls[0], v) for v in ("1", "2")}
    assert after["2"] - before["2"] == len(on_candidate[0.1]) + len(on_candidate[0.5])
    assert after["1"] - before["1"] == 2 * len(CUSTOMERS) - len(on_candidate[0.1]) - len(
        on_candidate[0.5]
    )


def test_a_request_of_customers_on_both_versions_answers_each_row_with_its_customers_version(
    replicas, grpc_port
):
    """At the 50% step: one request of 60 rows, customers on both sides, over the records
    endpoint, REST V2 infer and gRPC ModelInfer, against each version called directly."""
    import tritonclient.grpc as triton

    servers, _ = replicas
    url = servers[0].url
    assert status(url, MODEL)["step"] == 1
    customers = [CUSTOMERS[i] for i in np.random.default_rng(5).integers(0, len(CUSTOMERS), 60)]
    rows = rows_of(customers, seed=2)
    versions = [expected_version(c, 0.5) for c in customers]
    assert set(versions) == {"1", "2"}
    direct = {v: records(url, rows, version=v) for v in ("1", "2")}
    direct_labels = {
        v: next(o["data"] for o in answer["outputs"] if o["name"] == "label")
        for v, answer in direct.items()
    }
    direct_proba = {
        v: np.array(
            next(o["data"] for o in answer["outputs"] if o["name"] == "probabilities")
        ).reshape(-1, 2)
        for v, answer in direct.items()
    }
    # The candidate answers otherwise: the test can tell the versions apart.
    assert direct_labels["1"] != direct_labels["2"]
    want_labels = [direct_labels[v][i] for i, v in enumerate(versions)]
    want_proba = np.array([direct_proba[v][i] for i, v in enumerate(versions)])

    counted = {v: requests_counted(url, v) for v in ("1", "2")}
    answer = records(url, rows)
    assert answer["model_version"] == "1"  # the primary's; each row names its own
    assert [p["model_version"] for p in answer["predictions"]] == versions
    assert [p["label"] for p in answer["predictions"]] == want_labels
    np.testing.assert_allclose(
        [[p["probabilities"]["0"], p["probabilities"]["1"]] for p in answer["predictions"]],
        want_proba,
    )
    ids = [p["id"] for p in answer["predictions"]]
    assert len(set(ids)) == len(rows)
    # Counted once on each version: each answered the request in part.
    assert {v: requests_counted(url, v) - counted[v] for v in counted} == {"1": 1.0, "2": 1.0}

    response = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=v2_body(rows), timeout=30)
    assert response.status_code == 200, response.text
    v2 = response.json()
    assert v2["parameters"] == {"model_versions": ",".join(versions)}
    assert next(o["data"] for o in v2["outputs"] if o["name"] == "label") == want_labels
    np.testing.assert_allclose(
        np.array(next(o["data"] for o in v2["outputs"] if o["name"] == "probabilities")).reshape(
            -1, 2
        ),
        want_proba,
    )

    grpc_counted = {v: grpc_requests(url, v) for v in ("1", "2")}
    with triton.InferenceServerClient(url=f"127.0.0.1:{grpc_port}") as client:
        inputs = []
        for name, datatype in (("customer", "INT64"), ("x1", "FP64"), ("x2", "FP64")):
            tensor = triton.InferInput(name, [len(rows)], datatype)
            tensor.set_data_from_numpy(
                np.array(
                    [r[name] for r in rows], dtype=np.int64 if datatype == "INT64" else np.float64
                )
            )
            inputs.append(tensor)
        result = client.infer(MODEL, inputs)
    assert result.get_response().parameters["model_versions"].string_param == ",".join(versions)
    assert [int(v) for v in result.as_numpy("label")] == want_labels
    np.testing.assert_allclose(result.as_numpy("probabilities"), want_proba)
    assert {v: grpc_requests(url, v) - grpc_counted[v] for v in grpc_counted} == {
        "1": 1.0,
        "2": 1.0,
    }

    # A request whose customers are all on one side is answered as without the sticky key.
    one_side = [r for r, v in zip(rows, versions, strict=True) if v == "2"]
    whole = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=v2_body(one_side), timeout=30).json()
    assert whole["model_version"] == "2" and "parameters" not in whole
