"""What a shadow rollout costs the callers: the primary's latency with and without a shadow
candidate receiving a copy of every request (docs/rollout.md).

The model is scikit-learn ``LogisticRegression(max_iter=10000)`` on ``load_breast_cancer()``
registered twice (version 1 the primary, version 2 the candidate: the same model), served by
one ``modelmon serve``. One request is one row, sent by ``--clients`` threads over keep-alive
connections, ``--requests`` per phase. Phases alternate, ``--rounds`` times each: *off* (no
running rollout) and *shadow* (a shadow rollout of version 2 copying all traffic, which
never promotes during the phase). Reported: the medians over rounds of client-side p50 and
p99 latency and throughput, their ratios shadow / off, and the last round's shadow copies by
outcome. A copy is shed while the model serves more than one request (docs/rollout.md), so at
saturation most copies are shed and the ratios should stay within noise of 1; the copies
answered are the ones made in the primary's idle moments.

    python benchmarks/rollout_shadow.py                # about a minute
    python benchmarks/rollout_shadow.py --quick        # seconds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def prepare(registry: Path) -> list[dict]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    from modelmon.registry import register_model

    frame = load_breast_cancer(as_frame=True).frame
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    model = LogisticRegression(max_iter=10000).fit(frame.drop(columns="target"), frame["target"])
    for _ in range(2):
        register_model(model, name="cancer", reference=frame, target="target", validation=frame, registry=registry,
                       convert_to_onnx=False)
    return frame.drop(columns="target").to_dict("records")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def phase(url: str, rows: list[dict], clients: int, requests: int) -> dict[str, float]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        mine = []
        with httpx.Client(timeout=30) as http:
            for _ in range(requests // clients):
                body = {"instances": [rows[int(rng.integers(len(rows)))]]}
                started = time.perf_counter()
                response = http.post(f"{url}/v1/models/cancer:predict", json=body)
                mine.append(time.perf_counter() - started)
                assert response.status_code == 200 and response.json()["model_version"] == "1", response.text
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    values = np.array(latencies) * 1000
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99)),
            "requests_per_second": len(values) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 300 requests")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "rollout_shadow.json")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 2, 300
    work = Path(tempfile.mkdtemp(prefix="modelmon-shadow-"))
    rows = prepare(work / "registry")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODELMON_HOME": str(work / "home"), "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    server = subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", "serve", "--registry", str(work / "registry"), "--port", str(port),
         "--model", "cancer:1", "--drain-seconds", "0", "--no-prediction-log"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{url}/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        phase(url, rows, args.clients, 200)  # warm-up, before either phase is measured
        results: dict[str, list[dict[str, float]]] = {"off": [], "shadow": []}
        for _ in range(args.rounds):
            results["off"].append(phase(url, rows, args.clients, args.requests))
            # A shadow of the same model; it never promotes during the phase (min_requests).
            start = httpx.post(f"{url}/v2/repository/models/cancer/rollout/start",
                               json={"candidate": 2, "primary": 1, "mode": "shadow", "gates": ["errors"],
                                     "min_requests": 10**9}, timeout=30)
            assert start.status_code == 200, start.text
            results["shadow"].append(phase(url, rows, args.clients, args.requests))
            copies = httpx.get(f"{url}/metrics").text
            assert httpx.post(f"{url}/v2/repository/models/cancer/rollout/abort", timeout=30).status_code == 200
        summary = {k: {m: statistics.median(r[m] for r in v) for m in ("p50_ms", "p99_ms", "requests_per_second")}
                   for k, v in results.items()}
        ratios = {m: summary["shadow"][m] / summary["off"][m] for m in ("p50_ms", "p99_ms", "requests_per_second")}
        dropped = [line for line in copies.splitlines() if line.startswith("modelmon_rollout_shadow_total{")]
        report = {"rounds": args.rounds, "requests": args.requests, "clients": args.clients, "cpus": os.cpu_count(),
                  "summary": summary, "ratios_shadow_over_off": ratios, "last_round_shadow_counters": dropped,
                  "raw": results}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2) + "\n")
        print("| phase | p50 ms | p99 ms | requests/s |\n|---|---|---|---|")
        for key, values in summary.items():
            print(f"| {key} | {values['p50_ms']:.2f} | {values['p99_ms']:.2f} | {values['requests_per_second']:.0f} |")
        print(f"| shadow / off | {ratios['p50_ms']:.2f} | {ratios['p99_ms']:.2f} | {ratios['requests_per_second']:.2f} |")
        print("\n".join(dropped))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
