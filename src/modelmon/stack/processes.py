"""Child processes that serve HTTP on loopback: Prometheus, Alertmanager."""

from __future__ import annotations

import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_http(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` has exited."""
    deadline = time.monotonic() + timeout
    last_error = ""
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process exited with code {process.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last_error = str(exc)
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout} s ({last_error})")


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class LoopbackService:
    """A server binary started on 127.0.0.1 with its own working directory and log."""

    workdir: Path
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    @classmethod
    def launch(cls, name: str, command: list[str], workdir: Path, port: int, ready_path: str = "/-/ready") -> Self:
        """Run ``command`` (stderr to ``<workdir>/<name>.log``) and wait until ``ready_path``
        answers; if it never does, stop it and raise with the log's end."""
        log_path = workdir / f"{name}.log"
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log_path.open("wb"))
        instance = cls(workdir=workdir, port=port, process=process, log_path=log_path)
        try:
            wait_for_http(f"{instance.url}{ready_path}", timeout=30, process=process)
        except Exception:
            instance.stop()
            raise RuntimeError(f"{name} did not start; log:\n{log_path.read_text()[-2000:]}") from None
        return instance

    def stop(self) -> None:
        stop_process(self.process)
