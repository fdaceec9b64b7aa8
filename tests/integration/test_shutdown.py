"""SIGTERM: readiness goes false first, requests keep being served during the drain,
in-flight requests complete (over HTTP and gRPC), then the process exits cleanly."""

import signal
import threading
import time

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc

from modelmon.registry import register_model
from modelmon.stack.processes import free_port, stop_process
from tests.conftest import start_server
from tests.slow_model import SlowClassifier

pytestmark = pytest.mark.slow


def test_sigterm_drains_then_exits(tmp_path):
    model = SlowClassifier(delay=0.8).fit(np.zeros((4, 2)), [0, 1, 0, 1])
    register_model(model, name="slow", registry=tmp_path / "reg", convert_to_onnx=False)
    grpc_port = free_port()
    server = start_server(tmp_path / "reg", tmp_path, "--drain-seconds", "1.5", "--max-batch-size", "1",
                          "--grpc-port", str(grpc_port))
    try:
        results: list[int] = []

        def call() -> None:
            body = {"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP64", "data": [1, 2]}]}
            results.append(httpx.post(f"{server.url}/v2/models/slow/infer", json=body, timeout=30).status_code)

        grpc_client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")

        def call_grpc() -> None:  # the same over V2 gRPC: its server drains with HTTP's
            tensor = triton_grpc.InferInput("x", [1, 2], "FP64")
            tensor.set_data_from_numpy(np.array([[1.0, 2.0]]))
            grpc_client.infer("slow", [tensor], client_timeout=30)
            results.append(200)

        # Four requests queue behind each other (batch size 1): the last finishes ~3.2 s
        # from now, after the drain has ended and the listeners have closed.
        threads = [threading.Thread(target=call) for _ in range(3)] + [threading.Thread(target=call_grpc)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 503
        assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
        assert not grpc_client.is_server_ready() and grpc_client.is_server_live()
        assert not grpc_client.is_model_ready("slow")  # answered ready=false, counted as REST counts its 503
        for t in threads:
            t.join(30)
        assert results == [200, 200, 200, 200]
        assert server.process.wait(30) == 0
    finally:
        stop_process(server.process)
