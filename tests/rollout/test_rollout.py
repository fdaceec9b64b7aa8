"""Safe rollouts end to end: real servers following plans in their SQL store.

One server (module-scoped) serves four models, each with a primary (version 1) and a
candidate (version 2): ``same`` (the same model again), ``inverted`` (trained on inverted
labels), ``faulty`` (fails on inputs whose first feature is high) and ``slow`` (0.3 s a
call, past the shadow timeout of 0.1 s); ``drifting``, whose primary leans on feature a
and candidate on feature b; and one regressor, ``price``, whose version 2 learnt a
shuffled target. The tests run in
order: ``same`` is promoted to 2, then a rollout back to 1 (the same model) is aborted and
another restarted. The
store is the server's SQLite file; the CLI reaches the same file. Gates are evaluated
every 0.1 s; margins are wider and step minimums smaller than the defaults so that a
decision takes hundreds of requests, not tens of thousands.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.datasets import make_regression
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import mean_absolute_error
from typer.testing import CliRunner

from modelmon.cli import app
from modelmon.registry import register_model
from modelmon.stack.processes import free_port, stop_process
from tests.conftest import ServerProcess, start_server
from tests.rollout.models import FaultyClassifier
from tests.slow_model import SlowClassifier
from tests.tracking.conftest import postgres_schema

pytestmark = pytest.mark.slow
#: Margins for tests: a step passes on a few hundred requests (docs/rollout.md explains them).
MARGINS = {"errors": 0.15, "latency": 0.25, "estimated_quality": 0.08, "drift": 0.3}
SERVER_ARGS = ("--drain-seconds", "0", "--rollout-check-seconds", "0.1", "--shadow-timeout-seconds", "0.1")


@pytest.fixture(scope="module")
def rollout_registry(tmp_path_factory, cancer_frame: pd.DataFrame, cancer_model: LogisticRegression) -> Path:
    root = tmp_path_factory.mktemp("rollout-registry")
    X, y = cancer_frame.drop(columns="target"), cancer_frame["target"]
    inverted = LogisticRegression(max_iter=10000).fit(X, 1 - y)
    limit = float(X.iloc[:, 0].quantile(0.7))
    faulty = FaultyClassifier(cancer_model, limit=limit).fit(X, y)
    safe = cancer_frame[X.iloc[:, 0] <= limit]  # the rows the faulty model answers
    slow = SlowClassifier(delay=0.3).fit(X, y)
    candidates = {"same": (cancer_model, cancer_frame), "inverted": (inverted, cancer_frame), "faulty": (faulty, safe),
                  "slow": (slow, cancer_frame)}
    for name, (candidate, validation) in candidates.items():
        register_model(cancer_model, name=name, reference=cancer_frame, target="target", validation=cancer_frame,
                       registry=root, convert_to_onnx=False)
        register_model(candidate, name=name, reference=cancer_frame, target="target", validation=validation,
                       registry=root, convert_to_onnx=False)
    # Two classifiers of the same rows, one leaning on a, the other on b (drifting_models).
    frame = drifting_frame(shift=0.0, rows=2000)
    for model in drifting_models():
        register_model(model, name="drifting", reference=frame, target="target", validation=frame, registry=root,
                       convert_to_onnx=False)
    # A regressor and a worse one: version 2 learnt a shuffled target, so its errors (and its
    # label-free estimate of them, fitted on the same validation rows) are far larger.
    price = price_frame()
    X, y = price.drop(columns="target"), price["target"]
    shuffled = np.random.default_rng(1).permutation(y.to_numpy())
    for model in (Ridge().fit(X, y), Ridge().fit(X, shuffled)):
        register_model(model, name="price", reference=price, target="target", validation=price, registry=root,
                       convert_to_onnx=False)
    return root


def price_frame() -> pd.DataFrame:
    X, y = make_regression(n_samples=300, n_features=4, noise=5.0, random_state=0)
    return pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(target=y)


def drifting_frame(shift: float, rows: int = 600, seed: int = 3) -> pd.DataFrame:
    """Features a and b, standard normal but for b moved by ``shift``; target a + b > 0."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(shift, 1.0, size=rows)
    return pd.DataFrame({"a": a, "b": b, "target": (a + b > 0).astype(int)})


def drifting_models() -> tuple[LogisticRegression, LogisticRegression]:
    """The primary learnt a + noise > 0, the candidate b + noise > 0: alike on the validation
    rows, where both features have one distribution, apart once b moves."""
    frame = drifting_frame(shift=0.0, rows=2000, seed=4)
    X, noise = frame[["a", "b"]], np.random.default_rng(5).normal(size=(2, len(frame)))
    return (LogisticRegression().fit(X, (frame["a"] + noise[0] > 0).astype(int)),
            LogisticRegression().fit(X, (frame["b"] + noise[1] > 0).astype(int)))


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rollout-home")


@pytest.fixture(scope="module")
def grpc_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def rollout_server(rollout_registry: Path, home: Path, grpc_port: int, tmp_path_factory) -> Iterator[ServerProcess]:
    handle = start_server(rollout_registry, tmp_path_factory.mktemp("rollout-logs"), *SERVER_ARGS,
                          "--grpc-port", str(grpc_port), home=home)
    yield handle
    stop_process(handle.process)


def grpc_versions(port: int, model: str, frame: pd.DataFrame, calls: int) -> set[str]:
    """The versions answering ``calls`` unversioned gRPC ModelInfer calls of one row."""
    import tritonclient.grpc as triton

    versions = set()
    with triton.InferenceServerClient(url=f"127.0.0.1:{port}") as client:
        for i in range(calls):
            tensor = triton.InferInput("input-0", [1, frame.shape[1]], "FP64")
            tensor.set_data_from_numpy(frame.iloc[[i % len(frame)]].to_numpy(dtype=np.float64))
            versions.add(client.infer(model, [tensor]).get_response().model_version)
    return versions


@pytest.fixture(scope="module")
def instances(cancer_frame: pd.DataFrame) -> list[dict]:
    return cancer_frame.drop(columns="target").to_dict("records")


def start(url: str, model: str, **fields) -> httpx.Response:
    return httpx.post(f"{url}/v2/repository/models/{model}/rollout/start", json=fields, timeout=30)


def status(url: str, model: str) -> dict:
    response = httpx.get(f"{url}/v2/repository/models/{model}/rollout", timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def drive(url: str, model: str, instances: list[dict], rows: int, until: set[str], most: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """Send unversioned requests of ``rows`` random rows until the rollout's state is in
    ``until`` (checked every 20 requests) or ``most`` requests were sent; returns the last
    status and every answer."""
    rng = np.random.default_rng(seed)
    answers: list[dict] = []
    with httpx.Client(timeout=30) as client:
        for sent in range(most):
            chosen = [instances[i] for i in rng.integers(0, len(instances), rows)]
            response = client.post(f"{url}/v1/models/{model}:predict", json={"instances": chosen})
            answers.append({"status": response.status_code, **(response.json() if response.status_code == 200 else {})})
            if sent % 20 == 19:
                found = status(url, model)
                if found["state"] in until:
                    return found, answers
    return status(url, model), answers


def metric(url: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return None


def test_an_identical_candidate_is_promoted_through_every_step(rollout_server, grpc_port, instances, cancer_frame):
    url = rollout_server.url
    response = start(url, "same", candidate=2, mode="canary", steps=[10, 50, 100], margins=MARGINS, min_requests=30)
    assert response.status_code == 200, response.text
    assert (response.json()["primary"], response.json()["share"]) == (1, 0.1)
    # gRPC's unversioned calls follow the plan as REST's do (10%: some of 80 go to version 2).
    assert grpc_versions(grpc_port, "same", cancer_frame.drop(columns="target"), 80) == {"1", "2"}
    found, answers = drive(url, "same", instances, rows=20, until={"promoted", "rolled_back"}, most=4000)
    assert found["state"] == "promoted", found
    advances = [d for d in found["decisions"] if d["action"] == "advance"]
    assert [(d["from_step"], d["to_step"]) for d in advances] == [(0, 1), (1, 2)]
    for decision in advances:  # each step passed on every gate, with its evidence recorded
        gates = decision["evidence"]["gates"]
        assert set(gates) == {"errors", "latency", "estimated_quality", "drift"}
        assert all(g["verdict"] == "pass" and g["high"] <= g["margin"] for g in gates.values()), gates
        assert decision["evidence"]["step_requests"] >= 30
    versions = [a["model_version"] for a in answers]
    assert {"1", "2"} <= set(versions)  # both answered during the canary
    print(f"\nidentical candidate promoted after {len(answers)} requests")
    # Promoted: every unversioned request is the candidate's now, and the metrics say so.
    _, after = drive(url, "same", instances, rows=1, until=set(), most=20)
    assert {a["model_version"] for a in after} == {"2"}
    assert grpc_versions(grpc_port, "same", cancer_frame.drop(columns="target"), 10) == {"2"}
    assert metric(url, "modelmon_rollout_share", {"model": "same"}) == 1.0
    assert metric(url, "modelmon_rollout_state", {"model": "same", "state": "promoted"}) == 1.0
    assert metric(url, "modelmon_rollout_decisions_total", {"model": "same", "action": "advance"}) == 2.0


def test_an_inverted_candidate_is_rolled_back_on_estimated_quality_before_any_label(rollout_server, instances):
    url = rollout_server.url
    assert start(url, "inverted", candidate=2, steps=[10, 50, 100], margins=MARGINS, min_requests=30).status_code == 200
    found, answers = drive(url, "inverted", instances, rows=20, until={"promoted", "rolled_back"}, most=3000)
    assert found["state"] == "rolled_back", found
    decision = found["decisions"][-1]
    assert decision["action"] == "roll_back"
    assert decision["evidence"]["failed"] == ["estimated_quality"]  # errors and latency did not fail
    estimated = decision["evidence"]["gates"]["estimated_quality"]
    assert estimated["low"] > 0  # the candidate's expected error is above the primary's
    assert metric(url, "modelmon_feedback_total", {"model": "inverted", "outcome": "matched"}) == 0.0  # no labels
    answered_by_candidate = sum(a["model_version"] == "2" for a in answers)
    print(f"\ninverted candidate rolled back after answering {answered_by_candidate} requests "
          f"({int(estimated['candidate']['count'])} rows) of {len(answers)}")
    assert answered_by_candidate < 100
    _, after = drive(url, "inverted", instances, rows=1, until=set(), most=20)
    assert {a["model_version"] for a in after} == {"1"}


def test_a_failing_shadow_never_reaches_callers_and_is_rolled_back_on_errors(rollout_server, instances):
    url = rollout_server.url
    assert start(url, "faulty", candidate=2, mode="shadow", margins=MARGINS, min_requests=30).status_code == 200
    found, answers = drive(url, "faulty", instances, rows=3, until={"promoted", "rolled_back"}, most=2000)
    assert found["state"] == "rolled_back", found
    assert "errors" in found["decisions"][-1]["evidence"]["failed"]
    # Every caller got the primary's answer, whatever the shadow did.
    assert {(a["status"], a["model_version"]) for a in answers} == {(200, "1")}
    failed = metric(url, "modelmon_rollout_shadow_total", {"model": "faulty", "outcome": "failed"})
    assert failed is not None and failed > 0
    errors = metric(url, "modelmon_request_errors_total", {"model": "faulty", "version": "2", "reason": "inference_error"})
    assert errors == failed
    # On the copies it did answer it is the primary's model: it agrees on every row.
    agree = metric(url, "modelmon_rollout_shadow_rows_total", {"model": "faulty", "outcome": "agree"})
    answered = metric(url, "modelmon_rollout_shadow_total", {"model": "faulty", "outcome": "answered"})
    assert agree is not None and answered is not None and agree >= answered > 0
    assert metric(url, "modelmon_rollout_shadow_rows_total", {"model": "faulty", "outcome": "disagree"}) == 0.0


def test_a_hanging_shadow_never_reaches_callers(rollout_server, instances):
    url = rollout_server.url
    assert start(url, "slow", candidate=2, mode="shadow", margins=MARGINS).status_code == 200
    found, answers = drive(url, "slow", instances, rows=3, until={"rolled_back", "promoted"}, most=1000)
    assert {(a["status"], a["model_version"]) for a in answers} == {(200, "1")}
    # Its timeouts count as its errors and its latency: rolled back on them (its constant
    # answers may fail the estimated quality too, once its late calls are counted).
    assert found["state"] == "rolled_back", found
    assert set(found["decisions"][-1]["evidence"]["failed"]) & {"errors", "latency"}
    print(f"\nhanging shadow rolled back on {found['decisions'][-1]['evidence']['failed']} after {len(answers)} requests")
    timed_out = metric(url, "modelmon_rollout_shadow_total", {"model": "slow", "outcome": "timed_out"})
    assert timed_out is not None and timed_out >= 1
    # No copy was answered in time: the ones queued behind a hung call waited (or were dropped).
    answered = metric(url, "modelmon_rollout_shadow_total", {"model": "slow", "outcome": "answered"})
    assert answered == 0.0


def test_a_worse_regressor_is_rolled_back_on_its_estimated_error_before_any_label(rollout_server):
    url = rollout_server.url
    rows = price_frame().drop(columns="target").to_dict("records")
    margins = {"errors": 0.15, "latency": 0.25, "estimated_error": 0.15}
    assert start(url, "price", candidate=2, steps=[10, 50, 100], margins=margins, min_requests=30).status_code == 200
    found, answers = drive(url, "price", rows, rows=20, until={"promoted", "rolled_back"}, most=3000)
    assert found["state"] == "rolled_back", found
    decision = found["decisions"][-1]
    assert decision["evidence"]["failed"] == ["estimated_error"]  # errors and latency did not fail
    estimated = decision["evidence"]["gates"]["estimated_error"]
    assert estimated["low"] > 0
    assert {a["model_version"] for a in answers} == {"1", "2"}  # a canary: both answered
    # The candidate is truly worse on these rows (scikit-learn's MAE, labels the server never saw).
    price = price_frame()
    X, y = price.drop(columns="target"), price["target"]
    shuffled = np.random.default_rng(1).permutation(y.to_numpy())
    primary_mae = mean_absolute_error(y, Ridge().fit(X, y).predict(X))
    assert mean_absolute_error(y, Ridge().fit(X, shuffled).predict(X)) > 5 * primary_mae
    assert metric(url, "modelmon_feedback_total", {"model": "price", "outcome": "matched"}) in (None, 0.0)  # no labels
    print(f"\nworse regressor rolled back after {int(estimated['candidate']['count'])} of its rows "
          f"(share above the primary's MAE: {estimated['candidate']['bad'] / estimated['candidate']['count']:.2f} "
          f"against {estimated['primary']['bad'] / max(estimated['primary']['count'], 1):.2f})")


def test_a_candidate_whose_predictions_drift_more_is_rolled_back_on_drift_before_any_label(rollout_server):
    """Feature b moved by 2.5 in the traffic: the candidate, which leans on b, predicts class 1
    for nearly every row where its validation rows were half and half; the primary, leaning
    on a, predicts as it did. Rolled back on drift alone (the candidate is sure of its answers,
    so CBPE does not expect it to err more), with no label sent."""
    url = rollout_server.url
    traffic = drifting_frame(shift=2.5, rows=2000, seed=6).drop(columns="target")
    margins = {**MARGINS, "drift": 0.2}  # 2,000 validation rows leave the gate room for it (docs/rollout.md)
    assert start(url, "drifting", candidate=2, steps=[50, 100], margins=margins, min_requests=30).status_code == 200
    found, answers = drive(url, "drifting", traffic.to_dict("records"), rows=50, until={"promoted", "rolled_back"}, most=1000)
    assert found["state"] == "rolled_back", found
    decision = found["decisions"][-1]
    assert decision["evidence"]["failed"] == ["drift"]
    drift = decision["evidence"]["gates"]["drift"]
    assert drift["low"] > margins["drift"]
    assert drift["candidate_drift"][0] > drift["primary_drift"][1]
    # The models' own predictions (scikit-learn) on these rows and on the validation rows:
    # the candidate's class shares moved by far more than the margin, the primary's barely.
    validation = drifting_frame(shift=0.0, rows=2000).drop(columns="target")
    primary, candidate = drifting_models()
    moved = [abs(m.predict(traffic).mean() - m.predict(validation).mean()) for m in (primary, candidate)]
    assert moved[1] > 0.4 > 0.1 > moved[0]
    assert drift["candidate"]["bad"] / drift["candidate"]["count"] >= drift["candidate_drift"][0]
    assert metric(url, "modelmon_feedback_total", {"model": "drifting", "outcome": "matched"}) in (None, 0.0)  # no labels
    print(f"\ndrifting candidate rolled back after {int(drift['candidate']['count'])} of its rows in {len(answers)} "
          f"requests (drift {drift['candidate_drift']} against the primary's {drift['primary_drift']})")


BAD_STARTS = [
    ({}, 400, "candidate: the version to roll out is required"),
    ({"candidate": 9}, 400, "candidate: model 'same' has no version 9"),
    ({"candidate": 1, "gates": ["estimated_error"]}, 400, "gates: 'estimated_error' needs a regressor; same is a"),
    ({"candidate": "two"}, 400, "candidate must be a version number"),
    ({"candidate": 2}, 400, "version 2 is the primary already"),  # promoted above: 2 serves now
    ({"candidate": 1, "primary": 7}, 400, "primary: model 'same' has no version 7"),
    ({"candidate": 1, "mode": "blue-green"}, 400, "mode must be one of shadow, canary"),
    ({"candidate": 1, "steps": [50, 10, 100]}, 400, "steps must increase"),
    ({"candidate": 1, "steps": [10, 50]}, 400, "the last step must be 100"),
    ({"candidate": 1, "steps": [0, 100]}, 400, "steps must be percentages in (0, 100]"),
    ({"candidate": 1, "steps": "10,100"}, 400, "steps must be a non-empty list"),
    ({"candidate": 1, "steps": [100]}, 400, "a canary needs a step below 100"),
    ({"candidate": 1, "gates": ["errors", "vibes"]}, 400, "gates: unknown gate 'vibes'"),
    ({"candidate": 1, "gates": []}, 400, "gates must be a non-empty list"),
    ({"candidate": 1, "gates": ["errors"], "margins": {"latency": 0.1}}, 400, "margins: 'latency' is not one of this rollout's gates"),
    ({"candidate": 1, "margins": {"errors": 2}}, 400, "margins.errors must be a share in (0, 1)"),
    ({"candidate": 1, "margins": [0.1]}, 400, "margins must map gate names to numbers"),
    ({"candidate": 1, "alpha": 0}, 400, "alpha (the false-alarm rate) must be in (0, 0.5]"),
    ({"candidate": 1, "alpha": "low"}, 400, "alpha must be a finite number"),
    ({"candidate": 1, "min_requests": 0}, 400, "min_requests must be a whole number of at least 1"),
    ({"candidate": 1, "min_requests": True}, 400, "min_requests must be a whole number of at least 1"),
    ({"candidate": 1, "sticky_header": "x user"}, 400, "sticky_header must be an HTTP header name"),
    ({"candidate": 1, "mode": "shadow", "sticky_header": "x-user"}, 400, "only a canary splits traffic by a key"),
    ({"candidate": 1, "colour": "blue"}, 400, "unknown field(s) ['colour']"),
    ([1, 2], 400, "expected a JSON object"),
]


def test_bad_input_gets_a_clear_error_and_changes_nothing(rollout_server, rollout_registry, home):
    url = rollout_server.url
    before = status(url, "same")
    assert before["state"] == "promoted"
    for payload, code, message in BAD_STARTS:
        response = start(url, "same", **payload) if isinstance(payload, dict) else httpx.post(
            f"{url}/v2/repository/models/same/rollout/start", json=payload)
        assert (response.status_code, message in response.json()["error"]) == (code, True), (payload, response.text)
    others = [
        (httpx.post(f"{url}/v2/repository/models/same/rollout/start", content=b"{not json"), 400, "JSON"),
        (httpx.post(f"{url}/v2/repository/models/nope/rollout/start", json={"candidate": 1}), 404, "model 'nope' is not registered"),
        (httpx.post(f"{url}/v2/repository/models/same/rollout/promote"), 409, "no rollout of 'same' is running (the last one promoted)"),
        (httpx.post(f"{url}/v2/repository/models/same/rollout/abort", json={"now": True}), 400, "abort takes no parameters"),
        (httpx.post(f"{url}/v2/repository/models/same/rollout/pause"), 404, "unknown rollout action 'pause'"),
        (httpx.get(f"{url}/v2/repository/models/nope/rollout"), 404, "model 'nope' has no rollout"),
    ]
    for response, code, message in others:
        assert (response.status_code, message in response.json()["error"]) == (code, True), response.text
    assert status(url, "same") == {**before, "evidence": status(url, "same")["evidence"]}  # nothing changed
    assert metric(url, "modelmon_rollout_commands_total", {"action": "start", "code": "400"}) == len(BAD_STARTS) + 1

    # The CLI checks the same way, on the store the server follows.
    runner, store = CliRunner(), str(home / "modelmon.db")
    for args, message in [
        (["start", "same", "--candidate", "9"], "error: candidate: model 'same' has no version 9"),
        (["start", "same", "--candidate", "1", "--steps", "10,ten,100"], "error: --steps: expected a comma-separated list"),
        (["start", "same", "--candidate", "1", "--margin", "errors"], "error: --margin: expected GATE=SHARE"),
        (["start", "same", "--candidate", "1", "--mode", "blue"], "error: mode must be one of shadow, canary"),
        (["promote", "same"], "error: no rollout of 'same' is running"),
        (["status", "nope"], "error: model 'nope' has no rollout"),
    ]:
        result = runner.invoke(app, ["rollout", *args, "--store", store, *(["--registry", str(rollout_registry)] if args[0] == "start" else [])])
        assert (result.exit_code, message in " ".join(result.output.split())) == (2, True), (args, result.output)
    assert status(url, "same")["id"] == before["id"]

    # One running rollout per model: a second start conflicts; abort hands the traffic back.
    assert start(url, "same", candidate=1).status_code == 200
    again = start(url, "same", candidate=1)
    assert again.status_code == 409 and "is running already" in again.json()["error"]
    aborted = httpx.post(f"{url}/v2/repository/models/same/rollout/abort")
    assert aborted.status_code == 200 and aborted.json()["state"] == "aborted"
    assert status(url, "same")["decisions"][-1]["decided_by"] == "http"


def test_a_restart_mid_rollout_resumes_it(rollout_server, rollout_registry, home, instances, tmp_path):
    url = rollout_server.url
    runner = CliRunner()
    result = runner.invoke(app, [  # version 2 serves `same` now; version 1 is the same model
        "rollout", "start", "same", "--candidate", "1", "--steps", "10,50,100", "--min-requests", "30",
        "--margin", "errors=0.15", "--margin", "latency=0.25", "--margin", "estimated_quality=0.08", "--margin", "drift=0.3",
        "--registry", str(rollout_registry), "--store", str(home / "modelmon.db"),
    ])
    assert result.exit_code == 0, result.output
    assert '"primary": 2' in result.output
    found = status(url, "same")
    for seed in range(100):  # on to the 50% step
        found, _ = drive(url, "same", instances, rows=20, until=set(), most=20, seed=seed)
        if found["step"] == 1 or found["state"] != "running":
            break
    assert (found["state"], found["step"]) == ("running", 1), found
    stop_process(rollout_server.process)
    # A new server on the same store and registry resumes at the 50% step.
    second = start_server(rollout_registry, tmp_path, *SERVER_ARGS, home=home)
    try:
        assert metric(second.url, "modelmon_rollout_share", {"model": "same"}) == 0.5
        found, answers = drive(second.url, "same", instances, rows=20, until={"promoted", "rolled_back"}, most=2000)
        assert found["state"] == "promoted", found
        assert {a["model_version"] for a in answers[:100]} == {"1", "2"}
        status_cli = runner.invoke(app, ["rollout", "status", "same", "--store", str(home / "modelmon.db")])
        assert status_cli.exit_code == 0 and '"state": "promoted"' in status_cli.output
        _, after = drive(second.url, "same", instances, rows=1, until=set(), most=10)
        assert {a["model_version"] for a in after} == {"1"}
    finally:
        stop_process(second.process)


def test_two_replicas_on_one_postgresql_store_follow_one_plan(rollout_registry, instances, tmp_path):
    """Two servers on one PostgreSQL store, traffic alternating between them: both route by
    the same plan, each step is decided once (by whichever replica saw the evidence first),
    and both end promoted."""
    with postgres_schema() as url:
        args = (*SERVER_ARGS, "--store", url, "--no-prediction-log")
        with ThreadPoolExecutor(2) as pool:  # started side by side: each start takes seconds
            replicas = list(pool.map(lambda _: start_server(rollout_registry, tmp_path, *args), range(2)))
        try:
            # Steps 25, 50, 100: each replica weighs its own half of the traffic, so a step
            # needs twice the requests of one server's; larger shares keep that short.
            response = start(replicas[0].url, "same", candidate=2, steps=[25, 50, 100], margins=MARGINS, min_requests=30)
            assert response.status_code == 200, response.text
            assert status(replicas[1].url, "same")["id"] == response.json()["id"]  # the other reads the same plan
            found: dict = {}
            for seed in range(200):
                for replica in replicas:
                    found, _ = drive(replica.url, "same", instances, rows=20, until=set(), most=20, seed=seed)
                if found["state"] != "running":
                    break
            assert found["state"] == "promoted", found
            actions = [(d["action"], d["from_step"], d["to_step"]) for d in found["decisions"]]
            assert actions == [("start", 0, 0), ("advance", 0, 1), ("advance", 1, 2)], found["decisions"]  # each step once
            for replica in replicas:
                # Each replica follows the store at its next check (0.1 s): wait for it to.
                for _ in range(200):
                    if metric(replica.url, "modelmon_rollout_state", {"model": "same", "state": "promoted"}) == 1.0:
                        break
                    time.sleep(0.05)
                _, after = drive(replica.url, "same", instances, rows=1, until=set(), most=5)
                assert {a["model_version"] for a in after} == {"2"}
            deciders = {d["decided_by"] for d in found["decisions"][1:]}
            print(f"\ntwo replicas: steps decided by {sorted(deciders)}")
        finally:
            for replica in replicas:
                stop_process(replica.process)
