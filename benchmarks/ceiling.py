"""The ceiling of a Python V2 server on this machine: a bare ASGI app under the same uvicorn,
httptools, uvloop and flags as ``modelmon serve`` (see ``modelmon.serving.server``), which
reads the request's body and answers a fixed V2 JSON response shaped like modelmon's answer
to one row. ``benchmarks/serving.py`` runs it as a reference row (issue 21).

    python benchmarks/ceiling.py PORT
"""

from __future__ import annotations

import json
import sys

import uvicorn

#: modelmon's answer to one row of the breast-cancer model, with made-up values.
RESPONSE = json.dumps({
    "model_name": "bc", "model_version": "1", "id": "00000000000000000000000000000000",
    "outputs": [
        {"name": "label", "shape": [1], "datatype": "BYTES", "data": ["1"]},
        {"name": "probabilities", "shape": [1, 2], "datatype": "FP64", "data": [0.01, 0.99]},
        {"name": "prediction_id", "shape": [1], "datatype": "BYTES", "data": ["0123456789abcdef-1"]},
    ],
}, separators=(",", ":")).encode()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(RESPONSE)).encode())]


async def app(scope: dict, receive, send) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    more = True
    while more:  # read the whole body, as a server must
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": RESPONSE})


def main() -> None:
    # The flags of modelmon.serving.server.build_server.
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), loop="uvloop", http="httptools", lifespan="on",
                access_log=False, proxy_headers=False, log_level="warning")


if __name__ == "__main__":
    main()
