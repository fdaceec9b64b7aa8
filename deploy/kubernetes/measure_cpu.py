"""How many requests one replica serves per core: the sizing behind docs/deploy.md.

    python deploy/kubernetes/measure_cpu.py [--seconds 5] [--connections 8] [--rows 1]

Registers a small scikit-learn pipeline (numeric and categorical features, three classes),
starts one ``modelmon serve`` with everything on (metrics, drift, the prediction log on
SQLite), loads it with ``wrk`` (Debian package) and reads the CPU time the server and its
writer process used from /proc. CPU seconds per request do not depend much on what else the
machine runs (wall-clock throughput does), so requests per CPU-second is the figure to size
replicas with; the wall-clock rate and the cores the replica used are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelmon.registry import register_model
from modelmon.stack.processes import free_port, stop_process, wait_for_http

LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[{body}]==]
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {{"requests":%d,"errors":%d,"p50_us":%d,"p99_us":%d}}\\n', summary.requests,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.status + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def shop(n: int = 600) -> pd.DataFrame:
    rng = np.random.default_rng(7)
    frame = pd.DataFrame({"amount": rng.gamma(2.0, 30.0, n), "items": rng.integers(1, 10, n),
                          "channel": rng.choice(["web", "app", "store"], n), "region": rng.choice(["north", "south", "east"], n)})
    score = frame.amount / 60 + (frame.channel == "app") * 1.5
    frame["segment"] = np.where(score > 2.2, "gold", np.where(score > 1.0, "silver", "bronze"))
    return frame


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its children that are alive (the writer)."""
    ticks = os.sysconf("SC_CLK_TCK")
    # Children of every thread: the writer is started from the prediction log's thread.
    pids = {pid, *(int(c) for task in Path(f"/proc/{pid}/task").iterdir() for c in (task / "children").read_text().split())}
    total = 0
    for p in pids:
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--rows", type=int, default=1, help="rows per request")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        frame = shop()
        model = make_pipeline(make_column_transformer((StandardScaler(), ["amount", "items"]),
                                                      (OneHotEncoder(handle_unknown="ignore"), ["channel", "region"])),
                              LogisticRegression(max_iter=1000)).fit(frame.drop(columns="segment"), frame.segment)
        register_model(model, name="shop", reference=frame, target="segment", validation=frame, registry=work / "registry")
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "modelmon.cli", "serve", "--registry", str(work / "registry"),
                                   "--port", str(port)], env={**os.environ, "MODELMON_HOME": str(work / "home")},
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_http(f"{url}/v2/health/ready", timeout=120, process=server)
            body = json.dumps({"instances": frame.drop(columns="segment").iloc[: args.rows].to_dict("records")})
            assert httpx.post(f"{url}/v1/models/shop:predict", content=body).status_code == 200
            script = work / "load.lua"
            script.write_text(LUA.format(body=body))
            command = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "-s", str(script), f"{url}/v1/models/shop:predict"]
            subprocess.run([*command[:3], "-d2s", *command[4:]], capture_output=True, check=True)  # warm-up
            cpu, wall = cpu_seconds(server.pid), time.monotonic()
            out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            cpu, wall = cpu_seconds(server.pid) - cpu, time.monotonic() - wall
            match = re.search(r"^WRKJSON (.*)$", out, re.M)
            assert match, out
            result = json.loads(match.group(1))
            load = os.getloadavg()[0]
        finally:
            stop_process(server)
    print(json.dumps({
        "rows_per_request": args.rows, "connections": args.connections, "seconds": args.seconds,
        "requests": result["requests"], "errors": result["errors"],
        "requests_per_second": round(result["requests"] / wall, 1),
        "server_cpu_seconds": round(cpu, 2), "cores_used": round(cpu / wall, 2),
        "requests_per_cpu_second": round(result["requests"] / cpu, 1),
        "p50_ms": result["p50_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
        "cores": os.cpu_count(), "load_average_1min": round(load, 1),
    }, indent=1))


if __name__ == "__main__":
    main()
