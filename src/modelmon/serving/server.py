"""Running the app under uvicorn, with a shutdown that loses no request.

On SIGTERM the server first reports not-ready (``/v2/health/ready`` -> 503) while it keeps
serving for ``drain_seconds``, so a load balancer stops sending to it; then uvicorn stops
accepting connections, lets in-flight requests finish, and the batchers drain their queues.
SIGINT (Ctrl-C) skips the drain; a second signal of either kind exits at once.
"""

from __future__ import annotations

import signal
import time
from types import FrameType

import uvicorn

from modelmon.serving.app import ModelServer, create_app


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, model_server: ModelServer) -> None:
        super().__init__(config)
        self.model_server = model_server
        self.exit_at: float | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        drain = self.model_server.settings.drain_seconds
        if sig == signal.SIGTERM and self.exit_at is None and drain > 0:
            self.model_server.ready = False
            self.exit_at = time.monotonic() + drain
            return
        self.model_server.ready = False
        super().handle_exit(sig, frame)

    async def on_tick(self, counter: int) -> bool:
        if self.exit_at is not None and time.monotonic() >= self.exit_at:
            return True
        return await super().on_tick(counter)


def build_server(model_server: ModelServer, host: str, port: int, log_level: str = "warning") -> DrainingServer:
    config = uvicorn.Config(
        create_app(model_server),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        proxy_headers=False,  # nothing reads the client address; saves a middleware per request
        log_level=log_level,
        timeout_graceful_shutdown=30,
    )
    return DrainingServer(config, model_server)


def serve(model_server: ModelServer, host: str = "127.0.0.1", port: int = 8080, log_level: str = "warning") -> None:
    build_server(model_server, host, port, log_level).run()
