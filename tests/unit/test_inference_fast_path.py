"""Which requests the inference fast path takes; everything else must reach Starlette."""

import pytest

from modelmon.serving.app import InferenceFastPath


def scope(path: str, method: str = "POST", type_: str = "http") -> dict:
    return {"type": type_, "method": method, "path": path}


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v2/models/churn/infer", {"name": "churn"}),
        ("/v2/models/churn/versions/3/infer", {"name": "churn", "version": "3"}),
        ("/v2/models/churn/versions/latest/infer", {"name": "churn", "version": "latest"}),
    ],
)
def test_inference_paths_are_taken(path, params):
    assert InferenceFastPath.match(scope(path)) == params


@pytest.mark.parametrize(
    "request_scope",
    [
        scope("/v2/models/churn/infer", method="GET"),  # Starlette answers 405
        scope("/v2/models/churn/infer", type_="websocket"),
        scope("/v2/models//infer"),
        scope("/v2/models/infer"),
        scope("/v2/models/churn/ready"),
        scope("/v2/models/churn/versions//infer"),
        scope("/v2/models/churn/versions/3/extra/infer"),
        scope("/v2/models/churn/other/3/infer"),
        scope("/v2/models/churn/feedback"),
        scope("/v1/models/churn:predict"),
    ],
)
def test_other_requests_go_to_starlette(request_scope):
    assert InferenceFastPath.match(request_scope) is None
