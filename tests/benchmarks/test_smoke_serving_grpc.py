"""Smoke run of the gRPC serving benchmark: ``--quick`` measures REST, gRPC and the grpc.aio
ceiling at every level, every gRPC answer checked on the server."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.skipif(shutil.which("wrk") is None or shutil.which("h2load") is None,
                    reason="wrk and h2load are not installed (apt-get install wrk nghttp2-client)")
def test_serving_grpc_quick(tmp_path):
    out = tmp_path / "serving_grpc.json"
    result = subprocess.run([sys.executable, str(BENCHMARKS / "serving_grpc.py"), "--quick", "--out", str(out)],
                            capture_output=True, text=True, timeout=280)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    for protocol in ("rest", "grpc", "echo"):
        for level, x in data["summary"][protocol].items():
            assert x["requests_per_second"] > 0 and 0 < x["p50_ms"] <= x["p99_ms"], (protocol, level)
            assert x["server_cpu_us_per_request"] > 0, (protocol, level)
            assert x["errors"] == 0, (protocol, level)
    assert data["ratios"]["32"]["throughput_ratio"] > 0
    assert isinstance(data["targets"]["grpc_1.3x_rest_at_32"]["met"], bool)
    assert "| gRPC (raw contents) | 32 |" in result.stdout
    assert "serving_grpc.py --quick" not in (BENCHMARKS / "README.md").read_text()  # a quick run leaves the README alone
