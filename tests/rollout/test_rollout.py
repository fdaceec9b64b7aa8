"""Safe rollouts end to end: real servers following plans in their SQL store.

One server (module-scoped) serves four models, each with a primary (version 1) and a
candidate (version 2): ``same`` (the same model again), ``inverted`` (trained on inverted
labels), ``faulty`` (fails on inputs whose first feature is high) and ``resume``. The
store is the server's SQLite file; the CLI reaches the same file. Gates are evaluated
every 0.1 s; margins are wider and step minimums smaller than the defaults so that a
decision takes hundreds of requests, not tens of thousands.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LogisticRegression
from typer.testing import CliRunner

from modelmon.cli import app
from modelmon.registry import register_model
from modelmon.stack.processes import stop_process
from tests.conftest import ServerProcess, start_server
from tests.rollout.models import FaultyClassifier

pytestmark = pytest.mark.slow
#: Margins for tests: a step passes on a few hundred requests (docs/rollout.md explains them).
MARGINS = {"errors": 0.15, "latency": 0.25, "estimated_quality": 0.08}
SERVER_ARGS = ("--drain-seconds", "0", "--rollout-check-seconds", "0.1")


@pytest.fixture(scope="module")
def rollout_registry(tmp_path_factory, cancer_frame: pd.DataFrame, cancer_model: LogisticRegression) -> Path:
    root = tmp_path_factory.mktemp("rollout-registry")
    X, y = cancer_frame.drop(columns="target"), cancer_frame["target"]
    inverted = LogisticRegression(max_iter=10000).fit(X, 1 - y)
    limit = float(X.iloc[:, 0].quantile(0.7))
    faulty = FaultyClassifier(cancer_model, limit=limit).fit(X, y)
    safe = cancer_frame[X.iloc[:, 0] <= limit]  # the rows the faulty model answers
    candidates = {"same": (cancer_model, cancer_frame), "inverted": (inverted, cancer_frame),
                  "faulty": (faulty, safe), "resume": (cancer_model, cancer_frame)}
    for name, (candidate, validation) in candidates.items():
        register_model(cancer_model, name=name, reference=cancer_frame, target="target", validation=cancer_frame,
                       registry=root, convert_to_onnx=False)
        register_model(candidate, name=name, reference=cancer_frame, target="target", validation=validation,
                       registry=root, convert_to_onnx=False)
    return root


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("rollout-home")


@pytest.fixture(scope="module")
def rollout_server(rollout_registry: Path, home: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    handle = start_server(rollout_registry, tmp_path_factory.mktemp("rollout-logs"), *SERVER_ARGS, home=home)
    yield handle
    stop_process(handle.process)


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


def test_an_identical_candidate_is_promoted_through_every_step(rollout_server, instances):
    url = rollout_server.url
    response = start(url, "same", candidate=2, mode="canary", steps=[10, 50, 100], margins=MARGINS, min_requests=30)
    assert response.status_code == 200, response.text
    assert (response.json()["primary"], response.json()["share"]) == (1, 0.1)
    found, answers = drive(url, "same", instances, rows=20, until={"promoted", "rolled_back"}, most=4000)
    assert found["state"] == "promoted", found
    advances = [d for d in found["decisions"] if d["action"] == "advance"]
    assert [(d["from_step"], d["to_step"]) for d in advances] == [(0, 1), (1, 2)]
    for decision in advances:  # each step passed on every gate, with its evidence recorded
        gates = decision["evidence"]["gates"]
        assert set(gates) == {"errors", "latency", "estimated_quality"}
        assert all(g["verdict"] == "pass" and g["high"] <= g["margin"] for g in gates.values()), gates
        assert decision["evidence"]["step_requests"] >= 30
    versions = [a["model_version"] for a in answers]
    assert {"1", "2"} <= set(versions)  # both answered during the canary
    print(f"\nidentical candidate promoted after {len(answers)} requests")
    # Promoted: every unversioned request is the candidate's now, and the metrics say so.
    _, after = drive(url, "same", instances, rows=1, until=set(), most=20)
    assert {a["model_version"] for a in after} == {"2"}
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


def test_a_restart_mid_rollout_resumes_it(rollout_server, rollout_registry, home, instances, tmp_path):
    url = rollout_server.url
    runner = CliRunner()
    result = runner.invoke(app, [
        "rollout", "start", "resume", "--candidate", "2", "--steps", "10,50,100", "--min-requests", "30",
        "--margin", "errors=0.15", "--margin", "latency=0.25", "--margin", "estimated_quality=0.08",
        "--registry", str(rollout_registry), "--store", str(home / "modelmon.db"),
    ])
    assert result.exit_code == 0, result.output
    found, _ = drive(url, "resume", instances, rows=20, until={"promoted", "rolled_back"}, most=300)
    deadline = time.monotonic() + 30
    while found["step"] == 0 and time.monotonic() < deadline:  # on to the 50% step
        found, _ = drive(url, "resume", instances, rows=20, until=set(), most=20, seed=len(str(deadline)))
    assert (found["state"], found["step"]) == ("running", 1), found
    stop_process(rollout_server.process)
    # A new server on the same store and registry resumes at the 50% step.
    second = start_server(rollout_registry, tmp_path, *SERVER_ARGS, home=home)
    try:
        assert metric(second.url, "modelmon_rollout_share", {"model": "resume"}) == 0.5
        found, answers = drive(second.url, "resume", instances, rows=20, until={"promoted", "rolled_back"}, most=2000)
        assert found["state"] == "promoted", found
        assert {a["model_version"] for a in answers[:100]} == {"1", "2"}
        status_cli = runner.invoke(app, ["rollout", "status", "resume", "--store", str(home / "modelmon.db")])
        assert status_cli.exit_code == 0 and '"state": "promoted"' in status_cli.output
    finally:
        stop_process(second.process)
