"""Where the time goes on modelmon's inference request path, phase by phase (issue 21).

In one process, with no HTTP server: the breast-cancer model of ``serving.py`` served by a
``ModelServer`` with everything on (metrics, drift accounting, the prediction log writing to
SQLite under a temporary MODELMON_HOME), on uvloop. Each phase of ``ModelServer.infer`` and
``model_endpoint`` is run on its own, the same calls in the same order as the handler makes
them, timed with ``time.perf_counter_ns`` over ``--n`` requests; the median and mean per phase
are reported, with the whole handler (``model_endpoint`` on a made-up ASGI request) timed too,
so that the phases can be checked against it. The HTTP server's own share (uvicorn, httptools:
parsing, the body, writing the answer) is what ``ceiling.py`` costs: see serving.py's CPU per
request for the ceiling row.

    python benchmarks/request_phases.py [--rows 1] [--n 5000]

``--regression`` (issue 18): what "everything on" costs beyond "monitoring off" for the
regression model of ``serving.py --regression-only``, in CPU time (``time.process_time``) per
row, part by part, one-row requests merged into model calls of ``--call-rows`` rows (about 7
at concurrency 8 in serving.py): queueing a call's monitoring and counting it (the event loop),
the label-free estimate (the drift scorer's thread, in parts of ``SETTLE_ROWS``), the
prediction log's line (the event loop) and its insert by the writer (the writer process).

    python benchmarks/request_phases.py --regression [--varied] [--call-rows 7] [--calls 10000] [--rounds 5]

``--threads`` (issue 18): the same regression model on real servers, everything on and
monitoring off (serving.py's pair; ``--before SRC``: a third, everything on from another
checkout's ``src``), loaded in turn by ``wrk`` at ``--concurrency`` for ``--seconds``, in
``--rounds`` alternating rounds: each thread's and the writer process's CPU µs per request
(``/proc``; thread names from ``py-spy dump`` when it is installed), medians over the rounds.

    python benchmarks/request_phases.py --threads [--rounds 12] [--seconds 2] [--before ../main/src]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serving  # noqa: E402


def request_for(body: bytes, path: str):
    from starlette.requests import Request

    scope = {"type": "http", "method": "POST", "path": path, "headers": [(b"content-type", b"application/json"),
             (b"content-length", str(len(body)).encode())], "query_string": b"", "path_params": {"name": serving.MODEL_NAME}}

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    return Request(scope, receive)


async def measure(registry: Path, rows: int, n: int) -> dict[str, dict[str, float]]:
    from modelmon.registry import Registry
    from modelmon.serving import codecs
    from modelmon.serving.app import ModelServer
    from modelmon.serving.settings import ServingSettings

    server = ModelServer(Registry(registry), [(serving.MODEL_NAME, "latest")], ServingSettings())
    await server.start()
    runtime = server.runtime(serving.MODEL_NAME, None)
    body = serving.v2_body(serving.ROWS[:rows])
    times: dict[str, list[int]] = {}

    def timed(name: str, started: int) -> int:
        now = time.perf_counter_ns()
        times.setdefault(name, []).append(now - started)
        return now

    async def one() -> None:
        t = time.perf_counter_ns()
        request = request_for(body, f"/v2/models/{serving.MODEL_NAME}/infer")
        runtime_ = server.runtime(serving.MODEL_NAME, None)
        server.authorize(request, "infer")
        runtime_.metrics.inflight.inc()
        t = timed("request object, model lookup, token check, in-flight gauge", t)
        raw = await server.read_body(request)
        t = timed("body read (from the ASGI receive)", t)
        infer_request = codecs.decode_infer_request(raw, request.headers.get(codecs.HEADER_LENGTH))
        t = timed("JSON decode (orjson) into tensors", t)
        codecs.check_requested_outputs(infer_request, runtime_.outputs.names)
        batch = runtime_.validator.from_tensors(infer_request.inputs)
        t = timed("validation into a FeatureBatch", t)
        infer_request.id = codecs.new_request_id()
        t = timed("request id", t)
        output = runtime_.predictor.predict(batch)
        t = timed("model call (ONNX Runtime), alone", t)
        runtime_.batcher._call_seconds.append(0.0)  # keep the model 'fast' as it is
        first = runtime_._on_model_call(batch, 1e-5, output, [0.0])
        t = timed("per model call: metrics, drift, ids, recent, journal", t)
        from modelmon.serving.runtime import PREDICTION_IDS
        ids = PREDICTION_IDS.format(first, batch.n_rows)
        t = timed("prediction id strings", t)
        outputs = runtime_.outputs.tensors(output, ids)
        t = timed("output tensors", t)
        content, _ = codecs.encode_infer_response(runtime_.name, runtime_.version, infer_request, outputs)
        t = timed("JSON encode", t)
        from starlette.responses import Response
        Response(content, media_type="application/json")
        runtime_.metrics.inflight.dec()
        runtime_.metrics.observe_request("infer", 200, 1e-4)
        t = timed("response object, request metrics", t)

    async def batcher_only(direct: bool) -> None:
        batch = runtime.validator.from_tensors(codecs.decode_infer_request(body, None).inputs)
        if not direct:
            await asyncio.sleep(0)  # a new loop pass: the direct path is open again
            runtime.batcher._direct_this_pass = True  # closed: through the queue, as before issue 21
        t = time.perf_counter_ns()
        await runtime.predict(batch)
        timed("runtime.predict, direct path (model + per call)" if direct else
              "runtime.predict through the batcher's queue (model + per call)", t)
        if direct:
            await asyncio.sleep(0)

    async def whole() -> None:
        request = request_for(body, f"/v2/models/{serving.MODEL_NAME}/infer")
        await asyncio.sleep(0)  # one request per loop pass, as from a socket
        t = time.perf_counter_ns()
        await server.model_endpoint(request, "infer", server.infer)
        timed("whole handler (model_endpoint + infer), direct path", t)

    for _ in range(200):  # warm-up: the model counts as fast after its first calls
        await whole()
    times.clear()
    for _ in range(n):
        await one()
        await batcher_only(True)
        await batcher_only(False)
        await whole()
    await server.stop()
    return {name: {"median_us": statistics.median(v) / 1000, "mean_us": statistics.fmean(v) / 1000} for name, v in times.items()}


def cpu_us(work, times: int) -> float:
    """CPU µs (this process, all its threads) per call of ``work``, over ``times`` calls."""
    started = time.process_time()
    for _ in range(times):
        work()
    return 1e6 * (time.process_time() - started) / times


async def regression_parts(registry: Path, call_rows: int, calls: int, varied: bool, rounds: int) -> dict[str, float]:
    """CPU µs per row of each part of the regression model's monitoring and prediction log.
    ``varied``: model calls cycle through the 1,000 validation rows; else every call holds the
    same row, as serving.py's load sends (the estimate's trees then cost far less per row:
    the same branches every time). Each part's median over ``rounds``."""
    from modelmon.registry import Registry
    from modelmon.serving import codecs
    from modelmon.serving.app import ModelServer
    from modelmon.serving.prediction_log import Chunk
    from modelmon.serving.segment_writer import SegmentWriter
    from modelmon.serving.settings import ServingSettings

    server = ModelServer(Registry(registry), [(serving.REGRESSION_MODEL, "latest")], ServingSettings())
    await server.start()
    try:
        runtime = server.runtime(serving.REGRESSION_MODEL, None)
        starts = range(0, len(serving.ROWS) - call_rows + 1, call_rows) if varied else [0]
        calls_made = [runtime.validator.from_tensors(codecs.decode_infer_request(
            serving.v2_body(serving.ROWS[s : s + call_rows] if varied else serving.ROWS[:1] * call_rows), None).inputs)
            for s in starts]
        outputs = [runtime.predictor.predict(b) for b in calls_made]
        cycle = itertools.cycle(list(zip(calls_made, outputs, strict=True)))
        output = outputs[0]

        def observe() -> None:
            b, o = next(cycle)
            monitor.observe(b, 1e-5, o, waits)
        monitor, log = runtime.monitor, runtime.prediction_log
        assert monitor.accounting is not None and log is not None
        monitor.accounting.flush_seconds = 1e9  # counted below, a flush's worth at a time
        monitor.accounting.max_pending_rows = 1 << 62
        waits = [0.0] * call_rows
        labels = [repr(v) for v in output.predicted.tolist()]
        chunk = Chunk(runtime.name, int(runtime.version), time.time(), "bench", 1, labels, None, None)
        spool = Path(os.environ["MODELMON_HOME"]) / "writer-bench"
        spool.mkdir()
        writer = SegmentWriter(log.store, spool, "w", 2000, 2.0, lambda event, n: None)
        # The event loop counts every 0.1 s and the scorer's thread estimates every second:
        # about 1,000 and 10,000 rows at c=8.
        per_flush = max(1, 1000 // call_rows)
        flushes = max(10, calls // per_flush)
        rows = flushes * per_flush * call_rows
        parts: dict[str, list[float]] = {}
        for round_ in range(rounds):
            measured = {"queue a model call's monitoring (event loop)": cpu_us(observe, calls) / call_rows}
            monitor.flush(settle=False)
            monitor.settle()
            flushed = settled = 0.0
            for i in range(flushes):
                for _ in range(per_flush):
                    observe()
                started = time.process_time()
                monitor.flush(settle=False)
                flushed += time.process_time() - started
                if i % 10 == 9 or i == flushes - 1:
                    started = time.process_time()
                    monitor.settle()
                    settled += time.process_time() - started
            measured["count a flush's model calls (event loop)"] = 1e6 * flushed / rows
            measured["label-free estimate (drift scorer's thread)"] = 1e6 * settled / rows
            measured["predicted values as text (event loop)"] = (
                cpu_us(lambda: [repr(v) for v in output.predicted.tolist()], calls) / call_rows)
            measured["journal line: orjson and write (event loop)"] = cpu_us(lambda: log.submit(chunk), calls) / call_rows
            # The writer's work on such lines, here in this process, on a segment of its own.
            first = round_ * calls * call_rows
            (spool / "w-000000001.jsonl").write_bytes(b"".join(
                orjson.dumps([runtime.name, 1, 1.7e9 + i * 1e-3, "w", first + i * call_rows, labels, None, None],
                             option=orjson.OPT_APPEND_NEWLINE)
                for i in range(calls)))
            started = time.process_time()
            writer.write_sealed(final=True)
            measured["insert into the store (writer process)"] = 1e6 * (time.process_time() - started) / (calls * call_rows)
            assert not writer.sealed_segments()
            for name, us in measured.items():
                parts.setdefault(name, []).append(us)
    finally:
        await server.stop()
    return {name: statistics.median(values) for name, values in parts.items()}


def thread_cpu(pid: int) -> dict[tuple[int, int], float]:
    """CPU seconds of each thread of ``pid``'s process tree, by (process, thread) id."""
    tick = os.sysconf("SC_CLK_TCK")
    times = {}
    for process in serving.process_tree(pid):
        for task in Path(f"/proc/{process}/task").glob("*"):
            try:
                fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            times[(process, int(task.name))] = (int(fields[11]) + int(fields[12])) / tick
    return times


def thread_names(pid: int) -> dict[int, str]:
    """Python's names of ``pid``'s threads, from ``py-spy dump`` (empty without py-spy)."""
    spy = Path(sys.executable).parent / "py-spy"
    if not spy.exists():
        return {}
    out = subprocess.run([str(spy), "dump", "--pid", str(pid)], capture_output=True, text=True).stdout
    return {int(m[1]): m[2] for m in re.finditer(r'^Thread (\d+) \(\w+\): "([^"]+)"', out, re.M)}


def server_threads(concurrency: int, seconds: float, rounds: int, before: Path | None) -> dict[str, dict[str, float]]:
    """Per server, the median CPU µs per request of each of its threads and of its writer
    process, its median requests/s and its median total (see the module's docstring)."""
    with tempfile.TemporaryDirectory(prefix="modelmon-threads-") as tmp:
        registry = serving.prepare_regression(Path(tmp))
        servers = {"everything on": serving.regression_server("on", "on", registry, []),
                   "monitoring off": serving.regression_server("off", "off", registry, serving.NOTHING_ON)}
        if before is not None:
            servers["everything on, before"] = serving.regression_server("before", "before", registry, [])
        for key, server in servers.items():  # servers start in their own directory: absolute paths
            server.env["PYTHONPATH"] = str((before if key.endswith("before") else serving.ROOT / "src").resolve())
        samples: dict[str, list[dict[str, float]]] = {key: [] for key in servers}
        try:
            scripts, names = {}, {}
            for key, server in servers.items():
                server.start(Path(tmp))
                scripts[key] = serving.lua_script(Path(tmp) / f"{server.key}.lua", server.body_for(serving.ROWS[:1]))
                serving.wrk(server.port, server.infer_path, scripts[key], concurrency, 2)  # warm up
                serving.settle(server.process.pid)
                names[key] = thread_names(server.process.pid)
            for round_ in range(rounds):
                for key in list(servers) if round_ % 2 == 0 else list(servers)[::-1]:
                    server = servers[key]
                    pid = server.process.pid
                    started = thread_cpu(pid)
                    measured = serving.wrk(server.port, server.infer_path, scripts[key], concurrency, seconds)
                    ended = thread_cpu(pid)
                    sample = {"requests/s": measured["requests_per_second"]}
                    for (process, thread), cpu in ended.items():
                        name = names[key].get(thread, "other threads") if process == pid else "writer process"
                        us = 1e6 * (cpu - started.get((process, thread), 0.0)) / max(1, measured["requests"])
                        sample[name] = sample.get(name, 0.0) + us
                    sample["total"] = sum(v for k, v in sample.items() if k != "requests/s")
                    samples[key].append(sample)
                    serving.settle(pid)
        finally:
            for server in servers.values():
                server.stop()
    return {key: {name: statistics.median(s.get(name, 0.0) for s in runs) for name in {n for s in runs for n in s}}
            for key, runs in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--regression", action="store_true", help="the regression model's monitoring cost, part by part")
    parser.add_argument("--call-rows", type=int, default=7, help="--regression: rows per model call")
    parser.add_argument("--calls", type=int, default=10000, help="--regression: model calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="--regression: rounds (the median is shown)")
    parser.add_argument("--varied", action="store_true", help="--regression: calls of different rows (not one row repeated)")
    parser.add_argument("--threads", action="store_true", help="CPU per request of each thread of real servers")
    parser.add_argument("--concurrency", type=int, default=8, help="--threads: wrk connections")
    parser.add_argument("--seconds", type=float, default=2.0, help="--threads: seconds per load")
    parser.add_argument("--before", type=Path, help="--threads: also serve from this checkout's src")
    args = parser.parse_args()
    if args.threads:
        serving.ROWS[:] = serving.regression_frames()[1].drop(columns="target").to_numpy().tolist()[:64]
        result = server_threads(args.concurrency, args.seconds, args.rounds, args.before)
        columns = sorted({n for r in result.values() for n in r} - {"requests/s", "total"})
        print(f"\nregression model, c={args.concurrency}, median of {args.rounds} rounds of {args.seconds} s: CPU µs per request\n")
        print("| server | requests/s | " + " | ".join(columns) + " | total |")
        print("|---|---|" + "---|" * (len(columns) + 1))
        for key, r in result.items():
            cells = " | ".join(f"{r.get(c, 0.0):.1f}" for c in columns)
            print(f"| {key} | {r['requests/s']:,.0f} | {cells} | {r['total']:.1f} |")
        return
    if args.regression:
        serving.ROWS[:] = serving.regression_frames()[1].drop(columns="target").to_numpy().tolist()
        with tempfile.TemporaryDirectory(prefix="modelmon-phases-") as tmp:
            os.environ["MODELMON_HOME"] = tmp
            result = uvloop.run(regression_parts(serving.prepare_regression(Path(tmp)), args.call_rows, args.calls,
                                                    args.varied, args.rounds))
        rows = "different rows" if args.varied else "one row repeated, as serving.py sends"
        print(f"\nregression model, {args.call_rows} row(s) per model call ({rows}), {args.calls} calls, median of {args.rounds} rounds: CPU µs per row\n")
        print("| part | CPU µs per row |\n|---|---|")
        for name, us in result.items():
            print(f"| {name} | {us:.2f} |")
        print(f"| total beyond monitoring off | {sum(result.values()):.2f} |")
        return
    frame = serving.cancer_frame()
    serving.ROWS[:] = frame.drop(columns="target").to_numpy().tolist()[:64]
    with tempfile.TemporaryDirectory(prefix="modelmon-phases-") as tmp:
        os.environ["MODELMON_HOME"] = tmp
        registry = serving.prepare_modelmon(Path(tmp))
        for rows in args.rows:
            result = uvloop.run(measure(registry, rows, args.n))
            print(f"\n{rows} row(s) per request, {args.n} requests (µs):\n")
            print("| phase | median µs | mean µs |\n|---|---|---|")
            for name, x in result.items():
                print(f"| {name} | {x['median_us']:.1f} | {x['mean_us']:.1f} |")


if __name__ == "__main__":
    main()
