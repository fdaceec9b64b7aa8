"""Helpers for tests that check the /metrics exposition through a real Prometheus."""

from __future__ import annotations

import math
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping

import httpx

from modelmon.stack.prometheus import Prometheus

Vector = dict[tuple[str, ...], float]


def vector(prom: Prometheus, promql: str, labels: tuple[str, ...]) -> Vector:
    """An instant query's result keyed by the values of ``labels`` (missing label -> "")."""
    out: Vector = {}
    for series in prom.query(promql):
        key = tuple(series["metric"].get(name, "") for name in labels)
        if key in out:
            raise AssertionError(f"{promql!r}: two series for {dict(zip(labels, key, strict=True))}")
        out[key] = float(series["value"][1])
    return out


def wait_for_vector(
    prom: Prometheus,
    promql: str,
    labels: tuple[str, ...],
    expected: Mapping[tuple[str, ...], float],
    timeout: float = 30.0,
) -> Vector:
    """Poll until the query's vector equals ``expected`` exactly; return the last one seen."""
    deadline = time.monotonic() + timeout
    while True:
        seen = vector(prom, promql, labels)
        if seen == dict(expected) or time.monotonic() > deadline:
            return seen
        time.sleep(0.25)


def wait_until(
    prom: Prometheus, promql: str, accept: Callable[[float | None], bool], timeout: float = 30.0
) -> float | None:
    """Poll a single-valued query until ``accept(value)``; return the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = prom.scalar(promql)
        if accept(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.25)


def scalar_at(prom: Prometheus, promql: str, at: float) -> float | None:
    """The single value of an instant query evaluated at unix time ``at``, or None."""
    response = httpx.get(f"{prom.url}/api/v1/query", params={"query": promql, "time": at}, timeout=10)
    body = response.json()
    if body.get("status") != "success":
        raise RuntimeError(f"query {promql!r} failed: {body}")
    result = body["data"]["result"]
    if not result:
        return None
    if len(result) > 1:
        raise RuntimeError(f"query {promql!r} returned {len(result)} series, expected one")
    return float(result[0]["value"][1])


def wait_for_first_scrape(prom: Prometheus, job: str = "modelmon", timeout: float = 30.0) -> None:
    """Block until Prometheus has scraped ``job`` successfully at least once."""
    value = wait_until(prom, f'up{{job="{job}"}}', lambda v: v == 1.0, timeout)
    if value != 1.0:
        log = prom.log_path.read_text()[-2000:]
        raise TimeoutError(f"prometheus did not scrape {job} within {timeout} s (up={value}); log:\n{log}")


def is_finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def promtool_check_metrics(exposition: bytes) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition, read from stdin as the docs show."""
    binary = shutil.which("promtool")
    if binary is None:
        raise FileNotFoundError("promtool is not installed (Debian package `prometheus`)")
    return subprocess.run(
        [binary, "check", "metrics"],
        input=exposition.decode(),
        capture_output=True,
        text=True,
        timeout=30,
    )
