"""SIGTERM: readiness goes false first, requests keep being served during the drain,
in-flight requests complete, then the process exits cleanly."""

import signal
import threading
import time

import httpx
import numpy as np
import pytest

from modelmon.registry import register_model
from modelmon.stack.processes import stop_process
from tests.conftest import start_server
from tests.slow_model import SlowClassifier

pytestmark = pytest.mark.slow


def test_sigterm_drains_then_exits(tmp_path):
    model = SlowClassifier(delay=0.8).fit(np.zeros((4, 2)), [0, 1, 0, 1])
    register_model(model, name="slow", registry=tmp_path / "reg", convert_to_onnx=False)
    server = start_server(tmp_path / "reg", tmp_path, "--drain-seconds", "1.5", "--max-batch-size", "1")
    try:
        results: list[int] = []

        def call() -> None:
            body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
            results.append(httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=30).status_code)

        # Three requests queue behind each other (batch size 1): the last finishes ~2.4 s
        # from now, after the drain has ended and the listener has closed.
        threads = [threading.Thread(target=call) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
        for t in threads:
            t.join(30)
        assert results == [200, 200, 200]
        assert server.process.wait(30) == 0
    finally:
        stop_process(server.process)
