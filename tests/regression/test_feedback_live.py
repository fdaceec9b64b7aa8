"""A regressor's labels against a live server, on SQLite and PostgreSQL, by hand-worked cases:
the first label for an id wins within a request as across requests (the store and the sums
hold it; the repeat is reported and counted as a duplicate); every malformed item is a 400
naming the item and the key, counted by reason, never a 500 or 503; and ``modelmon
feedback FILE`` checks every row before sending, naming the bad ones, and sends nothing of
a file with one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sklearn.linear_model import LinearRegression
from sqlalchemy import select

from modelmon.registry import register_model
from modelmon.stack.processes import stop_process
from modelmon.store import close_store, open_store
from modelmon.store.predictions import labels
from tests.conftest import start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def price_registry(tmp_path_factory) -> Path:
    """price = 10 a + 1: a prediction is exactly 10 a + 1, so each error is worked by hand."""
    root = tmp_path_factory.mktemp("registry")
    x = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0]})
    register_model(LinearRegression().fit(x, 10 * x.a + 1), name="price", registry=root, convert_to_onnx=False)
    return root


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for s in family.samples:
            if s.labels.get("model") == "price":
                out[(s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("model", "version"))))] = s.value
    return out


def predict(url: str, values: list[float]) -> list[str]:
    response = httpx.post(f"{url}/v1/models/price:predict", json={"instances": [{"a": a} for a in values]})
    assert response.status_code == 200, response.text
    return [p["id"] for p in response.json()["predictions"]]


def post(url: str, body: object) -> httpx.Response:
    return httpx.post(f"{url}/v2/models/price/feedback", json=body)


def stored(store_url: str) -> dict[str, str]:
    store = open_store(store_url)
    try:
        with store.read() as connection:
            return {r.prediction_id: r.label for r in connection.execute(select(labels.c.prediction_id, labels.c.label))}
    finally:
        close_store(store_url)


def test_first_label_wins_and_bad_items_are_400(price_registry, tmp_path, store_url):
    server = start_server(price_registry, tmp_path, "--store", store_url, "--drain-seconds", "0")
    try:
        x, y, z = predict(server.url, [1.0, 2.0, 3.0])  # predicted 11, 21, 31

        # Within one request: 215 is stored and counted, the repeat 99 is the duplicate.
        body = post(server.url, {"labels": [{"id": x, "label": 215}, {"id": x, "label": 99}, {"id": y, "label": 20.5}]}).json()
        assert (body["matched"], body["duplicate"], body["unknown"], body["duplicate_ids"]) == (2, 1, 0, [x])
        # Across requests: the first (215) stays.
        body = post(server.url, {"labels": [{"id": x, "label": 7}]}).json()
        assert (body["matched"], body["duplicate"]) == (0, 1)
        seen = scrape(server.url)
        errors = [11 - 215, 21 - 20.5]  # predicted minus true
        assert seen[("modelmon_regression_labelled_total", ())] == 2
        assert seen[("modelmon_regression_error_total", ())] == sum(errors) == -203.5
        assert seen[("modelmon_regression_target_total", ())] == 215 + 20.5
        assert seen[("modelmon_feedback_total", (("outcome", "duplicate"),))] == 2
        assert seen[("modelmon_feedback_total", (("outcome", "matched"),))] == 2

        huge = 10**400
        cases = [  # (body, words the error must hold)
            ({"labels": [{"id": z, "label": huge}]}, ["labels[0]", repr(z), "not a finite number"]),
            ({"labels": [{"id": z, "label": "x" * 100_000}]}, ["labels[0]", "not a number", "100002 characters"]),
            ({"labels": [{"id": z, "label": {"v": [1]}}]}, ["labels[0]", "not a number"]),
            ({"labels": [{"id": z, "label": 3.0}, {"id": z}]}, ['labels[1]: missing "label"', '"label": <number>', "regressor"]),
            ({"labels": [{"label": 3.0}]}, ['labels[0]: missing "id"']),
            ({"labels": [{"id": 17, "label": 3.0}]}, ["labels[0].id must be a string", "17"]),
            ({"labels": [{"id": "", "label": 3.0}]}, ["labels[0].id", "is empty"]),
            ({"labels": [{"id": "a\x00b", "label": 3.0}]}, ["labels[0].id", "NUL"]),
            ({"labels": [3.0]}, ["labels[0] is 3.0, not an object", "<number>"]),
            ({"labels": []}, ['"label": <number>', "regressor"]),
        ]
        for request, words in cases:
            response = post(server.url, request)
            assert response.status_code == 400, (request, response.text)
            message = response.json()["error"]
            assert all(w in message for w in words), (words, message)
            assert len(message) < 400, message  # a megabyte label is not echoed back
        # A lone surrogate cannot be written as UTF-8 (httpx would not send it): raw bytes.
        raw = b'{"labels": [{"id": "\\ud800", "label": 1}]}'  # the JSON escape, not the character
        response = httpx.post(f"{server.url}/v2/models/price/feedback", content=raw, headers={"content-type": "application/json"})
        assert response.status_code == 400 and "lone surrogate" in response.json()["error"], response.text

        seen = scrape(server.url)
        reasons = {dict(k[1])["reason"]: v for k, v in seen.items() if k[0] == "modelmon_request_errors_total"}
        assert reasons["invalid_label"] == 3 and reasons["malformed_request"] == 8
        assert reasons["internal_error"] == 0 and reasons["store_unavailable"] == 0
        # Negative zero is a number like any other: stored as written, its error exact.
        assert post(server.url, {"labels": [{"id": z, "label": -0.0}]}).json()["matched"] == 1
        assert scrape(server.url)[("modelmon_regression_error_total", ())] == -203.5 + 31
    finally:
        stop_process(server.process)
    assert stored(store_url) == {x: "215.0", y: "20.5", z: "-0.0"}


def run_feedback(url: str, file: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelmon.cli", "feedback", str(file), "--model", "price", "--url", url, *extra]
    src = str(Path(__file__).parents[2] / "src")  # this checkout's code, a worktree's too
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, "COLUMNS": "200", "PYTHONPATH": src})


def test_feedback_command_checks_every_row_first(price_registry, tmp_path):
    store_url = str(tmp_path / "store.db")
    server = start_server(price_registry, tmp_path, "--store", store_url, "--drain-seconds", "0")
    try:
        ids = predict(server.url, [1.0, 2.0, 3.0, 4.0])  # predicted 11, 21, 31, 41
        bad = tmp_path / "bad.csv"
        bad.write_text(f"id,label\n{ids[0]},12\n{ids[1]},\n{ids[2]},abc\n,5\n{ids[3]},inf\n{ids[3]},1e999\n")
        result = run_feedback(server.url, bad)
        assert result.returncode == 2, result.stderr
        err = " ".join(result.stderr.split())  # unwrapped
        assert "5 of 6 rows are bad" in err and "nothing was sent" in err and "row N is line N+1" in err
        for words in ("row 2: empty label", "row 3: label 'abc' is not a number (the model is a regressor)",
                      "row 4: empty id", "row 5: label 'inf' is not a finite number", "row 6: label '1e999' is not a finite"):
            assert words in err, (words, err)
        assert "row 1:" not in err
        assert scrape(server.url)[("modelmon_feedback_total", (("outcome", "matched"),))] == 0

        # Text that reads as a number is one: 12 and " 3.5 " go as JSON numbers.
        good = tmp_path / "good.csv"
        good.write_text(f"id,label\n{ids[0]},12\n{ids[1]}, 3.5 \n")
        result = run_feedback(server.url, good)
        assert result.returncode == 0, result.stderr
        assert "matched 2, duplicate 0, unknown id 0" in result.stdout
        seen = scrape(server.url)
        assert seen[("modelmon_regression_error_total", ())] == (11 - 12) + (21 - 3.5)

        # The server refuses a chunk (an id with a NUL): the real rows are named, and what
        # was recorded before it.
        nul = tmp_path / "nul.csv"
        nul.write_text(f"id,label\n{ids[2]},30\nno-such-id,1\n{ids[3]}\x00,40\n{ids[3]},40\n")
        result = run_feedback(server.url, nul, "--chunk", "2")
        assert result.returncode == 2
        err = " ".join(result.stderr.split())
        assert "rows 3-4 refused (labels[i] is row 3+i): 400 labels[0].id" in err, err
        assert "rows 1-2 were sent and recorded (matched 1, duplicate 0, unknown id 1), nothing from row 3 on was recorded" in err
    finally:
        stop_process(server.process)
    assert stored(store_url) == {ids[0]: "12.0", ids[1]: "3.5", ids[2]: "30.0"}


def test_feedback_command_sends_the_api_token(price_registry, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELMON_API_TOKEN", "s3cret-token")  # the server's (start_server passes the environment on)
    server = start_server(price_registry, tmp_path, "--drain-seconds", "0")
    try:
        (prediction_id,) = predict(server.url, [1.0])
        labels_file = tmp_path / "labels.csv"
        labels_file.write_text(f"id,label\n{prediction_id},12\n")
        monkeypatch.delenv("MODELMON_API_TOKEN")
        refused = run_feedback(server.url, labels_file)
        assert refused.returncode == 2 and "401" in refused.stderr and "nothing from row 1 on was recorded" in refused.stderr, refused.stderr
        (tmp_path / "token").write_text("s3cret-token\n")
        result = run_feedback(server.url, labels_file, "--api-token-file", str(tmp_path / "token"))
        assert result.returncode == 0 and "matched 1, duplicate 0, unknown id 0" in result.stdout, result.stderr
    finally:
        stop_process(server.process)
