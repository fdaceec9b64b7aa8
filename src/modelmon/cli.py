"""The ``modelmon`` command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from modelmon.alerting.cli import alerts_app, notify_bridge, stack_app
from modelmon.console import Column, FormatOption, OutputFormat, fail, print_listing, say
from modelmon.dashboards.cli import grafana_app, report
from modelmon.errors import ModelmonError
from modelmon.serving.rollout_cli import rollout_app
from modelmon.tracking.cli import runs_app

app = typer.Typer(
    name="modelmon",
    help="Deploy trained models over the Open Inference Protocol and monitor them with "
    "Prometheus, Alertmanager and Grafana.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(runs_app, name="runs")
app.add_typer(rollout_app, name="rollout")
app.add_typer(alerts_app, name="alerts")
app.add_typer(stack_app, name="stack")
app.command("notify-bridge")(notify_bridge)
app.add_typer(grafana_app, name="grafana")
app.command("report")(report)
console = Console(stderr=True)

RegistryOption = Annotated[
    Path | None,
    typer.Option("--registry", help="Registry directory \\[default: $MODELMON_HOME/registry]."),
]


def _settings_error(exc: Exception, prefix: str = "") -> str:
    """A pydantic error as one line per bad setting, named as the option is."""
    errors: list[dict[str, Any]] = getattr(exc, "errors", lambda: [])()
    return "; ".join(f"--{prefix}{str(e['loc'][-1]).replace('_', '-')}: {e['msg']}" for e in errors) or str(exc)


def _api_token(path: Path | None) -> str | None:
    """The API token from a file (first line) or $MODELMON_API_TOKEN; None when neither."""
    import os

    if path is not None:
        try:
            token = path.read_text().strip()
        except OSError as exc:
            raise ModelmonError(f"cannot read the API token file {path}: {exc.strerror}") from None
        if not token:
            raise ModelmonError(f"the API token file {path} is empty")
        return token
    return os.environ.get("MODELMON_API_TOKEN") or None


def _fail(exc: ModelmonError) -> NoReturn:
    fail(exc.message)


@app.command()
def register(
    name: Annotated[str, typer.Option("--name", help="Model name (letters, digits, . _ -).")],
    model: Annotated[Path, typer.Option("--model", help="A model file or directory: .skops, .onnx, XGBoost .json/.ubj, LightGBM .txt, Keras .keras, TorchScript .pt, a TensorFlow SavedModel directory, or (with --trust-pickle) a .pkl/.joblib file.")],
    registry: RegistryOption = None,
    reference: Annotated[Path | None, typer.Option(help="Training data (CSV or Parquet): feature types and the drift reference.")] = None,
    target: Annotated[str | None, typer.Option(help="The label column in the reference and validation data.")] = None,
    validation: Annotated[Path | None, typer.Option(help="Held-out data (CSV or Parquet) with the target column: the quality baseline.")] = None,
    trust_pickle: Annotated[bool, typer.Option("--trust-pickle", help="Allow a pickle/joblib file. Unpickling runs code: only for files you trust.")] = False,
    trust_type: Annotated[list[str] | None, typer.Option("--trust-type", help="A type a .skops file may build beyond skops' safe defaults (repeatable).")] = None,
    onnx: Annotated[bool, typer.Option("--onnx/--no-onnx", help="Convert scikit-learn models to ONNX when the result provably agrees.")] = True,
    numeric_bins: Annotated[int, typer.Option(help="Quantile bins per numeric feature in the reference profile.")] = 10,
    top_categories: Annotated[int, typer.Option(help="Categories kept per categorical feature; the rest count as 'other'.")] = 20,
    run: Annotated[int | None, typer.Option(help="The training run that produced the model: linked to the version, and its final validation metrics are the baseline when --validation is not given.")] = None,
    store: Annotated[str | None, typer.Option(help="The run store holding --run \\[default: $MODELMON_STORE_URL, else $MODELMON_HOME/modelmon.db].")] = None,
    categorical: Annotated[list[str] | None, typer.Option("--categorical", help="A column holding text categories even if its values look like numbers, e.g. codes in a CSV file (repeatable, or comma-separated). Needed only when the model does not record it: encoders' categories and ONNX string inputs already say so.")] = None,
) -> None:
    """Store a model as the next version of NAME and print its name and version."""
    from pydantic import ValidationError

    from modelmon.registry import register_model
    from modelmon.registry.profile import ProfileSettings

    try:
        card = register_model(
            model, name=name, reference=reference, target=target, validation=validation,
            registry=registry, trust_pickle=trust_pickle, trusted_types=trust_type or [],
            convert_to_onnx=onnx,
            profile_settings=ProfileSettings(numeric_bins=numeric_bins, top_categories=top_categories),
            run=run, run_store=store, categorical=",".join(categorical or []),
        )
    except ModelmonError as exc:
        _fail(exc)
    except ValidationError as exc:
        _fail(ModelmonError(_settings_error(exc)))
    console.print(f"registered [bold]{card.name}[/bold] version [bold]{card.version}[/bold] "
                  f"({card.flavor}, served with {card.runtime})")
    typer.echo(f"{card.name}:{card.version}")


MODEL_COLUMNS = tuple(map(Column, ("model", "version", "task", "flavor", "runtime", "features", "classes", "created")))


@app.command()
def models(registry: RegistryOption = None, output_format: FormatOption = OutputFormat.table) -> None:
    """List registered models and their versions (features and a classifier's classes: how many)."""
    from modelmon.registry import Registry

    reg = Registry(registry)
    # A regressor has no classes: its cell is empty (None in JSON), not 0.
    rows = [{"model": card.name, "version": card.version,
             "task": "classification" if card.signature.task.is_classification else "regression",
             "flavor": card.flavor, "runtime": card.runtime, "features": len(card.signature.features),
             "classes": len(card.signature.class_labels) if card.signature.class_labels else None,
             "created": card.created_at} for card in reg.cards()]
    print_listing(MODEL_COLUMNS, rows, output_format, empty=f"no models in {reg.root}")


def _require_grpc() -> None:
    """--grpc-port needs the optional grpcio and protobuf: say how to get them, before loading models."""
    try:
        import google.protobuf  # noqa: F401
        import grpc  # noqa: F401
    except ImportError:
        raise ModelmonError("--grpc-port needs grpcio and protobuf: pip install 'modelmon[grpc]'") from None


@app.command()
def serve(
    registry: RegistryOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    grpc_port: Annotated[int | None, typer.Option(help="Also serve the V2 gRPC protocol on this port (needs `pip install 'modelmon\\[grpc]'`) \\[default: no gRPC].")] = None,
    model: Annotated[list[str] | None, typer.Option("--model", help="NAME or NAME:VERSION to serve (repeatable) \\[default: the latest version of every model].")] = None,
    max_batch_size: Annotated[int, typer.Option(help="Most rows in one model call.")] = 256,
    max_batch_delay_ms: Annotated[float, typer.Option(help="How long a batch may wait for more rows.")] = 0.0,
    batching: Annotated[bool, typer.Option("--batching/--no-batching", help="Merge concurrent requests into one model call.")] = True,
    inline_predict_ms: Annotated[float, typer.Option(help="Model calls typically faster than this run on the event loop, not a worker thread (0: always a thread).")] = 1.0,
    monitoring: Annotated[bool, typer.Option("--monitoring/--no-monitoring", help="Prediction metrics.")] = True,
    max_series: Annotated[int, typer.Option(help="Most series the served versions export (0: no limit); a version past it serves with reduced monitoring (docs/metrics.md).")] = 100_000,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.")] = 16 * 1024 * 1024,
    drain_seconds: Annotated[float, typer.Option(help="On SIGTERM, seconds to report not-ready before closing.")] = 2.0,
    drift_window_seconds: Annotated[float, typer.Option(help="Drift scores cover this much recent time.")] = 3600.0,
    drift_window_rows: Annotated[int | None, typer.Option(help="...or, if set, the most recent stretch with this many rows.")] = None,
    drift_min_rows: Annotated[int, typer.Option(help="Rows a window needs before drift is scored.")] = 100,
    drift_score_seconds: Annotated[float, typer.Option(help="How often drift scores are recomputed.")] = 5.0,
    store: Annotated[str | None, typer.Option("--store", help="Store for the prediction log and labels: a SQLite path or postgresql+psycopg://... \\[default: $MODELMON_STORE_URL, else $MODELMON_HOME/modelmon.db].")] = None,
    prediction_log: Annotated[bool, typer.Option("--prediction-log/--no-prediction-log", help="Log every prediction to the store (needed for ground-truth labels).")] = True,
    log_features: Annotated[float, typer.Option(help="Share of model calls (a request or a batch of them) whose input features are logged too (0 to 1).")] = 0.0,
    api_token_file: Annotated[Path | None, typer.Option(help="File holding the bearer token that write endpoints require \\[default: $MODELMON_API_TOKEN, if set].")] = None,
    token_for_inference: Annotated[bool, typer.Option("--token-for-inference", help="Require the token for inference too.")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    labels_from: Annotated[str | None, typer.Option(help="Consume ground-truth labels from a broker: amqp://...?queue=Q, nats://...?subject=S, redis://...?stream=S, kafka://...?topic=T (docs/streams.md).")] = None,
    publish_predictions: Annotated[str | None, typer.Option(help="Publish every prediction as a CloudEvent to a broker URL (as --labels-from; docs/streams.md).")] = None,
    events_spool_mb: Annotated[int, typer.Option(min=1, help="Most MiB of prediction events kept on disk while the broker is down; past it the newest are dropped (counted).")] = 256,
    rollouts: Annotated[bool, typer.Option("--rollouts/--no-rollouts", help="Follow and evaluate the rollouts in the store (docs/rollout.md).")] = True,
    rollout_check_seconds: Annotated[float, typer.Option(help="How often the rollout plans are read and their gates evaluated.")] = 1.0,
    shadow_queue: Annotated[int, typer.Option(help="Shadow copies waiting for a candidate; past it they are dropped (counted).")] = 256,
    shadow_timeout_seconds: Annotated[float, typer.Option(help="A shadow call taking longer counts as the candidate's error.")] = 10.0,
    shadow_linger_ms: Annotated[float, typer.Option(help="How long the shadow waits after a copy arrives, to send the copies queued by then as one batch.")] = 20.0,
) -> None:
    """Serve registered models over the Open Inference Protocol, with /metrics."""
    from pydantic import ValidationError

    from modelmon.config import modelmon_home
    from modelmon.monitoring.drift import DriftSettings
    from modelmon.registry import Registry, parse_model_ref
    from modelmon.serving.app import ModelServer
    from modelmon.serving.prediction_log import PredictionLogSettings
    from modelmon.serving.server import serve as run_server
    from modelmon.serving.settings import RolloutSettings, ServingSettings
    from modelmon.streams.urls import parse_stream_url

    try:
        reg = Registry(registry)
        refs = [parse_model_ref(m) for m in model] if model else None
        if not refs and not reg.model_names():
            raise ModelmonError(f"no models registered in {reg.root}; run `modelmon register` first")
        for name, version in refs or []:
            reg.card(name, version)
        try:
            drift = DriftSettings(
                window_seconds=drift_window_seconds, window_rows=drift_window_rows,
                min_rows=drift_min_rows, score_seconds=drift_score_seconds,
            )
        except ValidationError as exc:
            raise ModelmonError(_settings_error(exc, prefix="drift-")) from None
        if (labels_from or publish_predictions) and not prediction_log:
            raise ModelmonError("--labels-from and --publish-predictions need the prediction log: drop --no-prediction-log")
        if labels_from:
            parse_stream_url(labels_from)
        if publish_predictions:
            parse_stream_url(publish_predictions)
        try:
            log_settings = PredictionLogSettings(
                enabled=prediction_log, feature_sample=log_features,
                events_dir=modelmon_home() / "spool" / "events" if publish_predictions else None,
            )
        except ValidationError as exc:
            raise ModelmonError(_settings_error(exc).replace("--feature-sample", "--log-features")) from None
        settings = ServingSettings(
            grpc_port=grpc_port, grpc_host=host,
            max_batch_size=max_batch_size, max_batch_delay_ms=max_batch_delay_ms, batching=batching,
            inline_predict_ms=inline_predict_ms, monitoring=monitoring, max_series=max_series, max_body_bytes=max_body_bytes, drain_seconds=drain_seconds, drift=drift,
            store_url=store, prediction_log=log_settings, api_token=_api_token(api_token_file),
            token_for_inference=token_for_inference,
            rollouts=RolloutSettings(
                enabled=rollouts, check_seconds=rollout_check_seconds, shadow_queue=shadow_queue,
                shadow_timeout_seconds=shadow_timeout_seconds, shadow_linger_ms=shadow_linger_ms,
            ),
        )
        if token_for_inference and settings.api_token is None:
            raise ModelmonError("--token-for-inference needs a token: set MODELMON_API_TOKEN or --api-token-file")
        if grpc_port is not None:
            if grpc_port == port:
                raise ModelmonError(f"--grpc-port {grpc_port} is --port too: gRPC needs a port of its own")
            _require_grpc()
    except ModelmonError as exc:
        _fail(exc)
    except ValidationError as exc:
        _fail(ModelmonError(_settings_error(exc)))
    say(f"serving on http://{host}:{port} (metrics at /metrics)" + (f", V2 gRPC on {host}:{grpc_port}" if grpc_port is not None else ""))
    model_server = ModelServer(reg, refs, settings)
    if labels_from or publish_predictions:
        from modelmon.streams.metrics import StreamMetrics
        from modelmon.streams.server import EventStream, LabelStream

        stream_metrics = StreamMetrics(model_server.metrics.registry)
        if labels_from:
            model_server.companions.append(LabelStream(model_server, parse_stream_url(labels_from), stream_metrics))
        if publish_predictions:
            model_server.companions.append(EventStream(model_server, publish_predictions, stream_metrics, events_spool_mb * 1024 * 1024))
    run_server(model_server, host, port, log_level)


@app.command()
def feedback(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet file with a prediction id column and a label column.")],
    model: Annotated[str, typer.Option("--model", help="The served model the predictions came from.")],
    url: Annotated[str, typer.Option(help="The modelmon server.")] = "http://127.0.0.1:8080",
    id_column: Annotated[str, typer.Option(help="Column holding the prediction ids.")] = "id",
    label_column: Annotated[str, typer.Option(help="Column holding the true labels.")] = "label",
    chunk: Annotated[int, typer.Option(min=1, max=10_000, help="Labels per request.")] = 1000,
    api_token_file: Annotated[Path | None, typer.Option(help="File holding the server's API token \\[default: $MODELMON_API_TOKEN, if set].")] = None,
) -> None:
    """Send ground-truth labels to a running server, which joins them to its predictions.

    Every row is checked first (a classifier's label is one of its classes, a regressor's a
    finite number; no empty id); a file with a bad row is refused, naming its rows, and
    nothing of it is sent."""
    import httpx
    from rich.progress import Progress

    from modelmon.registry.data import read_table
    from modelmon.serving.feedback_file import ModelTask, feedback_items

    try:
        token = _api_token(api_token_file)
    except ModelmonError as exc:
        _fail(exc)
    headers = {"Authorization": f"Bearer {token}"} if token else {}  # a server with a token refuses feedback without it
    with httpx.Client(base_url=url, timeout=60, headers=headers) as client:
        try:
            # CSV cells as written: an id "007" stays "007", a class "1" does not become 1.0.
            frame = read_table(file, "labels", text_columns=(id_column, label_column), only_empty_is_missing=True)
            assert frame is not None  # read_table returns None only for no data, and a file was given
            missing = [c for c in (id_column, label_column) if c not in frame.columns]
            if missing:
                raise ModelmonError(f"{file} has no column {missing}; its columns are {list(frame.columns)}")
            task = ModelTask.from_metadata(model, _model_metadata(client, url, model))
            items = feedback_items(frame[id_column], frame[label_column], task, str(file))
        except ModelmonError as exc:
            _fail(exc)
        totals = {"matched": 0, "duplicate": 0, "unknown": 0}
        with Progress(console=console) as progress:
            bar = progress.add_task("sending labels", total=len(items))
            for start in range(0, len(items), chunk):
                part = items[start : start + chunk]
                rows = f"rows {start + 1}-{start + len(part)}"
                sent = (f"rows 1-{start} were sent and recorded (matched {totals['matched']}, duplicate {totals['duplicate']}, "
                        f"unknown id {totals['unknown']})" if start else "")
                try:
                    response = client.post(f"/v2/models/{model}/feedback", json={"labels": part})
                except httpx.HTTPError as exc:
                    # The server may have recorded this chunk; sending again is safe (the first label wins).
                    _fail(ModelmonError(f"{rows}: no answer from {url} ({exc}), so whether they were recorded is unknown; "
                                        f"{sent + '; ' if sent else ''}sending the file again is safe (labels already "
                                        "recorded come back as duplicates)"))
                if response.status_code >= 500:  # a proxy's 502/504 may come after the server recorded them
                    _fail(ModelmonError(f"{rows}: {response.status_code} {_error_text(response)}, so whether they were "
                                        f"recorded is unknown; {sent + '; ' if sent else ''}sending the file again is safe "
                                        "(labels already recorded come back as duplicates)"))
                if response.status_code != 200:  # refused whole: the server records a request's labels or none
                    _fail(ModelmonError(f"{rows} refused (labels[i] is row {start + 1}+i): {response.status_code} "
                                        f"{_error_text(response)}; {sent + ', ' if sent else ''}nothing from row {start + 1} on was recorded"))
                try:
                    body = response.json()
                except ValueError:
                    _fail(ModelmonError(f"{rows}: the answer of {url} is not JSON; is it a modelmon server?"))
                for key in totals:
                    totals[key] += body[key]
                progress.advance(bar, len(part))
    typer.echo(f"matched {totals['matched']}, duplicate {totals['duplicate']}, unknown id {totals['unknown']}")


def _model_metadata(client: Any, url: str, model: str) -> dict[str, Any]:
    """The served model's V2 metadata (its outputs tell a classifier from a regressor)."""
    import httpx

    try:
        response = client.get(f"/v2/models/{model}")
    except httpx.HTTPError as exc:
        raise ModelmonError(f"cannot reach {url}: {exc}") from None
    if response.status_code != 200:
        raise ModelmonError(f"model {model!r} at {url}: {response.status_code} {_error_text(response)}")
    try:
        metadata = response.json()
    except ValueError:
        raise ModelmonError(f"model {model!r} at {url}: the answer is not JSON; is it a modelmon server?") from None
    if not isinstance(metadata, dict):
        raise ModelmonError(f"model {model!r} at {url}: unexpected metadata {str(metadata)[:80]!r}")
    return metadata


def _error_text(response: Any) -> str:
    try:
        body = response.json()
    except ValueError:
        return str(response.text)
    return str(body.get("error", response.text)) if isinstance(body, dict) else str(response.text)


consume_app = typer.Typer(help="Consume from message brokers (docs/streams.md).", no_args_is_help=True)
app.add_typer(consume_app, name="consume")


@consume_app.command("labels")
def consume_labels(
    from_url: Annotated[str, typer.Option("--from", help="The broker and queue/subject/stream/topic, e.g. amqp://guest:guest@127.0.0.1:5672/?queue=labels&model=churn (docs/streams.md).")],
    registry: RegistryOption = None,
    store: Annotated[str | None, typer.Option("--store", help="The store the servers share \\[default: $MODELMON_STORE_URL, else $MODELMON_HOME/modelmon.db].")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve this consumer's /metrics on this port.")] = None,
    host: Annotated[str, typer.Option(help="Address of /metrics.")] = "127.0.0.1",
) -> None:
    """Join ground-truth labels from a broker to the servers' predictions in the shared store
    (one consumer group for a fleet of replicas)."""
    from modelmon.registry import Registry
    from modelmon.streams.consume import consume_labels as run_consumer

    try:
        run_consumer(from_url, Registry(registry), store, metrics_port, host)
    except ModelmonError as exc:
        _fail(exc)


rules_app = typer.Typer(help="Prometheus recording rules for fleet-wide drift.", no_args_is_help=True)
app.add_typer(rules_app, name="rules")


@rules_app.command("export")
def rules_export(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write the rule file and its promtool test into.")],
    window: Annotated[list[str], typer.Option("--window", help="Window of the fleet scores (repeatable), e.g. 1h.")] = ["1h"],  # noqa: B006
) -> None:
    """Write recording rules (fleet drift per feature; realized and estimated quality) and
    the promtool tests that prove them."""
    from modelmon.rules import drift as rules
    from modelmon.rules import quality as quality_rules
    from modelmon.rules import regression as regression_rules

    kinds = {
        "drift": (rules.drift_rule_group, rules.drift_rules_test),
        "quality": (quality_rules.quality_rule_group, quality_rules.quality_rules_test),
        "regression": (regression_rules.regression_rule_group, regression_rules.regression_rules_test),
    }
    try:
        for w in window:
            rules.check_window(w)
    except ValueError as exc:
        _fail(ModelmonError(str(exc)))
    out_dir.mkdir(parents=True, exist_ok=True)
    for kind, (group, test) in kinds.items():
        rule_file = out_dir / f"modelmon-{kind}.rules.yml"
        rule_file.write_text(rules.dump_yaml({"groups": [group(w) for w in window]}))
        for w in window:
            (out_dir / f"modelmon-{kind}-{w}.test.yml").write_text(rules.dump_yaml(test(rule_file.name, w)))
    say(f"wrote recording rules and their tests to {out_dir}; check them with:\n"
        f"  promtool check rules {out_dir}/*.rules.yml\n  cd {out_dir} && promtool test rules *.test.yml")


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port for the demo server.")] = 8080,
    requests: Annotated[int, typer.Option(help="Requests of traffic to send.")] = 3000,
    home: Annotated[Path | None, typer.Option(help="Where to keep the demo's registry \\[default: $MODELMON_HOME].")] = None,
    model: Annotated[str, typer.Option(
        help="The model to train: sklearn (a logistic regression) or keras (a small Keras network, "
        "trained epoch by epoch; needs modelmon\\[keras] and a Keras backend, e.g. torch).")] = "sklearn",
    labels_from: Annotated[str | None, typer.Option(help="Send the labels through this broker (docs/streams.md) instead of the feedback endpoint, e.g. redis://127.0.0.1:6379/0?stream=demo-labels.")] = None,
    task: Annotated[str, typer.Option(help="classification (the churn model) or regression (next month's spend: "
                                      "realized and estimated MAE and RMSE, prediction drift).")] = "classification",
) -> None:
    """Train, register, serve and monitor a churn model (or, with --task regression, a spend model) end to end, on embedded defaults."""
    from modelmon.demo.run import run_demo

    try:
        run_demo(port=port, requests=requests, home=home, model=model, labels_from=labels_from, task=task)
    except ModelmonError as exc:
        _fail(exc)


if __name__ == "__main__":
    app()
