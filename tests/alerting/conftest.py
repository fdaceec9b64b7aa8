"""Sinks for alerting tests: an HTTP receiver and an SMTP server, both on loopback, written
here (not taken from the package) so that what they record is independent of the code
under test."""

from __future__ import annotations

import email
import email.policy
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


def require(*binaries: str) -> None:
    missing = [b for b in binaries if shutil.which(b) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class HttpSink:
    """Records every POST; ``fail_next`` makes the next N answer 500."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.fail_next = 0
        self.failed = 0
        #: Response bodies by path prefix (Telegram's client, for one, reads its answer).
        self.responses: dict[str, bytes] = {}
        self._cond = threading.Condition()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with sink._cond:
                    if sink.fail_next > 0:
                        sink.fail_next -= 1
                        sink.failed += 1
                        status = 500
                    else:
                        sink.requests.append(Request(self.path, dict(self.headers), body))
                        status = 200
                    sink._cond.notify_all()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.end_headers()
                body = next((v for k, v in sink.responses.items() if self.path.startswith(k)), b'{"ok": true}')
                self.wfile.write(body if status == 200 else b'{"error": "planned failure"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def on(self, path: str) -> list[Request]:
        with self._cond:
            return [r for r in self.requests if r.path == path]

    def wait(self, predicate: Callable[[Request], bool], timeout: float) -> Request | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for request in self.requests:
                    if predicate(request):
                        return request
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Mail:
    sender: str
    recipients: list[str]
    subject: str
    text: str
    html: str


@dataclass
class SmtpSink:
    """aiosmtpd on loopback, requiring AUTH with one user (over plain TCP, as a local sink)."""

    username: str
    password: str
    mails: list[Mail] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    def start(self) -> SmtpSink:
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult

        sink = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):
                message = email.message_from_bytes(envelope.content, policy=email.policy.default)
                text = message.get_body(preferencelist=("plain",))
                html = message.get_body(preferencelist=("html",))
                sink.mails.append(Mail(  # SMTP text comes with CRLF line ends
                    envelope.mail_from, list(envelope.rcpt_tos), str(message["subject"]),
                    text.get_content().replace("\r\n", "\n") if text else "",
                    html.get_content().replace("\r\n", "\n") if html else "",
                ))
                return "250 OK"

        def authenticator(server, session, envelope, mechanism, auth_data):
            login = getattr(auth_data, "login", b"")
            password = getattr(auth_data, "password", b"")
            login = login.decode() if isinstance(login, bytes) else str(login)
            password = password.decode() if isinstance(password, bytes) else str(password)
            ok = login == sink.username and password == sink.password
            sink.logins.append(f"{mechanism}:{login}:{'ok' if ok else 'refused'}")
            return AuthResult(success=ok)

        from modelmon.stack.processes import free_port

        self.port = free_port()
        self.controller = Controller(
            Handler(), hostname="127.0.0.1", port=self.port, authenticator=authenticator,
            auth_required=True, auth_require_tls=False,
            # Alertmanager speaks LOGIN only to servers that prompt "Username:"; aiosmtpd does not.
            auth_exclude_mechanism=["LOGIN"],
        )
        self.controller.start()
        return self

    def wait(self, predicate: Callable[[Mail], bool], timeout: float) -> Mail | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for mail in list(self.mails):
                if predicate(mail):
                    return mail
            time.sleep(0.1)
        return None

    def stop(self) -> None:
        self.controller.stop()


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    sink = HttpSink()
    yield sink
    sink.stop()


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink(username="modelmon", password="s3cret-from-a-file").start()
    yield sink
    sink.stop()


def cli(*args: str, env: dict[str, str] | None = None) -> Any:
    """The ``modelmon`` command in this process (quick, for error paths); ``.stderr`` holds
    what it told the user."""
    from typer.testing import CliRunner

    from modelmon.cli import app

    return CliRunner().invoke(app, list(args), env=env)


def modelmon(*args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = (), cwd: Path | None = None,
             timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real ``modelmon`` command (``unset``: variables removed from its environment)."""
    import os

    environment = {k: v for k, v in {**os.environ, **(env or {})}.items() if k not in unset}
    return subprocess.run([sys.executable, "-m", "modelmon.cli", *args], capture_output=True, text=True,
                          env=environment, cwd=cwd, timeout=timeout)
