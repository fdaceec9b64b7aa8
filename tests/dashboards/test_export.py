"""``modelmon grafana export``: the provisioning tree, its data sources and no secret in it."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from modelmon.dashboards import grafana
from modelmon.dashboards.export import PASSWORD_ENV, write_provisioning


def test_export_writes_datasources_provider_and_dashboards(tmp_path):
    url = "postgresql+psycopg://alice:s3cret-pw@db.internal:5433/mlstore?sslmode=require"
    result = write_provisioning(tmp_path, store_url=url, prometheus_url="http://prometheus:9090")
    assert result.dialect == "postgresql"
    names = sorted(str(p.relative_to(tmp_path)) for p in result.files)
    assert names == [
        "dashboards/modelmon.yaml", "dashboards/modelmon/modelmon-alerts.json", "dashboards/modelmon/modelmon-drift.json",
        "dashboards/modelmon/modelmon-quality.json", "dashboards/modelmon/modelmon-serving.json",
        "dashboards/modelmon/modelmon-training.json", "datasources/modelmon.yaml",
    ]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert "s3cret" not in path.read_text(), f"the password leaked into {path}"
    sources = {d["uid"]: d for d in yaml.safe_load((tmp_path / "datasources" / "modelmon.yaml").read_text())["datasources"]}
    assert set(sources) == {grafana.PROMETHEUS_UID, grafana.POSTGRESQL_UID, grafana.SQLITE_UID}
    prometheus, pg, sqlite = sources["prometheus"], sources["modelmon-postgresql"], sources["modelmon-sqlite"]
    assert (prometheus["type"], prometheus["url"], prometheus["isDefault"]) == ("prometheus", "http://prometheus:9090", False)
    assert pg["type"] == "grafana-postgresql-datasource"
    assert (pg["url"], pg["user"], pg["jsonData"]["database"], pg["jsonData"]["sslmode"]) == ("db.internal:5433", "alice", "mlstore", "require")
    assert pg["secureJsonData"] == {"password": f"$__env{{{PASSWORD_ENV}}}"}
    assert "password" not in pg and "password" not in pg["jsonData"]
    assert sqlite["type"] == "frser-sqlite-datasource" and sqlite["jsonData"]["path"]
    provider = yaml.safe_load((tmp_path / "dashboards" / "modelmon.yaml").read_text())["providers"][0]
    assert provider["type"] == "file" and provider["options"]["path"] == "/etc/grafana/provisioning/dashboards/modelmon"
    training = json.loads((tmp_path / "dashboards" / "modelmon" / "modelmon-training.json").read_text())
    sql_targets = [t for p in training["panels"] for t in p.get("targets", []) if "rawSql" in t]
    assert sql_targets and all(t["datasource"]["uid"] == grafana.POSTGRESQL_UID for t in sql_targets)


def test_a_sqlite_store_gives_sqlite_panels_on_its_path(tmp_path):
    store = tmp_path / "home" / "modelmon.db"
    result = write_provisioning(tmp_path / "out", store_url=str(store))
    assert result.dialect == "sqlite"
    sources = yaml.safe_load((tmp_path / "out" / "datasources" / "modelmon.yaml").read_text())["datasources"]
    assert next(d for d in sources if d["uid"] == grafana.SQLITE_UID)["jsonData"]["path"] == str(store.resolve())
    quality = json.loads((tmp_path / "out" / "dashboards" / "modelmon" / "modelmon-quality.json").read_text())
    sql_targets = [t for p in quality["panels"] for t in p.get("targets", []) if t["datasource"]["uid"] == grafana.SQLITE_UID]
    assert len(sql_targets) == 2 and all("queryText" in t for t in sql_targets)
    # Grafana in a container sees the store elsewhere.
    write_provisioning(tmp_path / "c", store_url=str(store), sqlite_path="/var/lib/modelmon/modelmon.db")
    sources = yaml.safe_load((tmp_path / "c" / "datasources" / "modelmon.yaml").read_text())["datasources"]
    assert next(d for d in sources if d["uid"] == grafana.SQLITE_UID)["jsonData"]["path"] == "/var/lib/modelmon/modelmon.db"


def test_export_command(tmp_path):
    command = [sys.executable, "-m", "modelmon.cli", "grafana", "export", str(tmp_path / "out"), "--store", str(tmp_path / "s.db"),
               "--sql", "postgresql", "--window", "10m"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "postgresql data source" in result.stderr
    drift = json.loads((tmp_path / "out" / "dashboards" / "modelmon" / "modelmon-drift.json").read_text())
    assert next(v for v in drift["templating"]["list"] if v["name"] == "window")["current"]["value"] == "10m"
    bad = subprocess.run([*command[:-4], "--sql", "mysql"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--sql must be postgresql or sqlite" in bad.stderr
    bad = subprocess.run([*command[:-2], "--window", "soon"], capture_output=True, text=True)
    assert bad.returncode == 2 and "window 'soon'" in bad.stderr
