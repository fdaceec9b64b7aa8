"""``modelmon grafana ...`` and ``modelmon report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from modelmon.console import fail, say
from modelmon.errors import ModelmonError

grafana_app = typer.Typer(help="Grafana dashboards and provisioning.", no_args_is_help=True)


def _fail(message: str) -> NoReturn:
    fail(message)


StoreOption = Annotated[
    str | None,
    typer.Option("--store", help="The store the server and training write: a SQLite path or postgresql+psycopg://... \\[default: $MODELMON_STORE_URL, else $MODELMON_HOME/modelmon.db]."),
]


@grafana_app.command("export")
def export(
    out_dir: Annotated[Path, typer.Argument(help="Directory to write datasources/ and dashboards/ into (mount it as /etc/grafana/provisioning).")],
    store: StoreOption = None,
    prometheus_url: Annotated[str, typer.Option(help="Prometheus as Grafana reaches it.")] = "http://localhost:9090",
    sql: Annotated[str | None, typer.Option(help="Which data source the SQL panels query: postgresql or sqlite \\[default: the store's].")] = None,
    sqlite_path: Annotated[str | None, typer.Option(help="The SQLite store's path as Grafana sees it \\[default: the store's own path].")] = None,
    window: Annotated[str, typer.Option(help="Windows of the recording rules (modelmon rules export --window), comma separated: the only ones the dashboards offer; the first is the default.")] = "1h",
    scrape_interval: Annotated[str, typer.Option(help="Prometheus's scrape interval: the panels' minimum interval.")] = "15s",
    dashboards_path: Annotated[str, typer.Option(help="Where Grafana finds the dashboards' JSON.")] = "/etc/grafana/provisioning/dashboards/modelmon",
    datasource: Annotated[str | None, typer.Option(help="The Prometheus data source (uid or name) the dashboards' $datasource variable starts on \\[default: the one written here, uid prometheus].")] = None,
    multi_cluster: Annotated[bool, typer.Option("--multi-cluster", help="Show the $cluster variable: Prometheus scrapes several clusters (a cluster label), as kubernetes-mixin's showMultiCluster.")] = False,
) -> None:
    """Write Grafana provisioning: the Prometheus, PostgreSQL and SQLite data sources, and the
    five modelmon dashboards with their file provider."""
    from modelmon.dashboards.export import write_provisioning

    if sql is not None and sql not in ("postgresql", "sqlite"):
        _fail(f"--sql must be postgresql or sqlite, not {sql!r}")
    try:
        result = write_provisioning(
            out_dir, store_url=store, prometheus_url=prometheus_url, dialect=sql, sqlite_path=sqlite_path,  # type: ignore[arg-type]
            window=window, scrape_interval=scrape_interval, dashboards_path=dashboards_path, datasource=datasource,
            multi_cluster=multi_cluster,
        )
    except ModelmonError as exc:
        _fail(exc.message)
    say(f"wrote Grafana provisioning to {out_dir} (SQL panels on the {result.dialect} data source):")
    for path in result.files:
        say(f"  {path}")
    for note in result.notes:
        say(("note:", "yellow"), f" {note}")
    say("mount it as /etc/grafana/provisioning; Grafana reads the PostgreSQL password from "
        "$MODELMON_GRAFANA_POSTGRES_PASSWORD and needs the frser-sqlite-datasource plugin for SQLite.")


def report(
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write.")] = Path("report.html"),
    prometheus: Annotated[str | None, typer.Option("--prometheus", help="Prometheus URL (serving, drift, quality, alerts, live training).")] = None,
    store: Annotated[str | None, typer.Option("--store", help="The store (training runs, prediction log): a SQLite path or postgresql+psycopg://...")] = None,
    range_: Annotated[str | None, typer.Option("--range", help="Time range of every section, e.g. 1h or 2d \\[default: each dashboard's own: 6h, training 7d].")] = None,
    model: Annotated[str | None, typer.Option(help="The model to report on \\[default: the first served].")] = None,
    experiment: Annotated[str | None, typer.Option(help="The training experiment \\[default: the first in the store].")] = None,
    window: Annotated[str, typer.Option(help="Window of the recording rules (modelmon rules export --window).")] = "1h",
    scrape_interval: Annotated[str, typer.Option(help="Prometheus's scrape interval.")] = "15s",
) -> None:
    """Write a self-contained HTML report of the dashboards' panels, for users without Grafana."""
    from modelmon.dashboards.report import write_report
    from modelmon.dashboards.templating import TemplateError, parse_duration

    try:
        range_seconds = parse_duration(range_) if range_ else None
        scrape = parse_duration(scrape_interval)
    except TemplateError as exc:
        _fail(str(exc))
    try:
        summary = write_report(out, prometheus, store, range_seconds=range_seconds, model=model, experiment=experiment,
                               window=window, scrape_interval=scrape)
    except ModelmonError as exc:
        _fail(exc.message)
    for note in summary.notes:
        say(("note:", "yellow"), f" {note}")
    say(f"wrote {out}: {summary.drawn} panels with data, {len(summary.empty)} without")
