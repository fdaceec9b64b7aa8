"""``modelmon demo``: a churn model from training to monitored production traffic.

A thin script over the public API, in the order a user would go: train a scikit-learn
pipeline on synthetic customers (``modelmon.demo.data``), register it, serve it, let
Prometheus scrape the server, send live traffic (whose second half has drifted), and read
the monitoring back through PromQL. Everything it starts, it stops, error or not.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time
from collections import Counter
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import numpy as np
import orjson
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelmon import ModelCard, Registry, register_model
from modelmon.alerting.local import LocalAlerting
from modelmon.config import modelmon_home
from modelmon.demo.data import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TARGET, generate_customers
from modelmon.demo.rollout import classifier_candidate, rollout_phase, wait_for_rollout_series
from modelmon.errors import ModelmonError
from modelmon.monitoring.drift import DriftSettings
from modelmon.monitoring.methods import PSI
from modelmon.rules.drift import drift_rules, dump_yaml
from modelmon.rules.drift import name as drift_rule_name
from modelmon.rules.quality import quality_rule_group
from modelmon.serving.app import ModelServer
from modelmon.serving.prediction_log import PredictionLogSettings
from modelmon.serving.server import DrainingServer, build_server
from modelmon.serving.settings import ServingSettings
from modelmon.stack.processes import free_port
from modelmon.stack.prometheus import INSTALL_HINT, Prometheus, prometheus_binary
from modelmon.streams.labels import send_label_messages
from modelmon.streams.metrics import StreamMetrics
from modelmon.streams.server import LabelStream
from modelmon.streams.urls import StreamTarget, parse_stream_url
from modelmon.tracking import Run, start_run
from modelmon.tracking.records import metric_frame
from modelmon.tracking.sklearn import EpochReport, fit_epochs

MODEL = "churn"
#: The training experiment of the scikit-learn churn run (the Keras demo logs its own).
EXPERIMENT = "churn-demo"
#: What ``--model`` chooses between: the model the demo trains.
DEMO_MODELS = ("sklearn", "keras")
#: What ``--task`` chooses between: churn (classification) or next month's spend (regression).
DEMO_TASKS = ("classification", "regression")
HOST = "127.0.0.1"
TRAIN_ROWS, VALIDATION_ROWS = 5000, 2000
#: Concurrent clients: enough that requests queue behind a busy model and get batched.
CONCURRENCY = 8
MAX_ROWS_PER_REQUEST = 8
#: Shares of V2 infer, V1 records and deliberately bad requests in the traffic.
TRAFFIC_MIX = {"v2": 0.70, "v1": 0.25, "bad": 0.05}
BAD_KINDS = ("missing feature", "number sent as text", "text in a number", "malformed JSON")
JSON_HEADERS = {"content-type": "application/json"}
SCRAPE_TIMEOUT = 20.0
#: The server scores drift on its most recent rows: after the demo's traffic, that is the
#: drifted second half. Prometheus's recording rules score the whole run.
DRIFT_WINDOW_ROWS = 4000
RULES_WINDOW = "10m"
DRIFT_SCORE_SECONDS = 1.0


def run_demo(port: int = 8080, requests: int = 3000, home: Path | None = None, model: str = "sklearn",
             labels_from: str | None = None, task: str = "classification") -> None:
    """Train, register, serve, send ``requests`` requests, and report what monitoring saw.
    ``model``: ``sklearn`` (a logistic regression) or ``keras`` (a small Keras network,
    ``modelmon.demo.keras_churn``). ``labels_from``: a broker URL the labels go through
    (docs/streams.md) instead of the feedback endpoint. ``task="regression"``: the spend
    model of ``modelmon.demo.regression`` instead (``model`` sklearn, no ``labels_from``)."""
    if requests < 1:
        raise ModelmonError(f"requests must be at least 1, got {requests}")
    if task not in DEMO_TASKS:
        raise ModelmonError(f"--task must be one of {', '.join(DEMO_TASKS)}, got {task!r}")
    if task == "regression":
        from modelmon.demo.regression import run_regression_demo

        if model != "sklearn" or labels_from is not None:  # said, rather than silently ignored
            raise ModelmonError("--task regression trains a scikit-learn model and sends labels to the "
                                "feedback endpoint: it takes neither --model keras nor --labels-from")

        run_regression_demo(port=port, requests=requests, home=home)
        return
    if model not in DEMO_MODELS:
        raise ModelmonError(f"--model must be one of {', '.join(DEMO_MODELS)}, got {model!r}")
    home = Path(home) if home is not None else modelmon_home()
    console = Console()
    started = time.perf_counter()
    url = f"http://{HOST}:{port}"
    with ExitStack() as running:  # stops what started, in reverse order, error or not
        sock = running.enter_context(closing(bind_port(port)))
        console.rule("[bold]modelmon demo[/bold]: a churn model from training to production")
        if model == "keras":  # Keras takes seconds to import: before Prometheus watches the server's port
            from modelmon.demo import keras_churn

            prepared = keras_churn.prepare_keras()
        # Prometheus first: it waits ~5 s before its first scrape, time that training fills.
        alerting = start_alerting(home, running, console)
        live_port = free_port() if model == "keras" else None  # the Keras run's live gauges
        targets = [f"{HOST}:{p}" for p in (port, live_port) if p is not None]
        prometheus: Prometheus | None
        if alerting is not None:
            prometheus = alerting.start_prometheus(targets)
        else:
            prometheus = start_prometheus(home / "prometheus", targets, console)
            if prometheus is not None:
                running.callback(prometheus.stop)
        if model == "keras":
            card = keras_churn.train_and_register_keras(home / "registry", console, MODEL, TRAIN_ROWS,
                                                        VALIDATION_ROWS, prometheus, live_port, prepared)
        else:
            card = train_and_register(home / "registry", console)
        server, thread = start_server(home / "registry", card.version, sock, labels_from)
        running.callback(stop_server, server, thread)
        wait_until_ready(url, thread)
        console.print(f"[bold]3. Serve[/bold]     {url} (in this process, with adaptive batching)")
        report_monitoring(console, prometheus, len(targets))
        print_urls(console, url, prometheus)
        plan = plan_requests(requests)
        traffic = Traffic()
        quality = []
        for shifted in (False, True):
            before = quality_counters(url)
            asyncio.run(send_traffic(url, [r for r in plan if r.shifted == shifted], console, traffic))
            send_labels(url, traffic.outcomes[shifted], console, labels_from)
            quality.append(phase_quality(before, quality_counters(url)))
        print_traffic(console, traffic)
        if prometheus is not None:
            print_prometheus(console, prometheus, traffic)
        print_drift(console, url, prometheus)
        print_alert(console, alerting)
        print_quality(console, card, quality)
        # After the quality table, which reads version 1's counters alone.
        candidate = classifier_candidate(home / "registry", MODEL, "Keras" if model == "keras" else "")
        rollout_phase(url, MODEL, candidate, console)
        if prometheus is not None:  # the report's rollout panels need a few scrapes of the decision
            wait_for_rollout_series(prometheus, console, MODEL, SCRAPE_TIMEOUT)
        experiment = keras_churn.EXPERIMENT if model == "keras" else EXPERIMENT  # the run train_and_register* logged
        write_dashboards(console, home, prometheus, time.perf_counter() - started, experiment=experiment)
    print_epilogue(console, home, card, port, time.perf_counter() - started)


# -- train and register ---------------------------------------------------------------


TRAINING_EPOCHS = 8


def train_and_register(registry_dir: Path, console: Console) -> ModelCard:
    """Train epoch by epoch in a tracked run (every epoch's metrics for both splits go to
    the run store), then register the model from that run."""
    train = generate_customers(TRAIN_ROWS, seed=1)
    validation = generate_customers(VALIDATION_ROWS, seed=2)
    pipeline = make_pipeline(
        make_column_transformer(
            (StandardScaler(), NUMERIC_FEATURES),
            (OneHotEncoder(handle_unknown="ignore"), CATEGORICAL_FEATURES),
        ),
        LogisticRegression(max_iter=1000),
    )
    console.print(
        f"[bold]1. Train[/bold]     logistic regression on {len(train):,} synthetic customers "
        f"({train[TARGET].eq('yes').mean():.0%} churned), {TRAINING_EPOCHS} epochs, tracked in a run"
    )
    store = registry_dir.parent / "modelmon.db"
    params = {"model": "LogisticRegression", "epochs": TRAINING_EPOCHS, "train_rows": len(train)}
    with start_run(EXPERIMENT, params=params, tags={"source": "modelmon demo"}, store=store) as run:
        with Progress(TextColumn("    training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                      console=console) as progress:
            task = progress.add_task("", total=TRAINING_EPOCHS)

            def on_epoch(report: EpochReport) -> None:
                f1 = report.metrics.get("validation", {}).get("f1", float("nan"))
                progress.update(task, completed=report.epoch, description=f"validation F1 {f1:.3f}")

            fit_epochs(pipeline, train.drop(columns=TARGET), train[TARGET], run=run, epochs=TRAINING_EPOCHS,
                       validation=(validation.drop(columns=TARGET), validation[TARGET]), positive="yes",
                       on_epoch=on_epoch)
        print_epochs(console, run)
        card = register_model(pipeline, name=MODEL, reference=train, target=TARGET,
                              validation=validation, registry=registry_dir, run=run)
    baseline = card.baseline or {}
    console.print(f"[bold]2. Register[/bold]  {card.name} version {card.version} in {registry_dir}, from run {run.id}")
    console.print(
        f"             validation accuracy {baseline.get('accuracy', float('nan')):.3f}, "
        f"macro F1 {baseline.get('f1_macro', float('nan')):.3f}"
    )
    console.print(f"             {serving_runtime(card)}")
    return card


def print_epochs(console: Console, run: Run) -> None:
    """The run's per-epoch curves as a table, read back from the run store."""
    run.flush()
    frame = metric_frame(run.store, [run.id], metrics=["log_loss", "accuracy", "f1"])
    table = Table(title=f"Run {run.id}: per-epoch metrics from the run store", title_justify="left")
    table.add_column("epoch", justify="right")
    columns = [(split, metric) for split in ("train", "validation") for metric in ("log_loss", "accuracy", "f1")]
    short = {"train": "train", "validation": "val", "log_loss": "loss", "accuracy": "acc", "f1": "F1"}
    for split, metric in columns:
        table.add_column(f"{short[split]} {short[metric]}", justify="right")
    values = {
        (str(split), str(metric), int(step)): float(value)
        for split, metric, step, value in zip(frame["split"], frame["metric"], frame["step"], frame["value"], strict=True)
    }
    for step in sorted({step for _, _, step in values}):
        table.add_row(str(step), *[f"{values.get((split, metric, step), float('nan')):.3f}" for split, metric in columns])
    console.print(table)


def serving_runtime(card: ModelCard) -> str:
    check = card.onnx_check
    if card.runtime == "onnx" and check is not None and check.max_abs_difference is not None:
        return f"served with ONNX Runtime (matches scikit-learn within {check.max_abs_difference:.0e})"
    return f"served with {card.runtime}"


# -- the running stack ----------------------------------------------------------------


def bind_port(port: int) -> socket.socket:
    """Take the port before anything slow happens, so a clash fails at once and cannot
    appear later in the server thread."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise ModelmonError(
            f"cannot listen on {HOST}:{port} ({exc.strerror}); run the demo on another port "
            f"with --port, e.g. --port {free_port()}"
        ) from None
    return sock


def wait_until_ready(url: str, thread: threading.Thread, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not thread.is_alive():
            raise ModelmonError("the demo server stopped while starting; its error is above")
        try:
            if httpx.get(f"{url}/v2/health/ready", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise ModelmonError(f"the demo server did not become ready within {timeout:.0f} s")


def start_server(
    registry_dir: Path, version: int, sock: socket.socket, labels_from: str | None = None, model: str = MODEL
) -> tuple[DrainingServer, threading.Thread]:
    drift = DriftSettings(window_rows=DRIFT_WINDOW_ROWS, snapshot_seconds=1, score_seconds=DRIFT_SCORE_SECONDS)
    home = registry_dir.parent
    log = PredictionLogSettings(spool_dir=home / "spool")
    settings = ServingSettings(drain_seconds=0, drift=drift, prediction_log=log, store_url=str(home / "modelmon.db"))
    model_server = ModelServer(Registry(registry_dir), [(model, str(version))], settings)
    if labels_from is not None:
        model_server.companions.append(LabelStream(model_server, demo_labels_target(labels_from), StreamMetrics(model_server.metrics.registry)))
    server = build_server(model_server, HOST, sock.getsockname()[1])
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    return server, thread


def stop_server(server: DrainingServer, thread: threading.Thread) -> None:
    server.should_exit = True
    thread.join(timeout=30)
    if thread.is_alive():
        server.force_exit = True
        thread.join(timeout=10)


def start_alerting(home: Path, running: ExitStack, console: Console) -> LocalAlerting | None:
    """Alertmanager with the exported alert rules, routing to a local sink that stands in for
    email, Slack or a webhook; alerts wait 5 s (``for:``) instead of their production minutes."""
    if not LocalAlerting.available():
        return None
    try:
        return running.enter_context(LocalAlerting(home / "alerting", for_="5s", recording_windows=[RULES_WINDOW]))
    except Exception as exc:  # the demo carries on without alerting, and says why
        console.print(f"[yellow]Alertmanager failed to start ({exc}); carrying on without alerts.[/yellow]")
        return None


def print_alert(console: Console, alerting: LocalAlerting | None) -> None:
    """The drift alert, as the local sink received it from Alertmanager."""
    if alerting is None:
        console.print("[bold]Alerts[/bold]      Alertmanager is not installed: "
                      "apt-get install --no-install-recommends prometheus-alertmanager")
        return
    note = alerting.wait_for("ModelmonFeatureDrift", timeout=60)
    if note is None:
        console.print("[bold]Alerts[/bold]      no drift alert reached the sink within 60 s")
        return
    assert alerting.alertmanager is not None, "LocalAlerting runs Alertmanager until run_demo's ExitStack closes"
    console.print(f"[bold]Alerts[/bold]      Alertmanager {alerting.alertmanager.url} delivered to the local sink:")
    for line in note.text.splitlines()[:8]:
        console.print(f"    {line}", markup=False)
    others = sorted({n.alertname for n in alerting.notifications} - {"ModelmonFeatureDrift"})
    if others:
        console.print(f"    also received: {', '.join(others)}")


def start_prometheus(workdir: Path, targets: list[str], console: Console) -> Prometheus | None:
    """A Prometheus that scrapes the server every second, or None when there is none. Its
    data starts empty on every run: the demo's figures are this run's alone."""
    if prometheus_binary() is None:
        return None
    shutil.rmtree(workdir / "data", ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    # What `modelmon rules export` writes: fleet drift and fleet quality.
    drift = workdir / "modelmon-drift.rules.yml"
    drift.write_text(dump_yaml(drift_rules(RULES_WINDOW)))
    quality = workdir / "modelmon-quality.rules.yml"
    quality.write_text(dump_yaml({"groups": [quality_rule_group(RULES_WINDOW)]}))
    try:
        return Prometheus.start(workdir, targets=targets, scrape_interval="1s", rule_files=[drift, quality])
    except RuntimeError as exc:
        console.print("[yellow]Prometheus failed to start; carrying on without it.[/yellow]")
        console.print(str(exc), markup=False)
        return None


def report_monitoring(console: Console, prometheus: Prometheus | None, targets: int = 1) -> None:
    """Wait for the first scrape, so every series starts from zero and rate() sees all the
    traffic; without Prometheus, say how to get it."""
    if prometheus is None:
        console.print("[bold]4. Monitor[/bold]   [yellow]no Prometheus found[/yellow], so nothing "
                      "scrapes the server;")
        console.print(f"             {INSTALL_HINT}", soft_wrap=True)
        return
    prometheus.wait_for('sum(up{job="modelmon"})', targets, timeout=SCRAPE_TIMEOUT)
    console.print(f"[bold]4. Monitor[/bold]   Prometheus {prometheus.url} scrapes the server every second")


def print_urls(console: Console, url: str, prometheus: Prometheus | None) -> None:
    console.print("    Look while the traffic runs (everything stops when the demo ends):")
    console.print(f"      metrics       {url}/metrics")
    console.print(f"      model         {url}/v2/models/{MODEL}")
    if prometheus is not None:
        query = f'sum by (code) (rate(modelmon_requests_total{{model="{MODEL}"}}[10s]))'
        params = urlencode({"g0.expr": query, "g0.tab": "0", "g0.range_input": "5m"})
        console.print(f"      Prometheus    {prometheus.url}/graph?{params}", soft_wrap=True)


# -- traffic --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    kind: str  # "v2", "v1", or one of BAD_KINDS
    path: str
    body: bytes
    shifted: bool
    truth: tuple[str, ...] = ()  # the rows' true labels, sent later as feedback


@dataclass
class Traffic:
    """What the clients saw."""

    sent: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    bad_sent: int = 0
    bad_rejected: int = 0
    latencies: list[float] = field(default_factory=list)  # successful requests only
    rows: int = 0
    #: (prediction id, true label) of every row predicted, per phase (shifted or not).
    outcomes: dict[bool, list[tuple[str, str]]] = field(default_factory=lambda: {False: [], True: []})
    predicted: dict[bool, Counter[str]] = field(
        default_factory=lambda: {False: Counter(), True: Counter()}
    )


class RowSource:
    """Consecutive rows of a frame as plain Python columns, so each request takes fresh
    customers without touching pandas on the hot path."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.columns = {c: frame[c].tolist() for c in frame.columns if c != TARGET}
        self.truth = frame[TARGET].tolist()
        self.datatypes = {c: v2_datatype(frame[c]) for c in self.columns}
        self.next = 0

    def take(self, n: int) -> dict[str, list[Any]]:
        start, self.next = self.next, self.next + n
        return {name: values[start : self.next] for name, values in self.columns.items()}

    def last_truth(self, n: int) -> tuple[str, ...]:
        """The true labels of the ``n`` rows just taken."""
        return tuple(self.truth[self.next - n : self.next])


def v2_datatype(column: pd.Series) -> str:
    if pd.api.types.is_integer_dtype(column):
        return "INT64"
    if pd.api.types.is_float_dtype(column):
        return "FP64"
    return "BYTES"


def v2_body(columns: dict[str, list[Any]], datatypes: dict[str, str]) -> bytes:
    """An Open Inference Protocol request with one input per feature."""
    inputs = [
        {"name": name, "shape": [len(values)], "datatype": datatypes[name], "data": values}
        for name, values in columns.items()
    ]
    return json.dumps({"inputs": inputs}).encode()


def v1_body(columns: dict[str, list[Any]]) -> bytes:
    instances = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    return json.dumps({"instances": instances}).encode()


def bad_request(kind: str, rows: RowSource, n: int) -> tuple[str, bytes]:
    """One kind of client mistake that a real service sees every day."""
    columns = rows.take(n)
    infer = f"/v2/models/{MODEL}/infer"
    if kind == "missing feature":
        del columns["age"]
        return infer, v2_body(columns, rows.datatypes)
    if kind == "number sent as text":
        columns["monthly_charges"] = [str(v) for v in columns["monthly_charges"]]
        return infer, v2_body(columns, {**rows.datatypes, "monthly_charges": "BYTES"})
    if kind == "text in a number":
        columns["tenure_months"] = ["two years"] * n
        return f"/v1/models/{MODEL}:predict", v1_body(columns)
    body = v2_body(columns, rows.datatypes)
    return infer, body[: len(body) // 2]


def plan_requests(n: int, seed: int = 3) -> list[PlannedRequest]:
    """``n`` seeded requests: the first half from the training distribution, the second
    from the shifted one, each of 1-8 customers."""
    rng = np.random.default_rng(seed)
    per_half = MAX_ROWS_PER_REQUEST * (n - n // 2)
    sources = {
        False: RowSource(generate_customers(per_half, seed=seed + 1)),
        True: RowSource(generate_customers(per_half, seed=seed + 2, shift=True)),
    }
    kinds = rng.choice(list(TRAFFIC_MIX), size=n, p=list(TRAFFIC_MIX.values()))
    sizes = rng.integers(1, MAX_ROWS_PER_REQUEST + 1, size=n)
    plan = []
    for i, (drawn, size) in enumerate(zip(kinds.tolist(), sizes.tolist(), strict=True)):
        kind = drawn
        shifted = i >= n // 2
        rows = sources[shifted]
        truth: tuple[str, ...] = ()
        if kind == "v2":
            path, body = f"/v2/models/{MODEL}/infer", v2_body(rows.take(size), rows.datatypes)
            truth = rows.last_truth(size)
        elif kind == "v1":
            path, body = f"/v1/models/{MODEL}:predict", v1_body(rows.take(size))
            truth = rows.last_truth(size)
        else:
            kind = BAD_KINDS[i % len(BAD_KINDS)]
            path, body = bad_request(kind, rows, size)
        plan.append(PlannedRequest(kind=kind, path=path, body=body, shifted=shifted, truth=truth))
    return plan


async def send_traffic(url: str, plan: list[PlannedRequest], console: Console, traffic: Traffic) -> None:
    """Send ``plan`` from CONCURRENCY clients at once, in order, with a progress bar."""
    shifted = bool(plan) and plan[0].shifted
    step, phase = ("6. Drift", "drifted customers") if shifted else ("5. Traffic", "customers like the training data")
    console.print(f"[bold]{step:<11}[/bold] {len(plan):,} requests of {phase}, from {CONCURRENCY} "
                  "concurrent clients (70% V2, 25% V1, 5% bad)")
    pending = iter(plan)
    limits = httpx.Limits(max_connections=CONCURRENCY)
    progress = Progress(TextColumn("    sending"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)
    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:
        with progress:
            task = progress.add_task("sending", total=len(plan))

            async def client_loop() -> None:
                for request in pending:
                    await send_one(client, request, traffic)
                    progress.advance(task)

            await asyncio.gather(*(client_loop() for _ in range(CONCURRENCY)))
    traffic.seconds += time.perf_counter() - started


async def send_one(client: httpx.AsyncClient, request: PlannedRequest, traffic: Traffic) -> None:
    traffic.sent += 1
    bad = request.kind in BAD_KINDS
    if bad:
        traffic.bad_sent += 1
    started = time.perf_counter()
    try:
        response = await client.post(request.path, content=request.body, headers=JSON_HEADERS)
    except httpx.HTTPError as exc:
        traffic.statuses[f"no answer ({type(exc).__name__})"] += 1
        return
    seconds = time.perf_counter() - started
    traffic.statuses[str(response.status_code)] += 1
    if response.status_code != 200:
        if bad and 400 <= response.status_code < 500:
            traffic.bad_rejected += 1
        return
    traffic.latencies.append(seconds)
    ids, labels = predicted_labels(request.kind, response.json())
    traffic.rows += len(labels)
    traffic.predicted[request.shifted].update(labels)
    traffic.outcomes[request.shifted].extend(zip(ids, request.truth, strict=True))


def predicted_labels(kind: str, body: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Prediction ids and predicted labels of one answered request."""
    if kind == "v1":
        return [p["id"] for p in body["predictions"]], [str(p["label"]) for p in body["predictions"]]
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    return [str(i) for i in outputs["prediction_id"]], [str(v) for v in outputs["label"]]


# -- summary --------------------------------------------------------------------------


def print_traffic(console: Console, traffic: Traffic) -> None:
    good = traffic.sent - traffic.bad_sent
    ok = int(traffic.statuses["200"])
    p50, p95, p99 = np.percentile(traffic.latencies or [np.nan], [50, 95, 99]) * 1000
    table = Table(title="What the clients saw", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    rate = traffic.sent / traffic.seconds
    rejected = format_counts(traffic.statuses, skip="200")
    table.add_row("requests sent", f"{traffic.sent:,} in {traffic.seconds:.1f} s ({rate:,.0f} per second)")
    table.add_row("answered", f"{ok:,} of {good:,} valid requests")
    table.add_row("rejected", f"{traffic.sent - ok:,} (status {rejected}); "
                  f"{traffic.bad_rejected} of the {traffic.bad_sent} bad requests got a 4xx")
    table.add_row("latency", f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, p99 {p99:.1f} ms "
                  "(answered requests, client side)")
    table.add_row("rows predicted", f"{traffic.rows:,} ({traffic.rows / max(ok, 1):.1f} per request)")
    for shifted, title in ((False, "before drift"), (True, "after drift")):
        counts = traffic.predicted[shifted]
        share = counts["yes"] / max(sum(counts.values()), 1)
        table.add_row(f"predicted churn, {title}", f"{share:.1%} ({format_counts(counts)})")
    console.print(table)


def print_prometheus(console: Console, prometheus: Prometheus, traffic: Traffic) -> None:
    """Read monitoring back the way a dashboard would, once Prometheus has scraped it all."""
    selector = f'{{model="{MODEL}"}}'
    #: The traffic's own requests (the labels sent back go to the feedback endpoint).
    inference = f'{{model="{MODEL}", endpoint=~"infer|predict"}}'
    seen = prometheus.wait_for(
        f"sum(modelmon_requests_total{inference})", traffic.sent, timeout=SCRAPE_TIMEOUT
    )
    if seen != traffic.sent:
        console.print(f"[yellow]Prometheus had counted {seen} of {traffic.sent} requests after "
                      f"{SCRAPE_TIMEOUT:.0f} s; the figures below are partial[/yellow]")
    console.print("[bold]Read back from Prometheus[/bold] (counts since the server started)")
    for figure, promql in (
        ("requests by code", f"sum by (code) (modelmon_requests_total{inference}) > 0"),
        ("errors by reason", f"sum by (reason) (modelmon_request_errors_total{selector}) > 0"),
        ("predictions by class", f"sum by (class) (modelmon_predictions_total{selector})"),
    ):
        counts = Counter({
            ",".join(series["metric"].values()): int(float(series["value"][1]))
            for series in prometheus.query(promql)
        })
        show_figure(console, figure, format_counts(counts), promql)

    promql = ("histogram_quantile(0.99, sum by (le) "
              f"(modelmon_request_duration_seconds_bucket{inference}))")
    p99 = prometheus.scalar(promql)
    show_figure(console, "p99 latency (server)",
                "no data" if p99 is None else f"{p99 * 1000:.1f} ms", promql)

    promql = f"sum(modelmon_batch_size_sum{selector}) / sum(modelmon_batch_size_count{selector})"
    per_call = prometheus.scalar(promql)
    per_request = traffic.rows / max(traffic.statuses["200"], 1)
    if per_call is None:
        value = "no data"
    else:
        merged = "; batching merged requests" if per_call > 1.05 * per_request else ""
        value = f"{per_call:.1f}, against {per_request:.1f} rows per request{merged}"
    show_figure(console, "rows per model call", value, promql)


def drift_scores(url: str) -> tuple[dict[str, dict[str, float]], dict[str, float], float]:
    """Per-feature scores, their thresholds and the window's rows, from the server's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    scores: dict[str, dict[str, float]] = {}
    thresholds: dict[str, float] = {}
    rows = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != MODEL:
                continue
            if sample.name == "modelmon_feature_drift":
                scores.setdefault(labels["feature"], {})[labels["method"]] = sample.value
            elif sample.name == "modelmon_feature_drift_threshold":
                thresholds[labels["method"]] = sample.value
            elif sample.name == "modelmon_drift_window_rows":
                rows = sample.value
    return scores, thresholds, rows


LABEL_SHARE = 0.6
LABEL_DELAY_SECONDS = 1.0


def demo_labels_target(labels_from: str) -> StreamTarget:
    """The demo's label stream: its model unless the URL names one."""
    target = parse_stream_url(labels_from)
    return replace(target, options={"model": MODEL, **target.options})


def send_labels(url: str, outcomes: list[tuple[str, str]], console: Console, labels_from: str | None = None) -> None:
    """Ground truth for part of the predictions, a little later, as it comes back in real
    life: through the feedback endpoint (or a broker), joined by prediction id."""
    rng = np.random.default_rng(7)
    chosen = [outcomes[i] for i in sorted(rng.choice(len(outcomes), int(len(outcomes) * LABEL_SHARE), replace=False))]
    time.sleep(LABEL_DELAY_SECONDS)
    if labels_from is not None:
        send_labels_over_broker(url, chosen, len(outcomes), console, demo_labels_target(labels_from))
        return
    matched = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(chosen), 1000):
            items = [{"id": i, "label": y} for i, y in chosen[start : start + 1000]]
            matched += client.post(f"/v2/models/{MODEL}/feedback", json={"labels": items}).json()["matched"]
    console.print(f"    labels      {matched:,} of {len(outcomes):,} predictions got their true label back "
                  f"({LABEL_SHARE:.0%}, {LABEL_DELAY_SECONDS:.0f} s later)")


def send_labels_over_broker(url: str, chosen: list[tuple[str, str]], predictions: int, console: Console, target: StreamTarget) -> None:
    """Publish the labels to the broker (100 a message) and wait for the server's consumer to
    commit them all (modelmon_stream_messages_total{outcome="committed"})."""
    def committed() -> float:
        return scrape_sum(url, "modelmon_stream_messages_total", outcome="committed")

    before = committed()
    matched_before = scrape_sum(url, "modelmon_stream_labels_total", outcome="matched")
    messages = [orjson.dumps([{"id": i, "label": y} for i, y in chosen[start : start + 100]]) for start in range(0, len(chosen), 100)]
    asyncio.run(send_label_messages(target, messages))
    deadline = time.monotonic() + 60
    while committed() < before + len(messages) and time.monotonic() < deadline:
        time.sleep(0.2)
    matched = scrape_sum(url, "modelmon_stream_labels_total", outcome="matched") - matched_before
    console.print(f"    labels      {int(matched):,} of {predictions:,} predictions got their true label back "
                  f"({LABEL_SHARE:.0%}, {LABEL_DELAY_SECONDS:.0f} s later) through {target.describe()}")


def scrape_sum(url: str, name: str, **labels: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(
        sample.value
        for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def quality_counters(url: str) -> dict[str, np.ndarray]:
    """The server's realized and expected (CBPE) confusion matrices, from /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    cells: dict[str, dict[tuple[str, str], float]] = {"modelmon_confusion_total": {}, "modelmon_expected_confusion_total": {}}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name in cells and sample.labels.get("model") == MODEL:
                cells[sample.name][(sample.labels["actual"], sample.labels["predicted"])] = sample.value
    classes = sorted({a for a, _ in cells["modelmon_confusion_total"]})
    return {
        name: np.array([[values.get((a, p), 0.0) for p in classes] for a in classes])
        for name, values in cells.items()
    }


def phase_quality(before: dict[str, np.ndarray], after: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    from modelmon.monitoring.scores import scores_from_confusion

    return {
        "realized": scores_from_confusion(after["modelmon_confusion_total"] - before["modelmon_confusion_total"]),
        "estimated": scores_from_confusion(
            after["modelmon_expected_confusion_total"] - before["modelmon_expected_confusion_total"]
        ),
    }


def print_quality(console: Console, card: ModelCard, phases: list[dict[str, dict[str, float]]]) -> None:
    """Realized quality (from the labels) and estimated quality (CBPE, no labels needed)
    against the validation baseline, before and after the drift."""
    baseline = card.baseline or {}
    method = card.calibration.method if card.calibration else "none"
    table = Table(title=f"Model quality (estimate: CBPE, calibration {method})", title_justify="left")
    for column in ("phase", "labelled", "accuracy", "est. acc.", "macro F1", "est. F1"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    table.add_row("baseline", f"{baseline.get('rows', 0):,.0f}", f"{baseline.get('accuracy', float('nan')):.3f}",
                  "", f"{baseline.get('f1_macro', float('nan')):.3f}", "")
    for name, phase in zip(("before drift", "after drift"), phases, strict=True):
        realized, estimated = phase["realized"], phase["estimated"]
        table.add_row(name, f"{realized['rows']:,.0f}", f"{realized['accuracy']:.3f}", f"{estimated['accuracy']:.3f}",
                      f"{realized['f1_macro']:.3f}", f"{estimated['f1_macro']:.3f}")
    console.print(table)
    console.print("  baseline: validation data at registration; accuracy and F1: from the labels")
    console.print("  sent back; est.: from calibrated probabilities alone, before any label arrives")


def print_drift(console: Console, url: str, prometheus: Prometheus | None) -> None:
    """Which features drifted: the server's own scores on its latest window, and the fleet
    PSI that Prometheus's recording rules computed over the whole run."""
    time.sleep(DRIFT_SCORE_SECONDS + 0.2)  # let the background scorer see the last requests
    scores, thresholds, rows = drift_scores(url)
    if not scores:
        console.print("[bold]Drift[/bold]: not enough rows in the window for scores yet")
        return
    fleet: dict[str, float] = {}
    if prometheus is not None:
        record = f'{drift_rule_name("psi", RULES_WINDOW)}{{model="{MODEL}"}}'
        deadline = time.monotonic() + SCRAPE_TIMEOUT
        while not fleet and time.monotonic() < deadline:
            fleet = {s["metric"]["feature"]: float(s["value"][1]) for s in prometheus.query(record)}
            time.sleep(0.5)
    psi_threshold = thresholds.get(PSI.name, PSI.default_threshold)
    table = Table(
        title=f"Drift on the server's latest {rows:,.0f} rows (PSI >= {psi_threshold} means drifted)",
        title_justify="left",
    )
    for column in ("feature", "PSI", "JS", "Wasserstein", "drifted", "run PSI*"):
        table.add_column(column, justify="left" if column in ("feature", "drifted") else "right")
    ranked = sorted(scores.items(), key=lambda item: -item[1].get("psi", 0.0))
    for feature, values in ranked:
        is_drifted = values.get("psi", 0.0) >= psi_threshold
        table.add_row(
            feature,
            f"{values.get('psi', float('nan')):.3f}",
            f"{values.get('js', float('nan')):.3f}",
            f"{values['wasserstein']:.3f}" if "wasserstein" in values else "",
            "[red]yes[/red]" if is_drifted else "no",
            f"{fleet[feature]:.3f}" if feature in fleet else "",
        )
    console.print(table)
    console.print("  JS: Jensen-Shannon distance; Wasserstein in reference standard deviations;")
    console.print(f"  *run PSI: over the whole run, from Prometheus's recording rules ({RULES_WINDOW} window)")
    drifted = [f for f, v in ranked if v.get("psi", 0.0) >= psi_threshold]
    steady = [f for f, v in ranked if v.get("psi", 0.0) < psi_threshold]
    console.print(f"  drifted: {', '.join(drifted) or 'none'}")
    console.print(f"  steady:  {', '.join(steady) or 'none'}")


def show_figure(console: Console, figure: str, value: str, promql: str) -> None:
    console.print(f"  {figure:<22}{value}", soft_wrap=True)
    console.print(Text(f"    {promql}", style="dim cyan"), soft_wrap=True)


def format_counts(counts: Counter[str], skip: str | None = None) -> str:
    return ", ".join(f"{k}: {v:,}" for k, v in sorted(counts.items()) if k != skip) or "none"


def write_dashboards(console: Console, home: Path, prometheus: Prometheus | None, seconds: float,
                     model: str = MODEL, experiment: str = EXPERIMENT) -> None:
    """The Grafana provisioning for this run's store and Prometheus, and the same panels as
    one HTML report (on ``model`` and the training ``experiment``) for a reader without Grafana."""
    from modelmon.dashboards import write_provisioning, write_report

    store = str(home / "modelmon.db")
    grafana = home / "grafana"
    write_provisioning(grafana, store_url=store, prometheus_url=prometheus.url if prometheus else "http://localhost:9090")
    console.print(f"[bold]Dashboards[/bold]  Grafana provisioning (5 dashboards, data sources) in {grafana}")
    if prometheus is None:
        console.print("            the HTML report needs Prometheus; skipped")
        return
    try:
        report = write_report(home / "report.html", prometheus.url, store, range_seconds=seconds + 60, model=model,
                              experiment=experiment, window=RULES_WINDOW, scrape_interval=1.0)
    except ModelmonError as exc:
        console.print(f"            no HTML report: {exc.message}")
        return
    console.print(f"            report for readers without Grafana: {home / 'report.html'} "
                  f"({report.drawn} of {len(report.panels)} panels with data)")


def print_epilogue(console: Console, home: Path, card: ModelCard, port: int, seconds: float) -> None:
    registry = home / "registry"
    console.print(f"\nDone in {seconds:.1f} s; everything the demo started has stopped.")
    versions = ", ".join(str(v) for v in Registry(registry).versions(card.name))
    console.print(f"The registry is in {registry} ({card.name} versions {versions}). Next:")
    console.print(f"  modelmon models --registry {registry}")
    console.print(f"  modelmon serve --registry {registry} --port {port}")
