"""The parts of a fleet on loopback: replicas in fixed slots, HAProxy in front of them, a
Prometheus that finds them through file-based service discovery, and a load generator.

A slot is what Kubernetes calls a pod's place in a Deployment: a fixed port (HAProxy's
server line) and a MODELMON_HOME (the journal, like a pod's emptyDir), each incarnation of
the slot a new process with a new ``pod`` label, as a new pod gets a new name.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pandas as pd
import yaml

from modelmon.stack.processes import free_port, stop_process, wait_for_http
from modelmon.stack.prometheus import Prometheus, prometheus_binary

REPO = Path(__file__).resolve().parents[2]
REPLICA_HEADER = "X-Modelmon-Replica"


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or next((p for p in ("/usr/sbin/haproxy",) if Path(p).exists()), None)


@dataclass
class Slot:
    """One replica's place in the fleet and its current process."""

    name: str
    port: int
    home: Path
    registry: Path
    args: tuple[str, ...]
    log_dir: Path
    incarnation: int = 0
    process: subprocess.Popen[bytes] | None = None
    #: Seconds each start took to ready, and each SIGTERM to exit (reported, not asserted).
    start_seconds: list[float] = field(default_factory=list)
    stop_seconds: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pod(self) -> str:
        return f"{self.name}-{self.incarnation}"

    def start(self) -> None:
        self.incarnation += 1
        began = time.monotonic()
        log = self.log_dir / f"{self.pod}.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "modelmon.cli", "serve", "--registry", str(self.registry),
             "--port", str(self.port), *self.args],
            stdout=log.open("wb"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), "MODELMON_HOME": str(self.home)},
        )
        try:
            wait_for_http(f"{self.url}/v2/health/ready", timeout=90, process=self.process)
        except Exception:
            stop_process(self.process)
            raise RuntimeError(f"{self.pod} did not start:\n{log.read_text()[-3000:]}") from None
        self.start_seconds.append(time.monotonic() - began)

    def terminate(self, timeout: float = 180.0) -> int:
        """SIGTERM, as Kubernetes sends it: the replica drains, then exits; its exit code."""
        assert self.process is not None
        began = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout)
        self.stop_seconds.append(time.monotonic() - began)
        return code

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class HAProxy:
    """HAProxy in front of the slots: round robin, a readiness check every 100 ms (2 s to answer) that takes a
    replica out at its first failure, and L7 retries on another replica for a request whose
    connection failed or whose reply never came (a replica that was SIGKILLed)."""

    def __init__(self, workdir: Path, slots: list[Slot]) -> None:
        binary = haproxy_binary()
        if binary is None:
            raise FileNotFoundError("haproxy is not installed (Debian package haproxy)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.socket = workdir / "haproxy.sock"
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(self.port, self.socket, slots))
        check = subprocess.run([binary, "-c", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"haproxy -c failed:\n{check.stdout}{check.stderr}")
        self.log = workdir / "haproxy.log"
        self.process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=self.log.open("wb"), stderr=subprocess.STDOUT)
        self.wait_for(lambda status: all(s == "UP" for s in status.values()), timeout=30)

    def status(self) -> dict[str, str]:
        """Each server's state as HAProxy's runtime API reports it (UP, DOWN, ...)."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.socket))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        lines = data.decode().splitlines()
        header = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            if not line:
                continue
            row = dict(zip(header, line.split(","), strict=False))
            if row["pxname"] == "replicas" and row["svname"] not in ("FRONTEND", "BACKEND"):
                out[row["svname"]] = row["status"].split(" ")[0]
        return out

    def wait_for(self, accept, timeout: float = 30.0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status()
                if accept(status):
                    return status
            except OSError:
                status = {}
            if time.monotonic() > deadline:
                raise TimeoutError(f"haproxy: {status}; log:\n{self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.process)


def haproxy_config(port: int, stats_socket: Path, slots: list[Slot]) -> str:
    servers = "\n".join(f"    server {s.name} 127.0.0.1:{s.port}" for s in slots)
    return f"""\
global
    stats socket {stats_socket} mode 600 level admin
    maxconn 512

defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # Without it a check's timeout is its interval (100 ms): a busy replica is then taken
    # out for answering slowly, and with all of them out HAProxy answers 503 itself.
    timeout check 2s
    # A request whose replica refused the connection or died before answering goes to
    # another one (predictions are safe to repeat: a retried one gets a new id).
    retries 3
    option redispatch 1
    retry-on conn-failure empty-response response-timeout
    option http-buffer-request

frontend fleet
    bind 127.0.0.1:{port}
    default_backend replicas

backend replicas
    balance roundrobin
    option httpchk GET /v2/health/ready
    http-check expect status 200
    default-server check inter 100ms fall 1 rise 1
    http-response set-header {REPLICA_HEADER} %s
{servers}
"""


class DiscoveredPrometheus:
    """Prometheus scraping the slots listed in a file_sd file, each target labelled with its
    ``pod``; loads ``rule_files`` and sends alerts to ``alertmanager``."""

    def __init__(self, workdir: Path, rule_files: list[Path], alertmanager: str, scrape_interval: str = "500ms") -> None:
        binary = prometheus_binary()
        if binary is None:
            raise FileNotFoundError("prometheus is not installed (Debian package prometheus)")
        workdir.mkdir(parents=True, exist_ok=True)
        self.targets_file = workdir / "targets.json"
        self.targets_file.write_text("[]")
        config = {
            "global": {"scrape_interval": scrape_interval, "evaluation_interval": "1s"},
            "rule_files": [str(p.resolve()) for p in rule_files],
            "alerting": {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]},
            "scrape_configs": [{
                "job_name": "modelmon",
                "file_sd_configs": [{"files": [str(self.targets_file)], "refresh_interval": "1s"}],
            }],
        }
        (workdir / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
        port = free_port()
        command = [binary, f"--config.file={workdir / 'prometheus.yml'}", f"--storage.tsdb.path={workdir / 'data'}",
                   f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"]
        self.prometheus: Prometheus = Prometheus.launch("prometheus", command, workdir, port)

    def discover(self, slots: list[Slot]) -> None:
        """Write the targets file (atomically: Prometheus watches it) and wait until the
        active targets are exactly these incarnations."""
        groups = [{"targets": [f"127.0.0.1:{s.port}"], "labels": {"pod": s.pod}} for s in slots]
        tmp = self.targets_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        tmp.replace(self.targets_file)
        wanted = {s.pod for s in slots}
        deadline = time.monotonic() + 30
        while True:
            active = httpx.get(f"{self.prometheus.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
            if {t["labels"].get("pod") for t in active} == wanted:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"prometheus targets {active}, wanted {wanted}")
            time.sleep(0.1)

    def wait_scraped_after(self, slot: Slot, moment: float, timeout: float = 30.0) -> None:
        """Block until ``slot``'s current incarnation has been scraped after ``moment`` (unix time)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            active = httpx.get(f"{self.prometheus.url}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
            for t in active:
                if t["labels"].get("pod") == slot.pod and t["health"] == "up":
                    scraped = pd.Timestamp(t["lastScrape"]).timestamp()
                    if scraped > moment:
                        return
            time.sleep(0.1)
        raise TimeoutError(f"{slot.pod} not scraped after {moment}")

    def stop(self) -> None:
        self.prometheus.stop()


@dataclass
class Answer:
    replica: str
    ids: list[str]
    labels: list[str]
    rows: list[int]  # positions in the load's frame


@dataclass
class Load:
    """Clients sending predictions through the load balancer until stopped; every answer
    and every failure kept."""

    url: str
    frame: pd.DataFrame  # features only
    clients: int = 3
    rows_per_request: int = 4
    #: Each client's pause between requests: enough load to keep every replica busy
    #: without starving the replicas being started on a small machine.
    pause: float = 0.01
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _next: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            thread = threading.Thread(target=self._run, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(60)

    def _take(self) -> list[int]:
        with self._lock:
            start = self._next
            self._next += self.rows_per_request
        n = len(self.frame)
        return [(start + i) % n for i in range(self.rows_per_request)]

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.wait(self.pause):
                rows = self._take()
                body = {"instances": self.frame.iloc[rows].to_dict("records")}
                try:
                    response = client.post(f"{self.url}/v1/models/shop:predict", json=body)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if response.status_code != 200:
                    self.failures.append(f"{response.status_code}: {response.text[:200]}")
                    continue
                predictions = response.json()["predictions"]
                self.answers.append(Answer(response.headers.get(REPLICA_HEADER, ""), [p["id"] for p in predictions],
                                           [p["label"] for p in predictions], rows))

    def wait_answers(self, n: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.answers)
        while len(self.answers) < start + n and time.monotonic() < deadline:
            time.sleep(0.02)

    def by_id(self) -> Iterator[tuple[str, str, int]]:
        for answer in self.answers:
            yield from zip(answer.ids, answer.labels, answer.rows, strict=True)
