"""``modelmon demo`` end to end, as a user runs it: a real subprocess, server and Prometheus."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from modelmon.demo.run import run_demo
from modelmon.errors import ModelmonError
from modelmon.registry import Registry
from modelmon.stack.processes import free_port
from modelmon.stack.prometheus import prometheus_binary


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that contain ``text`` (Linux /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            command = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in command:
            found.append(command)
    return found


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "demo",
         "--port", str(free_port()), "--requests", "300"],
        env={**os.environ, "MODELMON_HOME": str(home), "COLUMNS": "120"},
        capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "What the clients saw" in out
    assert "300 in" in out
    assert "Done in" in out
    # The rollout phase: version 2, worse on the drifted customers, rolled back before any label.
    assert Registry(home / "registry").versions("churn") == [1, 2]
    assert "7. Rollout" in out and "on estimated_quality: its interval" in out and "with no label sent" in out
    # ...and truly worse: its accuracy on the true labels of the rows each version answered.
    found = re.search(r"version 1 (0\.\d+) on \d+ rows, version 2 (0\.\d+) on \d+ rows", out)
    assert found is not None, out
    assert float(found[1]) > float(found[2])
    if prometheus_binary() is not None:
        assert "Read back from Prometheus" in out
        assert "partial" not in out
        assert "200: " in out and "400: " in out
    else:
        assert "no Prometheus found" in out
    assert processes_mentioning(str(home)) == []


def test_a_taken_port_fails_at_once_and_says_what_to_do(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ModelmonError, match="--port"):
            run_demo(port=port, requests=10, home=tmp_path)
    assert not (tmp_path / "registry").exists()
