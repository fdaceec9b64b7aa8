"""modelmon over V2 gRPC against modelmon over V2 REST, on one server (issue 21).

The model and the row are serving.py's: scikit-learn ``LogisticRegression(max_iter=10000)`` on
``load_breast_cancer()`` (30 features), registered with its reference and validation data,
served with everything on (monitoring, drift accounting, prediction log), one row per request.
One ``modelmon serve --grpc-port`` process answers both protocols, so both meet the same
server state. At each concurrency (1, 8, 32) REST is loaded with ``wrk`` (serving.py's V2
JSON body) and gRPC with ``h2load`` (nghttp2's HTTP/2 load generator, Debian package
``nghttp2-client``; C, one thread, as wrk), which posts one framed ``ModelInferRequest``
holding the row in ``raw_input_contents`` (what tritonclient sends) on C connections of one
stream each (as wrk's C connections). The order of the two alternates per level and round;
the server settles between loads; medians over rounds; the gRPC/REST ratio is taken within
each round.

h2load cannot read a gRPC status (it travels in trailers, after HTTP's 200), so every
gRPC answer is checked on the server instead: ``modelmon_requests_total{endpoint="grpc_infer"}``
must grow by the requests h2load completed (plus at most one in flight per connection when it
stopped) with code 200; errors are its other codes' growth.
Latency percentiles come from h2load's per-request log. The server's CPU time per request
is reported too: it depends less on the shared machine's other work than requests/s.

A third row is the ceiling of a Python gRPC server on this machine: a grpc.aio server on
uvloop (as modelmon's) whose ModelInfer reads nothing and answers an empty response, loaded
by h2load the same way.

    python benchmarks/serving_grpc.py            # 3 rounds, 10 s per level and protocol (about 3 minutes)
    python benchmarks/serving_grpc.py --quick    # 1 round, 1 s each: shows that it works

Writes benchmarks/results/serving_grpc.json and (full runs) its section of benchmarks/README.md.
MLServer's gRPC is not compared yet.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serving  # noqa: E402  (the server, wrk and settling helpers of the main benchmark)

RESULTS = HERE / "results" / "serving_grpc.json"
README_MARKER = "serving-grpc"
LEVELS = (1, 8, 32)
INFER_RPC = "/inference.GRPCInferenceService/ModelInfer"


def grpc_body(row: list[float]) -> bytes:
    """One ModelInferRequest as it travels in a gRPC message: not compressed (0), its
    length (4 bytes, big-endian), the message."""
    from modelmon.serving.grpc_v2 import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=serving.MODEL_NAME)
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, len(row)])
    request.raw_input_contents.append(np.asarray(row, dtype="<f8").tobytes())
    message = request.SerializeToString()
    return b"\0" + struct.pack(">I", len(message)) + message


def grpc_answered(port: int) -> tuple[float, float]:
    """The server's counts of gRPC inference requests answered OK, and not OK (any model)."""
    status, body = serving.http_request(port, "GET", "/metrics", timeout=10)
    assert status == 200, status
    ok = failed = 0.0
    for match in re.finditer(r'^modelmon_requests_total\{code="(\d+)",endpoint="grpc_infer",[^}]*\} (\S+)$', body.decode(), re.M):
        if match.group(1) == "200":
            ok += float(match.group(2))
        else:
            failed += float(match.group(2))
    return ok, failed


def h2load(http_port: int, grpc_port: int, body: Path, connections: int, seconds: float, log: Path) -> dict:
    """One h2load run against ModelInfer, checked against the server's own count."""
    before = grpc_answered(http_port)
    log.unlink(missing_ok=True)
    command = ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{max(1, round(seconds))}",
               "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body),
               "--log-file", str(log), f"http://127.0.0.1:{grpc_port}{INFER_RPC}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    measured = parse_h2load(out, log)
    done = measured["requests"]
    after = grpc_answered(http_port)
    ok, failed = after[0] - before[0], after[1] - before[1]
    # The server may also have answered the requests in flight when h2load stopped (at most
    # one per connection); fewer than h2load's count means answers the server never counted.
    if not done <= ok <= done + connections:
        raise RuntimeError(f"h2load completed {done} requests, the server counted {ok} OK answers")
    return measured | {"errors": int(failed)}


def echo_server(port: int) -> None:
    """The ceiling of a Python gRPC server: grpc.aio on uvloop, as modelmon serves it, with a
    ModelInfer that reads nothing and answers a fixed empty response."""

    import grpc
    import uvloop
    from grpc import aio

    async def model_infer(request: bytes, context: object) -> bytes:
        return b""

    async def serve() -> None:
        server = aio.server(options=[("grpc.so_reuseport", 0)])
        handler = grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService", {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)})
        server.add_generic_rpc_handlers((handler,))
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    uvloop.run(serve())


def start_echo(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = serving.free_port()
    log = (workdir / "echo.log").open("ab")
    process = subprocess.Popen([sys.executable, __file__, "--echo-server", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return process, port
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("the gRPC echo server did not start")


def h2load_echo(port: int, body: Path, connections: int, seconds: float, log: Path) -> dict:
    """h2load against the echo server (nothing to check it against but h2load's own count)."""
    log.unlink(missing_ok=True)
    command = ["h2load", "-t1", f"-c{connections}", "-m1", f"-D{max(1, round(seconds))}",
               "-H", "content-type: application/grpc", "-H", "te: trailers", "-d", str(body),
               "--log-file", str(log), f"http://127.0.0.1:{port}{INFER_RPC}"]
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    return parse_h2load(out, log) | {"errors": 0}


def parse_h2load(out: subprocess.CompletedProcess, log: Path) -> dict:
    finished = re.search(r"^finished in ([\d.]+)s, ([\d.]+) req/s", out.stdout, re.M)
    counts = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out.stdout, re.M)
    if finished is None or counts is None:
        raise RuntimeError(f"h2load produced no result: {out.stdout}\n{out.stderr}")
    elapsed_us = np.array([int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip()])
    p50, p90, p99 = np.percentile(elapsed_us, [50, 90, 99]) / 1000
    return {
        "requests_per_second": round(float(finished.group(2)), 1),
        "p50_ms": round(float(p50), 3), "p90_ms": round(float(p90), 3), "p99_ms": round(float(p99), 3),
        "mean_ms": round(float(elapsed_us.mean()) / 1000, 3), "max_ms": round(float(elapsed_us.max()) / 1000, 3),
        "requests": int(counts.group(3)),
    }


def one_round(registry: Path, workdir: Path, seconds: float, warmup: float, round_number: int) -> dict:
    grpc_port = serving.free_port()
    server = serving.modelmon_server("modelmon_grpc", "modelmon, REST and gRPC", registry,
                                     ["--grpc-port", str(grpc_port)])
    result: dict = {"rest": {}, "grpc": {}, "echo": {}}
    echo, echo_port = start_echo(workdir)
    try:
        result["start"] = server.start(workdir)
        server.verify(1)
        script = serving.lua_script(workdir / "rest.lua", server.body_for(serving.ROWS[:1]))
        body = workdir / "grpc.body"
        body.write_bytes(grpc_body(serving.ROWS[0]))
        log = workdir / "h2load.log"

        def load(protocol: str, c: int, duration: float) -> dict:
            """One load, with the server's CPU time per request: less at the mercy of the
            shared machine's other work than requests/s."""
            pid = echo.pid if protocol == "echo" else server.process.pid
            cpu = serving.tree_cpu_seconds(pid)
            if protocol == "rest":
                measured = serving.wrk(server.port, server.infer_path, script, c, duration)
            elif protocol == "grpc":
                measured = h2load(server.port, grpc_port, body, c, duration, log)
            else:
                measured = h2load_echo(echo_port, body, c, duration, log)
            cpu = serving.tree_cpu_seconds(pid) - cpu
            return measured | {"server_cpu_us_per_request": round(1e6 * cpu / max(1, measured["requests"]), 1)}

        if warmup > 0:
            for protocol in ("rest", "grpc", "echo"):
                load(protocol, max(LEVELS), warmup)
                serving.settle(server.process.pid)
        for i, c in enumerate(LEVELS):
            order = ["rest", "grpc", "echo"]
            order = order[(i + round_number) % 3:] + order[: (i + round_number) % 3]
            for protocol in order:
                result[protocol][str(c)] = load(protocol, c, seconds)
                result[protocol][str(c)]["settle_seconds"] = serving.settle(server.process.pid)
    finally:
        server.stop()
        echo.kill()
        echo.wait()
    return result


def summarise(rounds: list[dict]) -> dict:
    summary: dict = {}
    for protocol in ("rest", "grpc", "echo"):
        summary[protocol] = {
            str(c): {metric: round(statistics.median(r[protocol][str(c)][metric] for r in rounds), 3)
                     for metric in ("requests_per_second", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "server_cpu_us_per_request")}
            | {"errors": sum(r[protocol][str(c)]["errors"] for r in rounds)}
            for c in LEVELS
        }
    ratios = {}
    for c in map(str, LEVELS):
        per_round = [r["grpc"][c]["requests_per_second"] / r["rest"][c]["requests_per_second"] for r in rounds]
        p99 = [r["grpc"][c]["p99_ms"] / r["rest"][c]["p99_ms"] for r in rounds]
        to_echo = [r["grpc"][c]["requests_per_second"] / r["echo"][c]["requests_per_second"] for r in rounds]
        ratios[c] = {"throughput_ratio": round(statistics.median(per_round), 3), "p99_ratio": round(statistics.median(p99), 3),
                     "per_round_throughput_ratio": [round(x, 3) for x in per_round],
                     "grpc_to_echo_throughput_ratio": round(statistics.median(to_echo), 3)}
    return {"summary": summary, "ratios": ratios}


def markdown(result: dict) -> str:
    s, ratios, st, v = result["summary"], result["ratios"], result["settings"], result["versions"]
    lines = [
        "## Serving over gRPC (`serving_grpc.py`)",
        "",
        f"modelmon over V2 gRPC against modelmon over V2 REST, one server answering both, everything on, "
        f"one row per request (serving.py's model and row; gRPC with the row in `raw_input_contents`). REST "
        f"from `wrk` {v['wrk']}, gRPC from `h2load` {v['h2load']} (one thread each, C connections of one request "
        f"at a time), {st['duration_seconds']:g} s per level after a {st['warmup_seconds']:g} s warm-up, "
        f"{st['rounds']} rounds, medians; ratios within a round. Every gRPC answer checked on the server "
        f"(its grpc_infer 200s grew by the requests h2load completed, and no other code did). The echo row: a bare "
        f"grpc.aio server on uvloop answering an empty response, the ceiling of a Python gRPC server here. "
        f"{result['machine']['cpus']} cores shared with the load generator.",
        "",
        "| protocol | concurrency | requests/s | p50 ms | p99 ms | server CPU µs / request | errors |",
        "|---|---|---|---|---|---|---|",
    ]
    for protocol, label in (("rest", "REST (JSON)"), ("grpc", "gRPC (raw contents)"), ("echo", "grpc.aio echo (ceiling)")):
        for c in map(str, st["levels"]):
            x = s[protocol][c]
            lines.append(f"| {label} | {c} | {x['requests_per_second']:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} "
                         f"| {x['server_cpu_us_per_request']:.0f} | {x['errors']} |")
    lines += ["", "| concurrency | gRPC / REST requests/s | gRPC / REST p99 | gRPC / echo requests/s |", "|---|---|---|---|"]
    for c in map(str, st["levels"]):
        lines.append(f"| {c} | {ratios[c]['throughput_ratio']:.2f} | {ratios[c]['p99_ratio']:.2f} "
                     f"| {ratios[c]['grpc_to_echo_throughput_ratio']:.2f} |")
    target = result["targets"]["grpc_1.3x_rest_at_32"]
    lines += ["", f"Target (issue 21): gRPC at least 1.3x REST at c=32: measured {target['measured']:.2f}, "
              f"{'met' if target['met'] else 'not met'}."]
    return "\n".join(lines) + "\n"


def versions() -> dict[str, str | None]:
    import importlib.metadata as metadata

    h2 = subprocess.run(["h2load", "--version"], capture_output=True, text=True)
    match = re.search(r"nghttp2/(\S+)", h2.stdout + h2.stderr)
    return serving.versions([]) | {"h2load": match.group(1) if match else None, "grpcio": metadata.version("grpcio"),
                                   "protobuf": metadata.version("protobuf")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 1 s per level and protocol")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--duration", type=float, default=None, help="seconds per level and protocol")
    parser.add_argument("--out", type=Path, default=None, help=f"[default: {RESULTS.relative_to(serving.ROOT)}]")
    parser.add_argument("--echo-server", type=int, default=None, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server is not None:
        echo_server(args.echo_server)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install {package}")
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.duration or (1.0 if args.quick else 10.0)
    warmup = 0.5 if args.quick else 2.0
    out_path = args.out or RESULTS
    serving.ROWS[:] = serving.cancer_frame().drop(columns="target").to_numpy().tolist()[:64]
    workdir = Path(tempfile.mkdtemp(prefix="modelmon-bench-grpc-"))
    started = time.perf_counter()
    try:
        registry = serving.prepare_modelmon(workdir)
        results = [one_round(registry, workdir, seconds, warmup, r) for r in range(rounds)]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "settings": {"levels": list(LEVELS), "duration_seconds": seconds, "warmup_seconds": warmup, "rounds": rounds,
                     "quick": args.quick},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(),
        "rounds": results,
        **summarise(results),
        "seconds": round(time.perf_counter() - started, 1),
    }
    top = result["ratios"][str(max(LEVELS))]["throughput_ratio"]
    result["targets"] = {"grpc_1.3x_rest_at_32": {"target": ">= 1.3", "measured": top, "met": top >= 1.3}}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    print(text)
    if not args.quick and out_path == RESULTS:
        serving.write_readme_section(README_MARKER, text)
    else:
        print(f"(`python benchmarks/serving_grpc.py --quick` or --out: results in {out_path}, README unchanged)")


if __name__ == "__main__":
    main()
