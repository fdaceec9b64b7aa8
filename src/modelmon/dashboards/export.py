"""``modelmon grafana export OUT_DIR``: a Grafana provisioning tree.

    OUT_DIR/datasources/modelmon.yaml          Prometheus, PostgreSQL and SQLite data sources
    OUT_DIR/dashboards/modelmon.yaml           a file provider for the dashboards below
    OUT_DIR/dashboards/modelmon/*.json         the five dashboards

Mount OUT_DIR as Grafana's provisioning directory (``/etc/grafana/provisioning``), or copy
the two sub-directories into it. Data source uids are fixed (``prometheus``,
``modelmon-postgresql``, ``modelmon-sqlite``), so the dashboards, and the Grafana alert rules
of ``modelmon alerts export`` (whose default ``datasource_uid`` is ``prometheus``), find them.
No secret is written: the PostgreSQL password is ``$__env{MODELMON_GRAFANA_POSTGRES_PASSWORD}``,
which Grafana reads from its environment when it provisions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from modelmon.dashboards import grafana
from modelmon.dashboards.spec import Dialect
from modelmon.errors import ModelmonError

PASSWORD_ENV = "MODELMON_GRAFANA_POSTGRES_PASSWORD"
DEFAULT_PROMETHEUS_URL = "http://localhost:9090"
DEFAULT_DASHBOARDS_PATH = "/etc/grafana/provisioning/dashboards/modelmon"
DEFAULT_SQLITE_PATH = "/var/lib/modelmon/modelmon.db"
FOLDER = "modelmon"


@dataclass
class StoreTarget:
    """Where Grafana finds the store: the SQL dialect its dashboards use, and the connection
    fields of each data source (never a password)."""

    dialect: Dialect
    postgres_host: str = "localhost:5432"
    postgres_database: str = "modelmon"
    postgres_user: str = "grafana"
    postgres_sslmode: str = "disable"
    sqlite_path: str = DEFAULT_SQLITE_PATH
    notes: list[str] = field(default_factory=list)

    @classmethod
    def from_url(cls, store_url: str | None, dialect: Dialect | None = None, sqlite_path: str | None = None) -> StoreTarget:
        """From the store URL the server and training use (``--store``; None: the default
        SQLite file). ``dialect`` overrides which data source the dashboards' SQL panels use."""
        from sqlalchemy.engine import make_url

        from modelmon.store import resolve_store_url

        url = resolve_store_url(store_url)
        if url.get_backend_name() == "postgresql":
            target = cls(dialect or "postgresql")
            target.postgres_host = f"{url.host or 'localhost'}:{url.port or 5432}"
            target.postgres_database = url.database or "postgres"
            target.postgres_user = url.username or "postgres"
            target.postgres_sslmode = str(url.query.get("sslmode", "disable"))
            options = str(url.query.get("options", ""))
            if "search_path" in options:
                target.notes.append(
                    f"the store uses a schema other than public ({options}); Grafana's PostgreSQL data source cannot set "
                    f"search_path: run ALTER ROLE {target.postgres_user} SET search_path = <schema> for the user Grafana connects as"
                )
            if sqlite_path:
                target.sqlite_path = sqlite_path
            return target
        if url.get_backend_name() != "sqlite":
            raise ModelmonError(f"store URL {make_url(url).render_as_string(hide_password=True)}: only PostgreSQL and SQLite stores have a Grafana data source")
        path = sqlite_path or (str(Path(url.database).resolve()) if url.database else DEFAULT_SQLITE_PATH)
        return cls(dialect or "sqlite", sqlite_path=path)


def datasources(prometheus_url: str, store: StoreTarget, scrape_interval: str = "15s") -> dict[str, Any]:
    """Grafana's data source provisioning file, as a dict."""
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus (modelmon)",
                "uid": grafana.PROMETHEUS_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": prometheus_url,
                # Not the default: Grafana refuses a second default data source, and a shared
                # Grafana has one. The dashboards choose it through $datasource.
                "isDefault": False,
                "editable": False,
                # The minimum interval of every panel, and the base of $__rate_interval.
                "jsonData": {"timeInterval": scrape_interval, "httpMethod": "POST"},
            },
            {
                "name": "modelmon store (PostgreSQL)",
                "uid": grafana.POSTGRESQL_UID,
                "type": grafana.POSTGRESQL_TYPE,
                "access": "proxy",
                "url": store.postgres_host,
                "user": store.postgres_user,
                "editable": False,
                "jsonData": {
                    "database": store.postgres_database,
                    "sslmode": store.postgres_sslmode,
                    "postgresVersion": 1500,
                    "timescaledb": False,
                    "maxOpenConns": 10,
                },
                "secureJsonData": {"password": f"$__env{{{PASSWORD_ENV}}}"},
            },
            {
                "name": "modelmon store (SQLite)",
                "uid": grafana.SQLITE_UID,
                "type": grafana.SQLITE_TYPE,
                "access": "proxy",
                "editable": False,
                # Read-only: Grafana never writes the store, and never blocks a writer (WAL).
                "jsonData": {"path": store.sqlite_path},
            },
        ],
    }


def dashboard_provider(dashboards_path: str) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "modelmon",
                "orgId": 1,
                "folder": FOLDER,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 60,
                "options": {"path": dashboards_path, "foldersFromFilesStructure": False},
            }
        ],
    }


@dataclass
class Provisioning:
    """What an export wrote."""

    out_dir: Path
    dialect: Dialect
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def write_provisioning(
    out_dir: Path | str,
    *,
    store_url: str | None = None,
    prometheus_url: str = DEFAULT_PROMETHEUS_URL,
    dialect: Dialect | None = None,
    sqlite_path: str | None = None,
    window: str = "1h",
    scrape_interval: str = "15s",
    dashboards_path: str = DEFAULT_DASHBOARDS_PATH,
    datasource: str | None = None,
    multi_cluster: bool = False,
) -> Provisioning:
    """Write the provisioning tree into ``out_dir``.

    ``store_url`` is the store the server and training write (default: ``$MODELMON_STORE_URL``,
    else the SQLite file under ``$MODELMON_HOME``): its host, database and user fill the
    PostgreSQL data source (the password never: Grafana reads it from
    ``$MODELMON_GRAFANA_POSTGRES_PASSWORD``), its path the SQLite one, and its dialect picks
    which of the two the dashboards' SQL panels query (``dialect`` overrides). ``sqlite_path``
    is the store's path as Grafana sees it, when Grafana runs elsewhere (a container).
    ``window`` is the default of the dashboards' rules-window variable (``modelmon rules
    export --window``). ``dashboards_path`` is where Grafana finds the dashboards' JSON (the
    provider's path): ``OUT_DIR/dashboards/modelmon`` once OUT_DIR is mounted as
    ``/etc/grafana/provisioning``. ``datasource`` (a uid or name) is the default of the
    dashboards' ``$datasource`` variable, for a Grafana whose Prometheus is already there
    [default: the ``prometheus`` uid of the data source written here]. ``multi_cluster``
    shows the dashboards' ``$cluster`` variable (hidden by default: one cluster)."""
    from modelmon.rules.drift import check_window

    try:
        for w in window.split(","):
            check_window(w.strip())
        check_window(scrape_interval)
    except ValueError as exc:
        raise ModelmonError(str(exc)) from None
    store = StoreTarget.from_url(store_url, dialect, sqlite_path)
    out = Path(out_dir)
    result = Provisioning(out, store.dialect, notes=list(store.notes))

    def write(path: Path, text: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        result.files.append(path)

    header = "# Written by `modelmon grafana export`; regenerate rather than edit.\n"
    write(out / "datasources" / "modelmon.yaml",
          header + yaml.safe_dump(datasources(prometheus_url, store, scrape_interval), sort_keys=False))
    write(out / "dashboards" / "modelmon.yaml", header + yaml.safe_dump(dashboard_provider(dashboards_path), sort_keys=False))
    for uid, model in grafana.dashboards_json(store.dialect, window=window, datasource=datasource or grafana.PROMETHEUS_UID,
                                             multi_cluster=multi_cluster).items():
        write(out / "dashboards" / "modelmon" / f"{uid}.json", json.dumps(model, indent=2) + "\n")
    return result
