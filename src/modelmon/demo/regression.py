"""``modelmon demo --task regression``: a spend model from training to monitored traffic.

The same life as the churn demo (``modelmon.demo.run``), for a regressor: predict each
synthetic customer's spend next month, train epoch by epoch in a tracked run (MAE, RMSE,
R² of both splits in the run store, and live to Prometheus), register it (the validation
baseline, the reference profile of the predictions, the label-free loss estimator), serve
it, send traffic whose second half has drifted, send back the true spend of part of it,
and print the realized MAE and RMSE (from the labels) beside the estimated ones (before
any label) and the prediction drift, read from the server's /metrics and from Prometheus.
Last, a worse version 2 goes out as a canary and is rolled back by its label-free error
estimate before any label arrives (``demo.rollout``, ``spend_candidate``).

The target (``spend_customers``): next month's bill, about this month's charges plus a
little per support call, with noise whose size depends on the contract: a month-to-month
customer's bill varies five times more (sd 15 dollars) than a committed one's (sd 3). The
drifted traffic (``generate_customers(shift=True)``) has more month-to-month customers
(about 75% instead of about 55%) and 15% higher charges, so the model's error grows
without any change in the relation between features and target (covariate shift): what
the label-free estimate is built to follow.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from rich.table import Table
from rich.text import Text
from sklearn.compose import make_column_transformer
from sklearn.linear_model import SGDRegressor
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelmon import ModelCard, Registry, register_model
from modelmon.config import modelmon_home
from modelmon.demo import rollout
from modelmon.demo import run as demo
from modelmon.demo.data import CATEGORICAL_FEATURES, NUMERIC_FEATURES, generate_customers
from modelmon.demo.data import TARGET as CHURNED
from modelmon.rules.drift import drift_rules, dump_yaml
from modelmon.rules.regression import LEVEL, increase, regression_rule_group
from modelmon.stack.processes import free_port
from modelmon.stack.prometheus import Prometheus, prometheus_binary
from modelmon.tracking import Run, start_run
from modelmon.tracking.records import metric_frame
from modelmon.tracking.sklearn import EpochReport, fit_epochs

MODEL = "spend"
TARGET = "next_month_spend"
EXPERIMENT = "spend-demo"
EPOCHS = 8
#: Noise sd of next month's spend, in dollars: month-to-month customers against the others.
NOISE_SD = {"month-to-month": 15.0, "other": 3.0}
LABEL_SHARE = 0.6
V2_SHARE = 0.7  # the rest as V1 records
#: The rollout phase's worse candidate: few training rows, strong L2 regularisation. On the
#: drifted customers its true MAE was 15.5 and 16.6 dollars against version 1's 10.1 and 10.0
#: (two runs), and ``estimated_error`` rolled it back after 200 and 120 requests of 20 rows.
CANDIDATE_ROWS = 200
CANDIDATE_ALPHA = 1.0
#: The sums the server counts per model version (docs/metrics.md, *Regression*).
SUMS = ("labelled", "error", "absolute_error", "squared_error", "estimated", "expected_absolute_error",
        "expected_squared_error")


def spend_customers(n_rows: int, seed: int, shift: bool = False) -> pd.DataFrame:
    """The demo's customers (without ``churned``) and their spend next month (module doc)."""
    frame = generate_customers(n_rows, seed=seed, shift=shift).drop(columns=CHURNED)
    rng = np.random.default_rng(seed + 1000)
    monthly = frame["monthly_charges"].to_numpy()
    month_to_month = frame["contract"].eq("month-to-month").to_numpy()
    sd = np.where(month_to_month, NOISE_SD["month-to-month"], NOISE_SD["other"])
    spend = monthly + 2.5 * frame["support_calls"].to_numpy() + rng.normal(0.0, sd)
    frame[TARGET] = np.round(np.maximum(spend, 0.0), 2)
    return frame


def run_regression_demo(port: int = 8080, requests: int = 3000, home: Path | None = None) -> None:
    """Train, register, serve, send ``requests`` requests, and report realized and estimated error."""
    home = Path(home) if home is not None else modelmon_home()
    console = Console()
    started = time.perf_counter()
    url = f"http://{demo.HOST}:{port}"
    with ExitStack() as running:  # stops what started, in reverse order, error or not
        sock = running.enter_context(closing(demo.bind_port(port)))
        console.rule("[bold]modelmon demo --task regression[/bold]: a spend model from training to production")
        live_port = free_port()  # the training run's live gauges
        targets = [f"{demo.HOST}:{p}" for p in (port, live_port)]
        prometheus = start_prometheus(home / "prometheus", targets, console)
        if prometheus is not None:
            running.callback(prometheus.stop)
        card = train_and_register(home / "registry", console, live_port, prometheus)
        server, thread = demo.start_server(home / "registry", card.version, sock, model=MODEL)
        running.callback(demo.stop_server, server, thread)
        demo.wait_until_ready(url, thread)
        console.print(f"[bold]3. Serve[/bold]     {url} (in this process, with adaptive batching)")
        demo.report_monitoring(console, prometheus, 1)
        phases = []
        traffic = Traffic()
        for shifted in (False, True):
            before = counters(url)
            rows = spend_customers(demo.MAX_ROWS_PER_REQUEST * requests, seed=13 if shifted else 12, shift=shifted)
            count = requests // 2 if not shifted else requests - requests // 2
            asyncio.run(send_traffic(url, rows, count, shifted, console, traffic))
            send_labels(url, traffic.outcomes[shifted], console)
            phases.append((before, counters(url)))
        print_quality(console, card, phases, traffic)
        print_prediction_drift(console, url)
        if prometheus is not None:
            print_prometheus(console, prometheus, traffic)
        # Last: the candidate's rows are estimated, never labelled, and would enter the figures above.
        rollout.rollout_phase(url, MODEL, spend_candidate(home / "registry"), console)
        if prometheus is not None:
            rollout.wait_for_rollout_series(prometheus, console, MODEL, demo.SCRAPE_TIMEOUT)
        demo.write_dashboards(console, home, prometheus, time.perf_counter() - started, model=MODEL, experiment=EXPERIMENT)
    console.print(f"\nDone in {time.perf_counter() - started:.1f} s; everything the demo started has stopped.")
    versions = ", ".join(str(v) for v in Registry(home / "registry").versions(MODEL))
    console.print(f"The registry is in {home / 'registry'} ({card.name} versions {versions}); the run "
                  f"store, prediction log and rollout in {home / 'modelmon.db'}.")


def start_prometheus(workdir: Path, targets: list[str], console: Console) -> Prometheus | None:
    """A Prometheus with the fleet drift and regression recording rules (what ``modelmon rules
    export`` writes), scraping every second; None without a Prometheus binary."""
    if prometheus_binary() is None:
        console.print("[yellow]no Prometheus found[/yellow]: the figures come from the server's /metrics alone")
        return None
    import shutil

    shutil.rmtree(workdir / "data", ignore_errors=True)  # this run's figures alone
    workdir.mkdir(parents=True, exist_ok=True)
    drift = workdir / "modelmon-drift.rules.yml"
    drift.write_text(dump_yaml(drift_rules(demo.RULES_WINDOW)))
    regression = workdir / "modelmon-regression.rules.yml"
    regression.write_text(dump_yaml({"groups": [regression_rule_group(demo.RULES_WINDOW)]}))
    try:
        return Prometheus.start(workdir, targets=targets, scrape_interval="1s", rule_files=[drift, regression])
    except RuntimeError as exc:
        console.print("[yellow]Prometheus failed to start; carrying on without it.[/yellow]")
        console.print(str(exc), markup=False)
        return None


# -- train and register ---------------------------------------------------------------


def spend_pipeline(alpha: float = 0.0001) -> Pipeline:
    """Numbers standardized, text one-hot, an SGD linear regression with L2 penalty ``alpha``
    (scikit-learn's default 0.0001)."""
    return make_pipeline(
        make_column_transformer(
            (StandardScaler(), NUMERIC_FEATURES),
            (OneHotEncoder(handle_unknown="ignore"), CATEGORICAL_FEATURES),
        ),
        SGDRegressor(alpha=alpha, random_state=0),
    )


def train_and_register(registry_dir: Path, console: Console, live_port: int | None,
                       prometheus: Prometheus | None) -> ModelCard:
    train = spend_customers(demo.TRAIN_ROWS, seed=1)
    validation = spend_customers(demo.VALIDATION_ROWS, seed=2)
    pipeline = spend_pipeline()
    console.print(f"[bold]1. Train[/bold]     SGD linear regression of next month's spend on {len(train):,} "
                  f"synthetic customers (mean ${train[TARGET].mean():.2f}), {EPOCHS} epochs, tracked in a run")
    params = {"model": "SGDRegressor", "epochs": EPOCHS, "train_rows": len(train)}
    with start_run(EXPERIMENT, params=params, tags={"source": "modelmon demo --task regression"},
                   store=registry_dir.parent / "modelmon.db", live_port=live_port) as run:

        def on_epoch(report: EpochReport) -> None:
            rmse = report.metrics.get("validation", {}).get("rmse", float("nan"))
            console.print(f"    epoch {report.epoch}/{report.epochs}  validation RMSE {rmse:.3f}")

        fit_epochs(pipeline, train.drop(columns=TARGET), train[TARGET], run=run, epochs=EPOCHS,
                   validation=(validation.drop(columns=TARGET), validation[TARGET]), on_epoch=on_epoch)
        print_epochs(console, run)
        if prometheus is not None:
            print_live(console, prometheus, run)
        card = register_model(pipeline, name=MODEL, reference=train, target=TARGET, validation=validation,
                              registry=registry_dir, run=run)
    baseline = card.baseline or {}
    console.print(f"[bold]2. Register[/bold]  {card.name} version {card.version} in {registry_dir}, from run {run.id}")
    console.print(f"             validation MAE {baseline.get('mae', float('nan')):.3f}, "
                  f"RMSE {baseline.get('rmse', float('nan')):.3f}, R² {baseline.get('r2', float('nan')):.3f}; "
                  "label-free loss estimator fitted on the validation rows")
    console.print(f"             {demo.serving_runtime(card)}")
    return card


def print_epochs(console: Console, run: Run) -> None:
    """The run's per-epoch MAE, RMSE and R² of both splits, read back from the run store."""
    run.flush()
    metrics = ["mae", "rmse", "r2"]
    frame = metric_frame(run.store, [run.id], metrics=metrics)
    table = Table(title=f"Run {run.id}: per-epoch metrics from the run store", title_justify="left")
    table.add_column("epoch", justify="right")
    columns = [(split, metric) for split in ("train", "validation") for metric in metrics]
    for split, metric in columns:
        table.add_column(f"{'val' if split == 'validation' else split} {metric.upper().replace('R2', 'R²')}",
                         justify="right")
    values = {
        (str(split), str(metric), int(step)): float(value)
        for split, metric, step, value in zip(frame["split"], frame["metric"], frame["step"], frame["value"], strict=True)
    }
    for step in sorted({step for _, _, step in values}):
        table.add_row(str(step), *[f"{values.get((split, metric, step), float('nan')):.3f}" for split, metric in columns])
    console.print(table)


def print_live(console: Console, prometheus: Prometheus, run: Run) -> None:
    """What Prometheus scraped of the live run (its series go when the run ends)."""
    selector = f'experiment="{EXPERIMENT}", run="{run.id}"'
    epoch = prometheus.wait_for(f"max(modelmon_training_epoch{{{selector}}})", EPOCHS, timeout=demo.SCRAPE_TIMEOUT)
    promql = f'modelmon_training_metric{{{selector}, split="validation", metric="rmse"}}'
    rmse = prometheus.scalar(promql)
    if epoch is None or rmse is None:
        console.print("    live        Prometheus had not scraped the run's gauges yet")
        return
    console.print(f"    live        Prometheus scraped the run at epoch {epoch:.0f}: validation RMSE {rmse:.3f}")
    console.print(Text(f"                {promql}", style="dim cyan"), soft_wrap=True)


def spend_candidate(registry_dir: Path) -> rollout.Candidate:
    """A worse version 2 (``demo.rollout``): the same pipeline trained on CANDIDATE_ROWS
    customers with CANDIDATE_ALPHA's regularisation, which pulls its predictions towards
    the mean spend. Its own label-free estimate, fitted on its validation rows at
    registration, expects more of its rows to miss by more than version 1's validation MAE."""
    train = spend_customers(CANDIDATE_ROWS, seed=11)
    pipeline = spend_pipeline(CANDIDATE_ALPHA).fit(train.drop(columns=TARGET), train[TARGET])
    card = register_model(pipeline, name=MODEL, reference=train, target=TARGET,
                          validation=spend_customers(demo.VALIDATION_ROWS, seed=12), registry=registry_dir)
    rows = spend_customers(rollout.ROWS_PER_REQUEST * rollout.MAX_REQUESTS, seed=14, shift=True)
    return rollout.Candidate(card, f"trained on {CANDIDATE_ROWS} customers, regularisation alpha {CANDIDATE_ALPHA:g}",
                             rows, TARGET, ("errors", "latency", "estimated_error"))


# -- traffic and labels ---------------------------------------------------------------


@dataclass
class Traffic:
    sent: int = 0
    answered: int = 0
    rows: int = 0
    #: (prediction id, true spend) of every row predicted, per phase (shifted or not).
    outcomes: dict[bool, list[tuple[str, float]]] = field(default_factory=lambda: {False: [], True: []})


def plan(rows: pd.DataFrame, count: int, seed: int) -> list[tuple[str, bytes, list[float]]]:
    """``count`` requests of 1-8 consecutive customers: (path, body, true spends)."""
    rng = np.random.default_rng(seed)
    features = rows.drop(columns=TARGET)
    columns = {c: features[c].tolist() for c in features.columns}
    datatypes = {c: demo.v2_datatype(features[c]) for c in features.columns}
    truth = rows[TARGET].tolist()
    requests, start = [], 0
    for size in rng.integers(1, demo.MAX_ROWS_PER_REQUEST + 1, size=count).tolist():
        chunk = {c: v[start : start + size] for c, v in columns.items()}
        if rng.random() < V2_SHARE:
            requests.append((f"/v2/models/{MODEL}/infer", demo.v2_body(chunk, datatypes), truth[start : start + size]))
        else:
            requests.append((f"/v1/models/{MODEL}:predict", demo.v1_body(chunk), truth[start : start + size]))
        start += size
    return requests


async def send_traffic(url: str, rows: pd.DataFrame, count: int, shifted: bool, console: Console,
                       traffic: Traffic) -> None:
    step, phase = ("6. Drift", "drifted customers") if shifted else ("5. Traffic", "customers like the training data")
    console.print(f"[bold]{step:<11}[/bold] {count:,} requests of {phase}, from {demo.CONCURRENCY} concurrent "
                  f"clients ({V2_SHARE:.0%} V2, {1 - V2_SHARE:.0%} V1)")
    pending = iter(plan(rows, count, seed=21 if shifted else 20))
    limits = httpx.Limits(max_connections=demo.CONCURRENCY)
    async with httpx.AsyncClient(base_url=url, timeout=30.0, limits=limits) as client:

        async def client_loop() -> None:
            for path, body, truth in pending:
                traffic.sent += 1
                response = await client.post(path, content=body, headers=demo.JSON_HEADERS)
                if response.status_code != 200:
                    console.print(f"    [yellow]{path}: {response.status_code} {response.text[:200]}[/yellow]")
                    continue
                traffic.answered += 1
                ids = prediction_ids(path, response.json())
                traffic.rows += len(ids)
                traffic.outcomes[shifted].extend(zip(ids, truth, strict=True))

        await asyncio.gather(*(client_loop() for _ in range(demo.CONCURRENCY)))


def prediction_ids(path: str, body: dict[str, Any]) -> list[str]:
    if path.endswith(":predict"):
        return [str(p["id"]) for p in body["predictions"]]
    outputs = {o["name"]: o["data"] for o in body["outputs"]}
    return [str(i) for i in outputs["prediction_id"]]


def send_labels(url: str, outcomes: list[tuple[str, float]], console: Console) -> None:
    """The true spend of a seeded LABEL_SHARE of the predictions, through the feedback endpoint."""
    rng = np.random.default_rng(7)
    chosen = [outcomes[i] for i in sorted(rng.choice(len(outcomes), int(len(outcomes) * LABEL_SHARE), replace=False))]
    matched = 0
    with httpx.Client(base_url=url, timeout=30) as client:
        for start in range(0, len(chosen), 1000):
            items = [{"id": i, "label": y} for i, y in chosen[start : start + 1000]]
            response = client.post(f"/v2/models/{MODEL}/feedback", json={"labels": items})
            response.raise_for_status()
            matched += response.json()["matched"]
    console.print(f"    labels      {matched:,} of {len(outcomes):,} predictions got their true spend back "
                  f"({LABEL_SHARE:.0%})")


# -- what monitoring saw --------------------------------------------------------------


def scrape(url: str) -> list[Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return [s for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text) for s in f.samples
            if s.labels.get("model") == MODEL]


def counters(url: str) -> dict[str, float]:
    """The server's regression sums (``modelmon_regression_<sum>_total``), from /metrics."""
    names = {f"modelmon_regression_{name}_total": name for name in SUMS}
    found = dict.fromkeys(SUMS, 0.0)
    for sample in scrape(url):
        if sample.name in names:
            found[names[sample.name]] += sample.value
    return found


def errors(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Realized MAE, RMSE and bias (from labels), estimated MAE and RMSE (no labels), of the
    rows counted between two scrapes: the ratios of docs/regression.md."""
    d = {name: after[name] - before[name] for name in SUMS}
    n, m = max(d["labelled"], 1.0), max(d["estimated"], 1.0)
    return {
        "labelled": d["labelled"], "estimated": d["estimated"],
        "mae": d["absolute_error"] / n, "rmse": float(np.sqrt(d["squared_error"] / n)), "bias": d["error"] / n,
        "est_mae": d["expected_absolute_error"] / m, "est_rmse": float(np.sqrt(d["expected_squared_error"] / m)),
    }


def print_quality(console: Console, card: ModelCard, phases: list[tuple[dict[str, float], dict[str, float]]],
                  traffic: Traffic) -> None:
    console.print(f"    answered    {traffic.answered:,} of {traffic.sent:,} requests, {traffic.rows:,} rows predicted")
    baseline = card.baseline or {}
    table = Table(title="Model error, from the server's /metrics (estimate: direct loss estimation, no labels)",
                  title_justify="left")
    for column in ("phase", "labelled", "MAE", "est. MAE", "RMSE", "est. RMSE", "bias"):
        table.add_column(column, justify="left" if column == "phase" else "right")
    table.add_row("baseline", f"{baseline.get('rows', 0):,.0f}", f"{baseline.get('mae', float('nan')):.3f}", "",
                  f"{baseline.get('rmse', float('nan')):.3f}", "", f"{baseline.get('mean_error', float('nan')):+.3f}")
    rows = [("before drift", *phases[0]), ("after drift", *phases[1]), ("whole run", phases[0][0], phases[1][1])]
    for name, before, after in rows:
        e = errors(before, after)
        table.add_row(name, f"{e['labelled']:,.0f}", f"{e['mae']:.3f}", f"{e['est_mae']:.3f}", f"{e['rmse']:.3f}",
                      f"{e['est_rmse']:.3f}", f"{e['bias']:+.3f}")
    console.print(table)
    console.print("  baseline: validation rows at registration; MAE, RMSE, bias: from the labels sent back;")
    console.print("  est.: from each prediction's expected error, counted before any label arrived")


def print_prediction_drift(console: Console, url: str) -> None:
    """Prediction drift (the predicted values against the validation predictions) and the
    most drifted features, as the server scored them on its latest window."""
    time.sleep(demo.DRIFT_SCORE_SECONDS + 0.2)  # let the background scorer see the last requests
    prediction: dict[str, float] = {}
    features: dict[str, float] = {}
    for sample in scrape(url):
        if sample.name == "modelmon_prediction_drift" and sample.labels.get("output") == "value":
            prediction[sample.labels["method"]] = sample.value
        elif sample.name == "modelmon_feature_drift" and sample.labels.get("method") == "psi":
            features[sample.labels["feature"]] = sample.value
    if not prediction:
        console.print("[bold]Drift[/bold]       not enough rows in the server's window for scores yet")
        return
    scores = ", ".join(f"{method.upper()} {value:.3f}" for method, value in sorted(prediction.items()))
    console.print(f"[bold]Drift[/bold]       predicted spend against the validation predictions: {scores}")
    top = sorted(features.items(), key=lambda item: -item[1])[:3]
    console.print(f"            most drifted features (PSI): {', '.join(f'{f} {v:.3f}' for f, v in top)}")


def print_prometheus(console: Console, prometheus: Prometheus, traffic: Traffic) -> None:
    """The whole run's figures from Prometheus's recording rules, once it has scraped every label."""
    w = demo.RULES_WINDOW
    labelled = sum(int(len(o) * LABEL_SHARE) for o in traffic.outcomes.values())
    # The rules' own count of labels: once it holds them all, every figure below covers them.
    seen = prometheus.wait_for(f'sum({increase("modelmon_regression_labelled", w)}{{model="{MODEL}"}})', labelled,
                               timeout=demo.SCRAPE_TIMEOUT)
    if seen != labelled:
        console.print(f"[yellow]Prometheus had {seen} of {labelled} labels after {demo.SCRAPE_TIMEOUT:.0f} s; "
                      "the figures below are partial[/yellow]")
    console.print(f"[bold]Read back from Prometheus[/bold] (recording rules of `modelmon rules export`, {w} window)")
    for figure, record in (
        ("MAE", f"{LEVEL}:modelmon_regression_absolute_error:mean{w}"),
        ("estimated MAE", f"{LEVEL}:modelmon_regression_expected_absolute_error:mean{w}"),
        ("RMSE", f"{LEVEL}:modelmon_regression_squared_error:rootmean{w}"),
        ("estimated RMSE", f"{LEVEL}:modelmon_regression_expected_squared_error:rootmean{w}"),
        ("R²", f"{LEVEL}:modelmon_regression_r2:{w}"),
    ):
        promql = f'{record}{{model="{MODEL}"}}'
        value = wait_for_value(prometheus, promql)
        demo.show_figure(console, figure, "no data" if value is None else f"{value:.3f}", promql)
    promql = f'max by (method) (modelmon_prediction_drift{{model="{MODEL}", output="value"}})'
    drift = {s["metric"].get("method", ""): float(s["value"][1]) for s in prometheus.query(promql)}
    demo.show_figure(console, "prediction drift",
                     ", ".join(f"{m.upper()} {v:.3f}" for m, v in sorted(drift.items())) or "no data", promql)


def wait_for_value(prometheus: Prometheus, promql: str) -> float | None:
    """A recording rule's value, once its group has evaluated after the last scrape."""
    deadline = time.monotonic() + demo.SCRAPE_TIMEOUT
    value = prometheus.scalar(promql)
    while value is None and time.monotonic() < deadline:
        time.sleep(0.5)
        value = prometheus.scalar(promql)
    return value
