"""``modelmon alerts ...``, ``modelmon notify-bridge`` and ``modelmon stack ...``."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, NoReturn
from urllib.parse import urlsplit

import typer

from modelmon.console import fail, say
from modelmon.errors import ModelmonError

alerts_app = typer.Typer(help="Alerting: export Prometheus rules, Alertmanager and Grafana alerting configuration.", no_args_is_help=True)
stack_app = typer.Typer(help="A local Prometheus and Alertmanager for the running server.", no_args_is_help=True)

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="modelmon.yaml: channels, routing and rules \\[default: ./modelmon.yaml if present, else the built-in rules alone]."),
]


def _fail(message: str) -> NoReturn:
    fail(message)


def _load(path: Path | None):
    from modelmon.alerting.config import load_config

    if path is None and Path("modelmon.yaml").exists():
        path = Path("modelmon.yaml")
    try:
        return load_config(path)
    except ModelmonError as exc:
        _fail(exc.message)


def _run(args: list[str], cwd: Path | None = None) -> tuple[bool, str]:
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True)
    return result.returncode == 0, (result.stdout + result.stderr).strip()


@alerts_app.command("export")
def alerts_export(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write prometheus/, alertmanager/ and grafana/ into.")],
    config: ConfigOption = None,
    alertmanager: Annotated[bool, typer.Option("--alertmanager/--no-alertmanager", help="Write the Alertmanager configuration (reads its secrets now).")] = True,
    check: Annotated[bool, typer.Option("--check/--no-check", help="Run promtool and amtool on what was written, when installed.")] = False,
) -> None:
    """Write Prometheus rules with their promtool tests, the Alertmanager configuration and
    Grafana alerting provisioning, from modelmon.yaml."""
    from modelmon.alerting.export import export

    settings = _load(config)
    try:
        result = export(settings, out_dir, alertmanager_files=alertmanager)
    except ModelmonError as exc:
        _fail(exc.message)
    say(f"wrote {len(result.alert_names)} alert rules to {out_dir}:")
    for path in [*result.rule_files, *result.test_files, result.alertmanager_config, *result.grafana_files]:
        if path is not None:
            say(f"  {path}")
    if result.substituted_secrets:
        say((f"{result.alertmanager_config} holds secrets", "yellow"), " (mode 0600): "
            f"{', '.join(result.substituted_secrets)} (from the environment, or fields Alertmanager 0.25 cannot read from a file)")
    for note in result.notes:
        say(("note:", "yellow"), f" {note}")
    if check and not check_export(result):
        raise typer.Exit(code=1)
    if not check:
        prom_dir = result.rule_files[0].parent
        say(f"check them with:\n  promtool check rules {prom_dir}/*.rules.yml\n"
            f"  cd {prom_dir} && promtool test rules *.test.yml")
        if result.alertmanager_config:
            say(f"  amtool check-config {result.alertmanager_config}")


def check_export(result) -> bool:
    """promtool and amtool on an export, where installed; True when everything passed."""
    import shutil

    ok = True
    promtool = shutil.which("promtool")
    if promtool is None:
        say("promtool not found: rules not checked (sudo apt-get install prometheus)")
    else:
        # One promtool per test file, at once: promtool runs a file's cases one after another,
        # and the two files the example configuration exports took 16.2-16.5 s in one run on
        # 2 cores, 12.1-12.5 s side by side (the same CPU time).
        runs = [([promtool, "check", "rules", *map(str, result.rule_files)], None),
                *(([promtool, "test", "rules", p.name], p.parent) for p in result.test_files)]
        with ThreadPoolExecutor(len(runs)) as pool:
            outcomes = list(pool.map(lambda run: _run(*run), runs))
        for what, done in [("check rules", outcomes[:1]), ("test rules", outcomes[1:])]:
            passed = all(p for p, _ in done)
            ok &= passed
            say(_verdict(passed), f": {what}")
            if not passed:
                say("\n".join(output for p, output in done if not p))
    if result.alertmanager_config is not None:
        amtool = shutil.which("amtool")
        if amtool is None:
            say("amtool not found: Alertmanager config not checked (sudo apt-get install prometheus-alertmanager)")
        else:
            passed, output = _run([amtool, "check-config", str(result.alertmanager_config)])
            ok &= passed
            say(_verdict(passed), ": amtool check-config")
            if not passed:
                say(output)
    return ok


def _verdict(passed: bool) -> tuple[str, str]:
    return ("passed", "green") if passed else ("FAILED", "red")


def notify_bridge(
    config: ConfigOption = None,
    url: Annotated[list[str] | None, typer.Option("--url", help="Apprise URL for payloads posted to /alertmanager or /grafana without a channel (repeatable).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Port to listen on \\[default: the port of bridge.url in modelmon.yaml, else 9096].")] = None,
    attempts: Annotated[int | None, typer.Option(help="Delivery attempts per message \\[default: bridge.attempts, 5].")] = None,
    retry_seconds: Annotated[float | None, typer.Option(help="First retry delay, doubled each time \\[default: bridge.retry_seconds, 2].")] = None,
    token_file: Annotated[Path | None, typer.Option(help="File holding the bearer token every webhook must carry \\[default: bridge.token in modelmon.yaml, else $MODELMON_BRIDGE_TOKEN]; without a token the bridge listens on loopback only.")] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
) -> None:
    """Forward Alertmanager and Grafana webhooks to any Apprise URL (SMS, chat, email...),
    with a bearer token, bounded queues and a rate limit per channel (docs/alerting.md)."""
    import logging

    import uvicorn

    from modelmon.alerting.bridge import (
        DEFAULT_CHANNEL,
        bridge_from_config,
        check_urls,
        split_urls,
        targets_from_config,
    )

    settings = _load(config)
    try:
        targets = targets_from_config(settings)
        if url:
            targets[DEFAULT_CHANNEL] = [u for item in url for u in split_urls(item)]
        if not targets:
            raise ModelmonError("no Apprise URL: give --url, or an apprise channel in modelmon.yaml (--config)")
        check_urls(targets)
    except ModelmonError as exc:
        _fail(exc.message)
    if attempts is not None and attempts < 1:
        _fail("--attempts: must be at least 1")
    if retry_seconds is not None and retry_seconds <= 0:
        _fail("--retry-seconds: must be more than 0")
    port = port if port is not None else (urlsplit(settings.bridge.url).port or 9096)
    try:
        bridge, token_source = bridge_from_config(settings, targets, host=host, token_file=token_file,
                                                  attempts=attempts, retry_seconds=retry_seconds)
    except ModelmonError as exc:
        _fail(exc.message)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    say(f"notify-bridge on http://{host}:{port}: channels {', '.join(sorted(targets))} "
        f"(POST /alertmanager/<channel> or /grafana/<channel>; metrics at /metrics); "
        f"token: {token_source if token_source != 'none' else 'none (loopback only)'}")
    uvicorn.run(bridge.app, host=host, port=port, log_level=log_level)


@stack_app.command("up")
def stack_up(
    config: ConfigOption = None,
    target: Annotated[list[str] | None, typer.Option("--target", help="host:port of a modelmon server to scrape (repeatable).")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="Where the configuration and data go \\[default: $MODELMON_HOME/stack].")] = None,
    prometheus_port: Annotated[int, typer.Option(help="Port of Prometheus.")] = 9090,
    alertmanager_port: Annotated[int, typer.Option(help="Port of Alertmanager.")] = 9093,
    scrape_interval: Annotated[str, typer.Option(help="How often Prometheus scrapes and evaluates the rules.")] = "15s",
    bridge: Annotated[bool, typer.Option("--bridge/--no-bridge", help="Also start notify-bridge when modelmon.yaml has apprise channels.")] = True,
) -> None:
    """Start Prometheus and Alertmanager on loopback with the generated configuration and the
    running server as target; stop them with Ctrl-C."""
    from modelmon.alerting.config import check_duration
    from modelmon.alerting.export import export
    from modelmon.alerting.stack import ALERTMANAGER_INSTALL_HINT, Alertmanager, alertmanager_binary
    from modelmon.config import modelmon_home
    from modelmon.stack.prometheus import INSTALL_HINT, Prometheus, prometheus_binary

    try:
        check_duration(scrape_interval)
    except ValueError as exc:
        _fail(f"--scrape-interval: {exc}")
    settings = _load(config)
    targets = target or ["127.0.0.1:8080"]
    have_prometheus, have_alertmanager = prometheus_binary() is not None, alertmanager_binary() is not None
    if not have_prometheus:
        say(f"Prometheus is not installed; {INSTALL_HINT}")
    if not have_alertmanager:
        say(f"Alertmanager is not installed; {ALERTMANAGER_INSTALL_HINT}")
    if not (have_prometheus or have_alertmanager):
        raise typer.Exit(code=1)
    directory = directory or modelmon_home() / "stack"
    try:
        result = export(settings, directory / "config", alertmanager_files=have_alertmanager)
    except ModelmonError as exc:
        _fail(exc.message)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    running: list = []
    try:
        alertmanager = None
        if result.alertmanager_config is not None:  # written when Alertmanager is installed
            alertmanager = Alertmanager.start(result.alertmanager_config, directory / "alertmanager", port=alertmanager_port)
            running.append(alertmanager)
            say(f"Alertmanager  {alertmanager.url}")
        if bridge and have_alertmanager and any(c.type == "apprise" for c in settings.channels):
            process = _start_bridge(config, settings, directory)
            running.append(process)
            say(f"notify-bridge {settings.bridge.url}")
        if have_prometheus:
            prometheus = Prometheus.start(
                directory / "prometheus", targets, scrape_interval=scrape_interval, port=prometheus_port,
                rule_files=result.rule_files, alertmanagers=[f"127.0.0.1:{alertmanager.port}"] if alertmanager else [],
                job=settings.prometheus.job,
            )
            running.append(prometheus)
            say(f"Prometheus    {prometheus.url} scraping {', '.join(targets)} "
                f"({len(result.alert_names)} alert rules)")
        say("running; Ctrl-C stops everything")
        stop.wait()
    except (RuntimeError, FileNotFoundError) as exc:
        fail(str(exc), code=1)
    finally:
        for item in reversed(running):
            if isinstance(item, subprocess.Popen):
                from modelmon.stack.processes import stop_process

                stop_process(item)
            else:
                item.stop()
    say("stopped")


def _start_bridge(config: Path | None, settings, directory: Path) -> subprocess.Popen[bytes]:
    from modelmon.stack.processes import wait_for_http

    port = urlsplit(settings.bridge.url).port or 9096
    log = (directory / "notify-bridge.log").open("wb")
    args = [sys.executable, "-m", "modelmon.cli", "notify-bridge", "--port", str(port)]
    if config is not None or Path("modelmon.yaml").exists():
        args += ["--config", str(config or "modelmon.yaml")]
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    wait_for_http(f"http://127.0.0.1:{port}/-/healthy", timeout=30, process=process)
    return process
