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
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
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
