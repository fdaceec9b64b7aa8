"""Soak: a long run at about 80% of the measured maximum throughput with everything on
(serving metrics, drift accounting and scoring, the prediction log), recording errors (must
be 0), the resident memory of the server and its prediction log writer over time (growth
after warm-up at most 5%), and whether the writer kept up (its backlog at the end, and how
long it took to store every prediction served).

    python benchmarks/soak.py                 # 10 minutes
    python benchmarks/soak.py --quick         # 20 seconds (the smoke test: --seconds 8 --probe-seconds 2)

Load comes from wrk (Debian package) with a Lua script that paces each connection, so the
rate holds near the target instead of saturating the server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from modelmon.stack.processes import free_port, stop_process, wait_for_http

RESULTS = Path(__file__).parent / "results" / "soak.json"
CONNECTIONS = 16


def register(registry: Path) -> list[float]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    import modelmon

    data = load_breast_cancer(as_frame=True).frame
    data.columns = [c.replace(" ", "_") for c in data.columns]
    features = data.drop(columns="target")
    model = LogisticRegression(max_iter=10000).fit(features, data.target)
    modelmon.register_model(model, name="soak", reference=data, target="target", validation=data, registry=registry)
    return features.iloc[0].tolist()


def lua_script(directory: Path, row: list[float], delay_ms: float) -> Path:
    body = json.dumps({"inputs": [{"name": "input-0", "shape": [1, len(row)], "datatype": "FP64", "data": row}]})
    path = directory / "soak.lua"
    pacing = f"function delay()\n  return {delay_ms:.3f}\nend\n" if delay_ms > 0 else ""
    path.write_text(
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body)}\n{pacing}"
    )
    return path


def run_wrk(url: str, script: Path, seconds: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(script), "--latency", url],
        capture_output=True, text=True, check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests_per_second": rps,
        "non_2xx": float(non_2xx.group(1)) if non_2xx else 0.0,
        "socket_errors": float(sum(map(int, socket_errors.groups()))) if socket_errors else 0.0,
    }


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the prediction log's writer)."""
    children = (Path(f"/proc/{pid}/task/{pid}/children").read_text().split())
    total = 0
    for p in [pid, *map(int, children)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def prediction_log_state(url: str) -> dict[str, float]:
    """The prediction log's counters and spool, from /metrics."""
    text = httpx.get(f"{url}/metrics").text
    state = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "modelmon_prediction_log_rows_total":
                state[sample.labels["outcome"]] = sample.value
            elif sample.name == "modelmon_prediction_log_spool_files":
                state["spool_files"] = sample.value
            elif sample.name == "modelmon_requests_total" and sample.labels.get("code") == "200":
                state["served"] = state.get("served", 0.0) + sample.value
    return state


def server_errors(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "modelmon_request_errors_total")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seconds", type=int, default=None, help="the soak's length [default: 600; --quick: 20]")
    parser.add_argument("--probe-seconds", type=int, default=None,
                        help="each of the two probes before it (the maximum, then the paced rate) [default: 15; --quick: 5]")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install --no-install-recommends wrk")
    seconds, warmup, probe = (20, 5, 5) if args.quick else (600, 60, 15)
    seconds, probe = args.seconds or seconds, args.probe_seconds or probe
    if args.quick:  # a shorter quick soak (the smoke test's) still has samples after its warm-up
        warmup = min(warmup, seconds // 2)
    work = Path(tempfile.mkdtemp(prefix="modelmon-soak-"))
    row = register(work / "registry")
    port = free_port()
    env = {**os.environ, "MODELMON_HOME": str(work / "home")}
    server = subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", "serve", "--registry", str(work / "registry"), "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=(work / "server.log").open("wb"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/v2/health/ready", 60, server)
        infer = f"{url}/v2/models/soak/infer"
        maximum = run_wrk(infer, lua_script(work, row, 0), probe)["requests_per_second"]
        target = 0.8 * maximum
        # Each connection waits between requests so that all of them together make `target`:
        # a first guess from the latency at full load, then one correction from a probe.
        delay_ms = max(0.0, 1000 * CONNECTIONS * (1 / target - 1 / maximum))
        probed = run_wrk(infer, lua_script(work, row, delay_ms), probe)["requests_per_second"]
        delay_ms = max(0.0, delay_ms + 1000 * CONNECTIONS * (1 / target - 1 / probed))
        loader = subprocess.Popen(
            ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(lua_script(work, row, delay_ms)), "--latency", infer],
            stdout=subprocess.PIPE, text=True,
        )
        started, samples = time.monotonic(), []
        while loader.poll() is None:
            samples.append((round(time.monotonic() - started, 1), round(rss_mib(server.pid), 1)))
            time.sleep(1 if args.quick else 5)
        out = loader.stdout.read()
        at_end = prediction_log_state(url)
        caught_up = time.monotonic()
        while time.monotonic() - caught_up < 60:
            state = prediction_log_state(url)
            if state.get("written", 0) + state.get("replayed", 0) >= state.get("served", 0):
                break
            time.sleep(0.2)
        caught_up = round(time.monotonic() - caught_up, 1)
        rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
        socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
        after_warmup = [rss for t, rss in samples if t >= warmup]
        first, last = after_warmup[: max(1, len(after_warmup) // 10)], after_warmup[-max(1, len(after_warmup) // 10) :]
        growth = (sum(last) / len(last)) / (sum(first) / len(first)) - 1
        result = {
            "seconds": seconds,
            "max_requests_per_second": maximum,
            "target_requests_per_second": round(target, 1),
            "achieved_requests_per_second": rps,
            "http_errors": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": int(sum(map(int, socket_errors.groups()))) if socket_errors else 0,
            "server_counted_errors": server_errors(url),
            "rss_growth_after_warmup": round(growth, 4),
            "prediction_log_at_end": at_end,
            "prediction_log_caught_up_seconds": caught_up,
            "prediction_log_after": state,
            "rss_mib": samples,
        }
    finally:
        stop_process(server)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    ok_errors = result["http_errors"] == 0 and result["socket_errors"] == 0 and result["server_counted_errors"] == 0
    print(f"max {maximum:.0f} req/s; soak at {rps:.0f} req/s (target {target:.0f}) for {seconds} s")
    print(f"errors: http {result['http_errors']}, socket {result['socket_errors']}, server {result['server_counted_errors']:.0f}"
          f" -> {'OK' if ok_errors else 'FAIL'}")
    print(f"RSS after warm-up: {first[0]:.1f} -> {last[-1]:.1f} MiB, growth {growth:+.1%} -> {'OK' if growth <= 0.05 else 'FAIL'}")
    print(f"prediction log: {at_end.get('spool_files', 0):.0f} segments waiting when the load ended; every prediction "
          f"stored {caught_up} s later")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
