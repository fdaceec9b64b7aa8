"""The modelmon side of ``deploy/docker-compose.yml``: ``setup`` runs once before the stack
starts, ``traffic`` plays a client of the demo model.

``setup --config DIR`` writes everything the other services read, from the installed
modelmon, so it always matches the server's version:

    DIR/prometheus/prometheus.yml          the scrape configuration (deploy/prometheus/prometheus.yml)
    DIR/prometheus/rules/*.rules.yml        recording rules (modelmon rules export)
    DIR/alerting/prometheus/*.rules.yml     alert rules (modelmon alerts export)
    DIR/alerting/alertmanager/              Alertmanager configuration and templates
    DIR/alerting/modelmon.yaml              the alerting config as exported, for notify-bridge
    DIR/grafana/                            Grafana provisioning (modelmon grafana export)

With ``--bridge-token-file PATH`` it also writes notify-bridge's token there (the value of
$MODELMON_BRIDGE_TOKEN, else a random one kept across runs) and exports with ``bridge.url``
and ``bridge.token_file`` set for the compose network, unless modelmon.yaml sets its own:
Alertmanager and Grafana then send the token the bridge requires.

and, when the registry holds no model yet, trains the demo's churn model epoch by epoch in
a tracked run (the training dashboard's data) and registers it from that run.

``traffic --url URL`` sends demo customers to the server, a few rows a request, in phases
of normal and shifted customers (price rise, a new payment method), with a few malformed
requests, and sends the true labels back for most predictions a little later. It stops
after ``--requests`` requests or ``--hours`` hours, whichever comes first.
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import shutil
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROMETHEUS_YML = HERE.parent / "prometheus" / "prometheus.yml"
MODEL = "churn"
EXPERIMENT = "churn-demo"


def _modelmon(*args: str) -> None:
    """A modelmon command, in this process."""
    from modelmon.cli import app

    code = app(list(args), standalone_mode=False)
    if code:
        raise SystemExit(f"modelmon {' '.join(args)} failed ({code})")


def setup(config: Path, store: str | None, prometheus_url: str, grafana_config: str, sqlite_path: str | None,
          alerting_config: Path | None, skip_model: bool, bridge_url: str = "http://notify-bridge:9096",
          bridge_token_file: Path | None = None) -> None:  # fmt: skip
    from modelmon.dashboards import write_provisioning

    (config / "prometheus").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(PROMETHEUS_YML, config / "prometheus" / "prometheus.yml")
    _modelmon("rules", "export", str(config / "prometheus" / "rules"), "--window", "1h")
    alerts = ["alerts", "export", str(config / "alerting")]
    source = alerting_config if alerting_config is not None and alerting_config.exists() else None
    if bridge_token_file is not None:
        write_bridge_token(bridge_token_file)
        merged = config / "alerting" / "modelmon.yaml"
        merged.parent.mkdir(parents=True, exist_ok=True)
        merged.write_text(yaml_dump(with_bridge(read_yaml(source), bridge_url, bridge_token_file.absolute())))
        alerts += ["--config", str(merged)]
    elif source is not None:
        alerts += ["--config", str(source)]
    _modelmon(*alerts)
    # `modelmon alerts export` also writes the drift recording rules, already in rules/.
    (config / "alerting" / "prometheus" / "modelmon-drift.rules.yml").unlink(missing_ok=True)
    write_provisioning(config / "grafana", store_url=store, prometheus_url=prometheus_url, sqlite_path=sqlite_path,
                       window="1h", dashboards_path=f"{grafana_config}/dashboards/modelmon")  # fmt: skip
    for empty in ("alerting", "plugins"):  # Grafana reads every provisioning directory
        (config / "grafana" / empty).mkdir(exist_ok=True)
    if not skip_model:
        register_demo_model(store)


def write_bridge_token(path: Path) -> None:
    """notify-bridge's token: $MODELMON_BRIDGE_TOKEN, else the one already there, else a new
    random one. Never printed. Readable by all (0644): Alertmanager (nobody) and Grafana
    (uid 472) read it too, and only the services that use it mount its volume."""
    token = os.environ.get("MODELMON_BRIDGE_TOKEN", "").strip()
    existing = path.read_text().strip() if path.exists() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    if token and token != existing:
        path.write_text(token)
        print(f"notify-bridge token: from $MODELMON_BRIDGE_TOKEN, written to {path}")
    elif not token and not existing:
        path.write_text(secrets.token_urlsafe(32))
        print(f"notify-bridge token: generated in {path} (kept across runs)")
    os.chmod(path, 0o644)


def read_yaml(path: Path | None) -> dict[str, Any]:
    import yaml

    data = yaml.safe_load(path.read_text()) if path is not None else None
    return data if isinstance(data, dict) else {}


def yaml_dump(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def with_bridge(data: dict[str, Any], url: str, token_file: Path) -> dict[str, Any]:
    """modelmon.yaml with notify-bridge reached on the compose network with the token, unless
    it says otherwise (``bridge.url``, ``bridge.token`` or ``bridge.token_file``)."""
    bridge = dict(data.get("bridge") or {})
    bridge.setdefault("url", url)
    if "token" not in bridge and "token_file" not in bridge:
        bridge["token_file"] = str(token_file)
    return {**data, "bridge": bridge}


def register_demo_model(store: str | None) -> None:
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    import modelmon
    from modelmon.demo.data import (
        CATEGORICAL_FEATURES,
        NUMERIC_FEATURES,
        TARGET,
        generate_customers,
    )
    from modelmon.tracking.sklearn import fit_epochs

    registry = modelmon.Registry()
    if MODEL in registry.model_names():
        print(f"{MODEL} is already registered: {registry.root}")
        return
    train, validation = generate_customers(5000, seed=1), generate_customers(2000, seed=2)
    pipeline = make_pipeline(
        make_column_transformer((StandardScaler(), NUMERIC_FEATURES), (OneHotEncoder(handle_unknown="ignore"), CATEGORICAL_FEATURES)),
        LogisticRegression(max_iter=1000),
    )
    params = {"model": "LogisticRegression", "epochs": 8, "train_rows": len(train)}
    with modelmon.start_run(EXPERIMENT, name="logreg", params=params, store=store) as run:
        fit_epochs(pipeline, train.drop(columns=TARGET), train[TARGET], run=run, epochs=8,
                   validation=(validation.drop(columns=TARGET), validation[TARGET]), positive="yes")  # fmt: skip
        card = modelmon.register_model(pipeline, name=MODEL, reference=train, target=TARGET, validation=validation, run=run)
    print(f"registered {card.name} version {card.version} from run {run.id}")


def traffic(url: str, requests: int, hours: float, rate: float, phase_requests: int, seed: int) -> dict[str, int]:
    import httpx

    from modelmon.demo.data import TARGET, generate_customers

    rng = random.Random(seed)
    deadline = time.monotonic() + hours * 3600
    counts = {"requests": 0, "ok": 0, "rejected": 0, "labels": 0}
    pending: list[dict[str, str]] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(600):  # the server may still be starting
            try:
                if client.get("/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        sent = 0
        while (requests <= 0 or sent < requests) and time.monotonic() < deadline:
            shifted = (sent // phase_requests) % 2 == 1
            batch = generate_customers(rng.randint(1, 8), seed=rng.randrange(1 << 30), shift=shifted)
            rows = batch.drop(columns=TARGET).to_dict("records")
            if rng.random() < 0.03:
                response = client.post(f"/v1/models/{MODEL}:predict", json={"instances": [{**rows[0], "tenure_months": "a year"}]})
            else:
                response = client.post(f"/v1/models/{MODEL}:predict", json={"instances": rows})
            sent += 1
            counts["requests"] += 1
            if response.status_code == 200:
                counts["ok"] += 1
                for prediction, truth in zip(response.json()["predictions"], batch[TARGET], strict=True):
                    if rng.random() < 0.7:
                        pending.append({"id": prediction["id"], "label": truth})
            else:
                counts["rejected"] += 1
            if len(pending) >= 50 or (requests > 0 and sent >= requests and pending):
                answer = client.post(f"/v2/models/{MODEL}/feedback", json={"labels": pending})
                if answer.status_code == 200:
                    counts["labels"] += answer.json()["matched"]
                pending = []
            if rate > 0:
                time.sleep(rng.expovariate(rate))
    print(" ".join(f"{k}={v}" for k, v in counts.items()), flush=True)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    s = commands.add_parser("setup", help="write the configuration of every service; register the demo model")
    s.add_argument("--config", type=Path, required=True)
    s.add_argument("--store", default=os.environ.get("MODELMON_STORE_URL"))
    s.add_argument("--prometheus-url", default="http://prometheus:9090", help="Prometheus as Grafana reaches it")
    s.add_argument("--grafana-config", default="/etc/modelmon/grafana", help="where Grafana sees DIR/grafana")
    s.add_argument("--sqlite-path", default=None, help="the SQLite store as Grafana sees it")
    s.add_argument("--alerting-config", type=Path, default=HERE.parent / "modelmon.yaml", help="channels and rules for modelmon alerts export")
    s.add_argument("--skip-model", action="store_true")
    s.add_argument("--bridge-url", default="http://notify-bridge:9096", help="notify-bridge as Alertmanager and Grafana reach it")
    s.add_argument("--bridge-token-file", type=Path, default=None,
                   help="write notify-bridge's token here and have the export send it (see docker-compose.yml)")
    t = commands.add_parser("traffic", help="send demo traffic and labels")
    t.add_argument("--url", default="http://modelmon:8080")
    t.add_argument("--requests", type=int, default=0, help="stop after this many requests (0: no limit)")
    t.add_argument("--hours", type=float, default=24.0, help="stop after this long")
    t.add_argument("--rate", type=float, default=5.0, help="requests per second (0: as fast as the server answers)")
    t.add_argument("--phase-requests", type=int, default=3000, help="requests per phase (normal, then shifted, ...)")
    t.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "setup":
        setup(args.config, args.store, args.prometheus_url, args.grafana_config, args.sqlite_path, args.alerting_config,
              args.skip_model, args.bridge_url, args.bridge_token_file)
    else:
        traffic(args.url, args.requests, args.hours, args.rate, args.phase_requests, args.seed)


if __name__ == "__main__":
    main()
