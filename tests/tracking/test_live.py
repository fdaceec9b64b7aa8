"""Live training gauges read back through a real Prometheus: pulled from the training
process's port, and pushed through a real Pushgateway (Debian ``prometheus-pushgateway``).
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelmon.stack.processes import free_port, stop_process, wait_for_http
from modelmon.stack.prometheus import Prometheus
from modelmon.tracking import start_run

pytestmark = pytest.mark.slow


@dataclass
class Stack:
    prom: Prometheus
    live_port: int
    pushgateway: str


def start_pushgateway(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus-pushgateway") or shutil.which("pushgateway")
    if binary is None:
        pytest.fail("the Pushgateway is not installed: apt-get install prometheus-pushgateway")
    port = free_port()
    log = workdir / "pushgateway.log"
    process = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), cwd=workdir,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/-/ready", timeout=30, process=process)
    except Exception:
        stop_process(process)
        raise RuntimeError(f"pushgateway did not start:\n{log.read_text()[-2000:]}") from None
    return process, url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    pushgateway, url = start_pushgateway(tmp_path_factory.mktemp("pushgateway"))
    live_port = free_port()
    try:
        prom = Prometheus.start(
            tmp_path_factory.mktemp("prometheus"),
            targets=[f"127.0.0.1:{live_port}", url.removeprefix("http://")],
            scrape_interval="1s",
        )
    except Exception:
        stop_process(pushgateway)
        raise
    try:
        yield Stack(prom=prom, live_port=live_port, pushgateway=url)
    finally:
        prom.stop()
        stop_process(pushgateway)


def selector(run_id: int, **labels: str) -> str:
    matchers = ['experiment="live"', f'run="{run_id}"'] + [f'{k}="{v}"' for k, v in labels.items()]
    return "{" + ",".join(matchers) + "}"


def wait_until_gone(prom: Prometheus, promql: str, timeout: float = 30.0) -> list:
    deadline = time.monotonic() + timeout
    while (result := prom.query(promql)) and time.monotonic() < deadline:
        time.sleep(0.25)
    return result


def check_live_values(prom: Prometheus, run, *, when: float) -> None:
    metric = "modelmon_training_metric"
    assert (
        prom.wait_for(f"{metric}{selector(run.id, split='validation', metric='accuracy')}", 0.75)
        == 0.75
    )
    assert prom.scalar(f"{metric}{selector(run.id, split='train', metric='loss')}") == 0.5
    assert prom.scalar(f"modelmon_training_epoch{selector(run.id)}") == 2
    updated = prom.scalar(f"modelmon_training_last_update_timestamp_seconds{selector(run.id)}")
    assert updated is not None and when - 1 <= updated <= time.time()
    # A later epoch replaces the values.
    run.log_metrics({"accuracy": 0.9, "loss": float("nan")}, step=3, split="validation")
    run.flush()
    assert (
        prom.wait_for(f"{metric}{selector(run.id, split='validation', metric='accuracy')}", 0.9)
        == 0.9
    )
    assert prom.wait_for(f"modelmon_training_epoch{selector(run.id)}", 3) == 3
    nan = prom.scalar(f"{metric}{selector(run.id, split='validation', metric='loss')}")
    assert nan is not None and math.isnan(nan)


def test_gauges_on_the_training_process_port(stack: Stack, sqlite_url: str) -> None:
    started = time.time()
    with start_run("live", store=sqlite_url, live_port=stack.live_port) as run, \
         start_run("live", store=sqlite_url, live_port=stack.live_port) as other:
        run.log_metrics({"loss": 0.5}, step=1, split="train")
        run.log_metrics({"accuracy": 0.75}, step=2, split="validation")
        other.log_metrics({"loss": 0.25}, step=7, split="train")
        check_live_values(stack.prom, run, when=started)
        assert stack.prom.wait_for(f"modelmon_training_epoch{selector(other.id)}", 7) == 7
        other.end()
        # The ended run's series go at the next scrape; the active run's stay.
        assert wait_until_gone(stack.prom, f"modelmon_training_epoch{selector(other.id)}") == []
        assert stack.prom.scalar(f"modelmon_training_epoch{selector(run.id)}") == 3
    assert wait_until_gone(stack.prom, f'{{__name__=~"modelmon_training_.*",run="{run.id}"}}') == []


def test_gauges_pushed_to_a_pushgateway(stack: Stack, sqlite_url: str) -> None:
    started = time.time()
    with start_run(
        "live", store=sqlite_url, pushgateway=stack.pushgateway, flush_seconds=0.2
    ) as run:
        run.log_metrics({"loss": 0.5}, step=1, split="train")
        run.log_metrics({"accuracy": 0.75}, step=2, split="validation")
        check_live_values(stack.prom, run, when=started)
        pushed = httpx.get(f"{stack.pushgateway}/metrics", timeout=5).text
        assert f'run="{run.id}"' in pushed and 'job="modelmon_training"' in pushed
    # Ending the run deletes its group from the Pushgateway, so Prometheus loses the series.
    assert f'run="{run.id}"' not in httpx.get(f"{stack.pushgateway}/metrics", timeout=5).text
    assert wait_until_gone(stack.prom, f'{{__name__=~"modelmon_training_.*",run="{run.id}"}}') == []
