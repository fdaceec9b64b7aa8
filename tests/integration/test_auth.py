"""Bearer tokens on the endpoints that change state, and on inference when asked: missing,
wrong and right token on each protected endpoint; open endpoints stay open."""

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from modelmon.stack.processes import stop_process
from tests.conftest import start_server

pytestmark = pytest.mark.slow
TOKEN = "s3cret-token-for-tests"
ROW = {"amount": 10.0, "items": 2, "channel": "web", "region": "north"}


def calls(url: str) -> dict[str, tuple[str, dict]]:
    return {
        "feedback": (f"{url}/v2/models/shop/feedback", {"labels": [{"id": "nope", "label": "gold"}]}),
        "infer": (f"{url}/v2/models/shop/infer", {"inputs": [
            {"name": k, "shape": [1], "datatype": "BYTES" if isinstance(v, str) else "FP64", "data": [v]}
            for k, v in ROW.items()]}),
        "predict": (f"{url}/v1/models/shop:predict", {"instances": [ROW]}),
    }


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("token") / "token"
    path.write_text(TOKEN + "\n")
    return path


@pytest.mark.parametrize("for_inference", [False, True])
def test_missing_wrong_and_right_token(registry_dir, tmp_path, token_file, for_inference):
    args = ["--api-token-file", str(token_file), "--drain-seconds", "0"]
    server = start_server(registry_dir, tmp_path, *args, *(["--token-for-inference"] if for_inference else []))
    protected = {"feedback", "infer", "predict"} if for_inference else {"feedback"}
    try:
        for endpoint, (url, body) in calls(server.url).items():
            missing = httpx.post(url, json=body)
            wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer not-the-token"})
            right = httpx.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"})
            if endpoint in protected:
                for response in (missing, wrong):
                    assert response.status_code == 401, (endpoint, response.text)
                    assert response.headers["www-authenticate"] == "Bearer"
                    assert TOKEN not in response.text and "Bearer <token>" in response.json()["error"]
            else:
                assert missing.status_code == 200 and wrong.status_code == 200
            assert right.status_code == 200, (endpoint, right.text)
        # Health, metadata and metrics never need the token.
        for path in ("/v2/health/ready", "/v2/models/shop", "/metrics", "/openapi.json"):
            assert httpx.get(f"{server.url}{path}").status_code == 200
        unauthorized = [
            s.value
            for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
            for s in family.samples
            if s.name == "modelmon_request_errors_total" and s.labels == {"model": "shop", "version": "1", "reason": "unauthorized"}
        ]
        assert unauthorized == [2 * len(protected)]
        assert TOKEN not in server.log.read_text()
    finally:
        stop_process(server.process)


def test_token_from_the_environment(registry_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MODELMON_API_TOKEN", TOKEN)
    server = start_server(registry_dir, tmp_path, "--drain-seconds", "0")
    try:
        url, body = calls(server.url)["feedback"]
        assert httpx.post(url, json=body).status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        # The rollout commands are admin operations, protected as the repository's are.
        abort = f"{server.url}/v2/repository/models/shop/rollout/abort"
        assert httpx.post(abort).status_code == 401
        assert httpx.post(abort, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 409  # none running
    finally:
        stop_process(server.process)
