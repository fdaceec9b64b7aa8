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

Two more rows are MLServer's V2 gRPC (KServe's proto, as modelmon's), the same model served by
serving.py's ``mlserver_server`` (its venv) in serving.py's two setups, its default
(parallel_workers=1: inference in a worker process) and parallel_workers=0 (in its main
process), loaded by h2load with the same message asking for the ``predict_proba`` output (as
serving.py's REST body for MLServer). Its answers are checked as modelmon's, on MLServer's own counters
(``model_infer_request_success`` / ``_failure`` on its metrics port), and one answer is
decoded and checked with a gRPC client before the loads.

    python benchmarks/serving_grpc.py            # 3 rounds, 10 s per level and protocol (12-15 minutes with both MLServer setups)
    python benchmarks/serving_grpc.py --quick    # 1 round, 1 s each: shows that it works

    python benchmarks/serving_grpc.py --peers none   # without MLServer
    python benchmarks/serving_grpc.py --phases 5000  # the handler's CPU per phase, in-process

Writes benchmarks/results/serving_grpc.json and (full runs) its section of benchmarks/README.md.
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
from peers import venvs  # noqa: E402

RESULTS = HERE / "results" / "serving_grpc.json"
README_MARKER = "serving-grpc"
LEVELS = (1, 8, 32)
#: The rows of a run: modelmon REST, modelmon gRPC, the grpc.aio echo, MLServer gRPC.
PROTOCOLS = ("rest", "grpc", "echo", "mlserver", "mlserver_pw0")
#: MLServer's setups (serving.py's): key -> (row label, parallel_workers; None: its default).
MLSERVERS: dict[str, tuple[str, int | None]] = {
    "mlserver": ("MLServer gRPC, default (parallel_workers=1)", None),
    "mlserver_pw0": ("MLServer gRPC, parallel_workers=0", 0),
}
INFER_RPC = "/inference.GRPCInferenceService/ModelInfer"


def infer_request(row: list[float], outputs: tuple[str, ...] = ()):
    """One ModelInferRequest holding ``row`` in raw_input_contents (what tritonclient sends)."""
    from modelmon.serving.grpc_v2 import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=serving.MODEL_NAME)
    request.inputs.add(name="input-0", datatype="FP64", shape=[1, len(row)])
    request.raw_input_contents.append(np.asarray(row, dtype="<f8").tobytes())
    for name in outputs:
        request.outputs.add(name=name)
    return request


def grpc_body(row: list[float], outputs: tuple[str, ...] = ()) -> bytes:
    """One ModelInferRequest as it travels in a gRPC message: not compressed (0), its
    length (4 bytes, big-endian), the message."""
    message = infer_request(row, outputs).SerializeToString()
    return b"\0" + struct.pack(">I", len(message)) + message


def grpc_answered(port: int) -> tuple[float, float]:
    """The server's counts of gRPC inference requests answered OK, and not OK (any model)."""
    status, body = serving.http_request(port, "GET", "/metrics", timeout=10)
    assert status == 200, status
    ok = failed = 0.0
    for match in re.finditer(
        r'^modelmon_requests_total\{code="(\d+)",endpoint="grpc_infer",[^}]*\} (\S+)$',
        body.decode(),
        re.M,
    ):
        if match.group(1) == "200":
            ok += float(match.group(2))
        else:
            failed += float(match.group(2))
    return ok, failed


def h2load_command(port: int, body: Path, connections: int, seconds: float, log: Path) -> list[str]:
    """h2load sending ``body`` to ModelInfer on ``port``: one thread, one stream per
    connection, for ``seconds``, each request's time in ``log``."""
    return [
        "h2load",
        "-t1",
        f"-c{connections}",
        "-m1",
        f"-D{max(1, round(seconds))}",
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        "-d",
        str(body),
        "--log-file",
        str(log),
        f"http://127.0.0.1:{port}{INFER_RPC}",
    ]


def h2load(
    http_port: int, grpc_port: int, body: Path, connections: int, seconds: float, log: Path
) -> dict:
    """One h2load run against ModelInfer, checked against the server's own count."""
    before = grpc_answered(http_port)
    log.unlink(missing_ok=True)
    command = h2load_command(grpc_port, body, connections, seconds, log)
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
    """The ceiling of a Python gRPC server: grpc.aio on uvloop, as modelmon serves it (its
    ``ACCEPT_LOOPS`` servers on one port), with a ModelInfer that reads nothing and answers a
    fixed empty response."""

    import grpc
    import uvloop
    from grpc import aio

    from modelmon.serving.grpc_v2.service import ACCEPT_LOOPS

    async def model_infer(request: bytes, context: object) -> bytes:
        return b""

    async def serve() -> None:
        handler = grpc.method_handlers_generic_handler(
            "inference.GRPCInferenceService",
            {"ModelInfer": grpc.unary_unary_rpc_method_handler(model_infer)},
        )
        servers = []
        for _ in range(ACCEPT_LOOPS):
            server = aio.server(options=[("grpc.so_reuseport", 1)])
            server.add_generic_rpc_handlers((handler,))
            server.add_insecure_port(f"127.0.0.1:{port}")
            await server.start()
            servers.append(server)
        await servers[0].wait_for_termination()

    uvloop.run(serve())


def start_echo(workdir: Path) -> tuple[subprocess.Popen, int]:
    port = serving.free_port()
    log = (workdir / "echo.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, __file__, "--echo-server", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
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
    command = h2load_command(port, body, connections, seconds, log)
    out = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 60)
    return parse_h2load(out, log) | {"errors": 0}


MLSERVER_OUTPUTS = ("predict_proba",)


def mlserver_grpc(workdir: Path, key: str) -> tuple[serving.Server, int, int]:
    """serving.py's MLServer for the same model in setup ``key`` (``MLSERVERS``), and its gRPC
    and metrics ports (from the settings.json ``serving_setup.py`` wrote for it)."""
    label, parallel_workers = MLSERVERS[key]
    server = serving.mlserver_server(f"{key}_grpc", label, workdir, parallel_workers)
    settings = json.loads((workdir / server.key / "settings.json").read_text())
    return server, settings["grpc_port"], settings["metrics_port"]


def mlserver_answered(metrics_port: int) -> tuple[float, float]:
    """MLServer's counts of inference requests answered OK, and not OK (REST and gRPC alike;
    only gRPC is sent to it here)."""
    status, body = serving.http_request(metrics_port, "GET", "/metrics", timeout=10)
    assert status == 200, status
    counts = {}
    for kind in ("success", "failure"):
        found = re.findall(
            rf"^model_infer_request_{kind}_total\{{[^}}]*\}} (\S+)$", body.decode(), re.M
        )
        counts[kind] = sum(float(x) for x in found)
    return counts["success"], counts["failure"]


def check_grpc_answer(port: int, row: list[float], outputs: tuple[str, ...], expected: str) -> None:
    """One ModelInfer with a real gRPC client: the answer must decode and hold ``expected``
    as a [1, 2] FP32/FP64 tensor (the class probabilities) that sums to 1."""
    import grpc

    from modelmon.serving.grpc_v2 import grpc_predict_v2_pb2 as pb

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(
            INFER_RPC,
            request_serializer=pb.ModelInferRequest.SerializeToString,
            response_deserializer=pb.ModelInferResponse.FromString,
        )
        answer = call(infer_request(row, outputs), timeout=30)
    names = [o.name for o in answer.outputs]
    if expected not in names:
        raise RuntimeError(f"gRPC answer on port {port} has outputs {names}, not {expected!r}")
    k = names.index(expected)
    tensor = answer.outputs[k]
    dtype = {"FP32": "<f4", "FP64": "<f8"}[tensor.datatype]
    values = (
        np.frombuffer(answer.raw_output_contents[k], dtype=dtype)
        if answer.raw_output_contents
        else np.asarray(tensor.contents.fp64_contents or tensor.contents.fp32_contents)
    )
    if list(tensor.shape) != [1, 2] or abs(float(values.sum()) - 1) > 1e-6:
        raise RuntimeError(f"gRPC answer on port {port}: {expected} {list(tensor.shape)} {values}")


def h2load_mlserver(
    grpc_port: int, metrics_port: int, body: Path, connections: int, seconds: float, log: Path
) -> dict:
    """h2load against MLServer's ModelInfer, checked against MLServer's own counters."""
    before = mlserver_answered(metrics_port)
    measured = h2load_echo(grpc_port, body, connections, seconds, log)
    after = mlserver_answered(metrics_port)
    ok, failed = after[0] - before[0], after[1] - before[1]
    done = measured["requests"]
    if not done <= ok <= done + connections:
        raise RuntimeError(f"h2load completed {done} requests, MLServer counted {ok} OK answers")
    return measured | {"errors": int(failed)}


def loop_thread_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``'s main thread alone, the one that runs the event loop
    (modelmon's, the echo's; MLServer's front process): a server that spends a whole core
    there is bound by it, whatever its other threads and processes do."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def parse_h2load(out: subprocess.CompletedProcess, log: Path) -> dict:
    finished = re.search(r"^finished in ([\d.]+)s, ([\d.]+) req/s", out.stdout, re.M)
    counts = re.search(
        r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded", out.stdout, re.M
    )
    if finished is None or counts is None:
        raise RuntimeError(f"h2load produced no result: {out.stdout}\n{out.stderr}")
    elapsed_us = np.array(
        [int(line.split("\t")[2]) for line in log.read_text().splitlines() if line.strip()]
    )
    p50, p90, p99 = np.percentile(elapsed_us, [50, 90, 99]) / 1000
    return {
        "requests_per_second": round(float(finished.group(2)), 1),
        "p50_ms": round(float(p50), 3),
        "p90_ms": round(float(p90), 3),
        "p99_ms": round(float(p99), 3),
        "mean_ms": round(float(elapsed_us.mean()) / 1000, 3),
        "max_ms": round(float(elapsed_us.max()) / 1000, 3),
        "requests": int(counts.group(3)),
    }


def one_round(
    registry: Path,
    workdir: Path,
    seconds: float,
    warmup: float,
    round_number: int,
    protocols: tuple[str, ...],
) -> dict:
    grpc_port = serving.free_port()
    server = serving.modelmon_server(
        "modelmon_grpc", "modelmon, REST and gRPC", registry, ["--grpc-port", str(grpc_port)]
    )
    result: dict = {protocol: {} for protocol in protocols}
    echo, echo_port = start_echo(workdir)
    mlservers: dict[
        str, tuple[serving.Server, int, int]
    ] = {}  # key -> server, gRPC port, metrics port
    try:
        result["start"] = server.start(workdir)
        server.verify(1)
        check_grpc_answer(grpc_port, serving.ROWS[0], (), "probabilities")
        for key in (p for p in protocols if p in MLSERVERS):
            mlservers[key] = peer = mlserver_grpc(workdir, key)
            result[f"{key}_start"] = peer[0].start(workdir)
            check_grpc_answer(peer[1], serving.ROWS[0], MLSERVER_OUTPUTS, "predict_proba")
        script = serving.lua_script(workdir / "rest.lua", server.body_for(serving.ROWS[:1]))
        body = workdir / "grpc.body"
        body.write_bytes(grpc_body(serving.ROWS[0]))
        mlserver_body = workdir / "mlserver.body"
        mlserver_body.write_bytes(grpc_body(serving.ROWS[0], MLSERVER_OUTPUTS))
        log = workdir / "h2load.log"

        def load(protocol: str, c: int, duration: float) -> dict:
            """One load, with the server's CPU time per request: less at the mercy of the
            shared machine's other work than requests/s."""
            if protocol in mlservers:
                pid = mlservers[protocol][0].process.pid
            else:
                pid = echo.pid if protocol == "echo" else server.process.pid
            cpu, loop_cpu = serving.tree_cpu_seconds(pid), loop_thread_cpu_seconds(pid)
            if protocol == "rest":
                measured = serving.wrk(server.port, server.infer_path, script, c, duration)
            elif protocol == "grpc":
                measured = h2load(server.port, grpc_port, body, c, duration, log)
            elif protocol in mlservers:
                _, peer_grpc, peer_metrics = mlservers[protocol]
                measured = h2load_mlserver(peer_grpc, peer_metrics, mlserver_body, c, duration, log)
            else:
                measured = h2load_echo(echo_port, body, c, duration, log)
            cpu = serving.tree_cpu_seconds(pid) - cpu
            loop_cpu = loop_thread_cpu_seconds(pid) - loop_cpu
            requests = max(1, measured["requests"])
            return measured | {
                "server_cpu_us_per_request": round(1e6 * cpu / requests, 1),
                "loop_thread_cpu_us_per_request": round(1e6 * loop_cpu / requests, 1),
            }

        def settle() -> float:
            waited = serving.settle(server.process.pid)
            return waited + sum(
                serving.settle(peer.process.pid) for peer, _, _ in mlservers.values()
            )

        if warmup > 0:
            for protocol in protocols:
                load(protocol, max(LEVELS), warmup)
                settle()
        for i, c in enumerate(LEVELS):
            k = (i + round_number) % len(protocols)
            for protocol in protocols[k:] + protocols[:k]:
                result[protocol][str(c)] = load(protocol, c, seconds)
                result[protocol][str(c)]["settle_seconds"] = settle()
    finally:
        server.stop()
        for peer, _, _ in mlservers.values():
            peer.stop()
        echo.kill()
        echo.wait()
    return result


def summarise(rounds: list[dict]) -> dict:
    summary: dict = {}
    protocols = [p for p in PROTOCOLS if p in rounds[0]]
    for protocol in protocols:
        summary[protocol] = {
            str(c): {
                metric: round(statistics.median(r[protocol][str(c)][metric] for r in rounds), 3)
                for metric in (
                    "requests_per_second",
                    "p50_ms",
                    "p90_ms",
                    "p99_ms",
                    "mean_ms",
                    "server_cpu_us_per_request",
                    "loop_thread_cpu_us_per_request",
                )
            }
            | {"errors": sum(r[protocol][str(c)]["errors"] for r in rounds)}
            for c in LEVELS
        }
    ratios = {}
    for c in map(str, LEVELS):
        per_round = [
            r["grpc"][c]["requests_per_second"] / r["rest"][c]["requests_per_second"]
            for r in rounds
        ]
        p99 = [r["grpc"][c]["p99_ms"] / r["rest"][c]["p99_ms"] for r in rounds]
        to_echo = [
            r["grpc"][c]["requests_per_second"] / r["echo"][c]["requests_per_second"]
            for r in rounds
        ]
        ratios[c] = {
            "throughput_ratio": round(statistics.median(per_round), 3),
            "p99_ratio": round(statistics.median(p99), 3),
            "per_round_throughput_ratio": [round(x, 3) for x in per_round],
            "grpc_to_echo_throughput_ratio": round(statistics.median(to_echo), 3),
        }
        for key in (p for p in protocols if p in MLSERVERS):
            to_peer = [
                r["grpc"][c]["requests_per_second"] / r[key][c]["requests_per_second"]
                for r in rounds
            ]
            p99_peer = [r["grpc"][c]["p99_ms"] / r[key][c]["p99_ms"] for r in rounds]
            ratios[c] |= {
                f"grpc_to_{key}_throughput_ratio": round(statistics.median(to_peer), 3),
                f"grpc_to_{key}_p99_ratio": round(statistics.median(p99_peer), 3),
                f"per_round_grpc_to_{key}_throughput_ratio": [round(x, 3) for x in to_peer],
            }
    return {"summary": summary, "ratios": ratios}


class _StubContext:
    """What ModelInfer asks of a grpc.aio context, without a network."""

    def invocation_metadata(self) -> tuple:
        return ()

    async def abort(self, code: object, details: str) -> None:
        raise RuntimeError(details)


def phases(registry: Path, n: int) -> dict[str, float]:
    """CPU µs (``time.thread_time``) per one-row ModelInfer, phase by phase, in one process with
    no network: the calls ``InferenceService.model_infer`` makes, in its order, on uvloop, after
    a warm-up; then the whole ``model_infer`` timed as one, to check the phases against. The
    handler's own cost, without grpcio's (the echo row is that) and without the inflation that
    other threads' work brings under load (benchmarks/README.md, the gRPC section)."""
    import asyncio

    import uvloop

    from modelmon.registry import Registry
    from modelmon.serving import codecs
    from modelmon.serving.app import ModelServer
    from modelmon.serving.grpc_v2 import grpc_predict_v2_pb2 as pb
    from modelmon.serving.grpc_v2.service import InferenceService
    from modelmon.serving.grpc_v2.tensors import decode_infer_request, encode_infer_response
    from modelmon.serving.settings import ServingSettings

    async def measure() -> dict[str, float]:
        server = ModelServer(
            Registry(registry), [(serving.MODEL_NAME, "latest")], ServingSettings(grpc_port=0)
        )
        await server.start()
        try:
            service, context = InferenceService(server), _StubContext()
            raw = infer_request(serving.ROWS[0]).SerializeToString()
            runtime = server.runtime(serving.MODEL_NAME, None)
            for _ in range(2000):
                await service.model_infer(raw, context)  # type: ignore[arg-type]
            totals = dict.fromkeys(("decode", "validate", "predict", "encode"), 0.0)
            for _ in range(n):
                t0 = time.thread_time()
                request = decode_infer_request(pb.ModelInferRequest.FromString(raw))
                codecs.check_requested_outputs(request, runtime.outputs.names)
                t1 = time.thread_time()
                batch = runtime.validator.from_tensors(request.inputs)
                request.id = codecs.new_request_id()
                t2 = time.thread_time()
                prediction = await runtime.predict(batch)
                t3 = time.thread_time()
                outputs = runtime.outputs.tensors(prediction.output, prediction.ids)
                encode_infer_response(
                    runtime.name, runtime.version, request, outputs
                ).SerializeToString()
                t4 = time.thread_time()
                for name, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                    totals[name] += seconds
                await asyncio.sleep(0)  # a new loop pass, as between RPCs
            started = time.thread_time()
            for _ in range(n):
                await service.model_infer(raw, context)  # type: ignore[arg-type]
                await asyncio.sleep(0)
            whole = time.thread_time() - started
        finally:
            await server.stop()
        return {name: round(1e6 * t / n, 1) for name, t in totals.items()} | {
            "model_infer": round(1e6 * whole / n, 1)
        }

    return uvloop.run(measure())


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
        + (
            f"The MLServer rows: MLServer {v.get('mlserver')} (mlserver-sklearn) over its V2 gRPC, default settings "
            f"and parallel_workers=0, the same model and message asking for `predict_proba`, every answer checked "
            f"on its own counters. "
            if any(k in s for k in MLSERVERS)
            else ""
        )
        + f"{result['machine']['cpus']} cores shared with the load generator.",
        "",
        "| protocol | concurrency | requests/s | p50 ms | p99 ms | server CPU µs / request "
        "| of which its event loop's thread | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    labels = {
        "rest": "REST (JSON)",
        "grpc": "gRPC (raw contents)",
        "echo": "grpc.aio echo (ceiling)",
    } | {key: label for key, (label, _) in MLSERVERS.items()}
    for protocol, label in ((p, labels[p]) for p in PROTOCOLS if p in s):
        for c in map(str, st["levels"]):
            x = s[protocol][c]
            lines.append(
                f"| {label} | {c} | {x['requests_per_second']:,.0f} | {x['p50_ms']:.2f} | {x['p99_ms']:.2f} "
                f"| {x['server_cpu_us_per_request']:.0f} | {x['loop_thread_cpu_us_per_request']:.0f} | {x['errors']} |"
            )
    peers = [k for k in MLSERVERS if k in s]
    names = {"mlserver": "MLServer default", "mlserver_pw0": "MLServer pw=0"}
    lines += [
        "",
        "| concurrency | gRPC / REST requests/s | gRPC / REST p99 | gRPC / echo requests/s |"
        + "".join(f" gRPC / {names[k]} requests/s | gRPC / {names[k]} p99 |" for k in peers),
        "|---|---|---|---|" + "---|---|" * len(peers),
    ]
    for c in map(str, st["levels"]):
        r = ratios[c]
        lines.append(
            f"| {c} | {r['throughput_ratio']:.2f} | {r['p99_ratio']:.2f} | {r['grpc_to_echo_throughput_ratio']:.2f} |"
            + "".join(
                f" {r[f'grpc_to_{k}_throughput_ratio']:.2f} | {r[f'grpc_to_{k}_p99_ratio']:.2f} |"
                for k in peers
            )
        )
    target = result["targets"]["grpc_1.3x_rest_at_32"]
    lines += [
        "",
        "| target (issue 21) | measured | met |",
        "|---|---|---|",
        f"| gRPC >= 1.3x modelmon REST at c=32 | {target['measured']:.2f} | {'yes' if target['met'] else 'no'} |",
    ]
    if "grpc_3x_mlserver_grpc_at_32" in result["targets"]:
        target = result["targets"]["grpc_3x_mlserver_grpc_at_32"]
        measured = ", ".join(f"{names[k]} {x:.2f}" for k, x in target["measured"].items())
        lines.append(
            f"| gRPC >= 3x MLServer gRPC at c=32 (both setups) | {measured} | {'yes' if target['met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def versions(peers: list[str]) -> dict[str, str | None]:
    import importlib.metadata as metadata

    h2 = subprocess.run(["h2load", "--version"], capture_output=True, text=True)
    match = re.search(r"nghttp2/(\S+)", h2.stdout + h2.stderr)
    return serving.versions(peers) | {
        "h2load": match.group(1) if match else None,
        "grpcio": metadata.version("grpcio"),
        "protobuf": metadata.version("protobuf"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 1 s per level and protocol")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds per level and protocol"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help=f"[default: {RESULTS.relative_to(serving.ROOT)}]"
    )
    parser.add_argument(
        "--peers",
        default=None,
        choices=["all", "installed", "none"],
        help="MLServer's gRPC: all (build its venv if missing), installed, or none "
        "[default: all; --quick: installed]",
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=None,
        metavar="N",
        help="only the handler's CPU µs per phase, in-process over N one-row requests (no load)",
    )
    parser.add_argument(
        "--echo-server", type=int, default=None, metavar="PORT", help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.echo_server is not None:
        echo_server(args.echo_server)
        return
    if args.phases is not None:
        serving.ROWS[:] = serving.cancer_frame().drop(columns="target").to_numpy().tolist()[:1]
        workdir = Path(tempfile.mkdtemp(prefix="modelmon-bench-grpc-phases-"))
        # The prediction log's store: a throwaway one, never the user's.
        os.environ["MODELMON_HOME"] = str(workdir / "home")
        try:
            print(json.dumps(phases(serving.prepare_modelmon(workdir), args.phases), indent=2))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the server on the way out
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: apt-get install {package}")
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.duration or (1.0 if args.quick else 10.0)
    warmup = 0.5 if args.quick else 2.0
    out_path = args.out or RESULTS
    peers_mode = args.peers or ("installed" if args.quick else "all")
    wanted = {"none": False, "installed": venvs.installed("mlserver"), "all": True}[peers_mode]
    peers = (
        ["mlserver"]
        if wanted and venvs.ensure("mlserver", log=lambda m: print(m, file=sys.stderr))
        else []
    )
    protocols = ("rest", "grpc", "echo", *(MLSERVERS if peers else ()))
    serving.ROWS[:] = serving.cancer_frame().drop(columns="target").to_numpy().tolist()[:64]
    workdir = Path(tempfile.mkdtemp(prefix="modelmon-bench-grpc-"))
    started = time.perf_counter()
    try:
        registry = serving.prepare_modelmon(workdir)
        results = [
            one_round(registry, workdir, seconds, warmup, r, protocols) for r in range(rounds)
        ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "settings": {
            "levels": list(LEVELS),
            "duration_seconds": seconds,
            "warmup_seconds": warmup,
            "rounds": rounds,
            "quick": args.quick,
        },
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": versions(peers),
        "rounds": results,
        **summarise(results),
        "seconds": round(time.perf_counter() - started, 1),
    }
    top = result["ratios"][str(max(LEVELS))]["throughput_ratio"]
    result["targets"] = {
        "grpc_1.3x_rest_at_32": {"target": ">= 1.3", "measured": top, "met": top >= 1.3}
    }
    if peers:  # against both MLServer setups, as serving.py's REST target
        top_ratios = result["ratios"][str(max(LEVELS))]
        to_peers = {k: top_ratios[f"grpc_to_{k}_throughput_ratio"] for k in MLSERVERS}
        result["targets"]["grpc_3x_mlserver_grpc_at_32"] = {
            "target": ">= 3.0 (both setups)",
            "measured": to_peers,
            "met": min(to_peers.values()) >= 3.0,
        }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    text = markdown(result)
    print(text)
    if not args.quick and out_path == RESULTS:
        serving.write_readme_section(README_MARKER, text)
    else:
        print(
            f"(`python benchmarks/serving_grpc.py --quick` or --out: results in {out_path}, README unchanged)"
        )


if __name__ == "__main__":
    main()
