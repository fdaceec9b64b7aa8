"""``modelmon report`` when the store cannot be read: a real server serving ``shop`` (no
rollout) scraped by a real Prometheus, and a store that cannot be opened (a PostgreSQL URL
nothing listens on, or a file that is not a database). The rollout row is left out only when
the store, which keeps the rollouts, says there were none: here it cannot say, so the report
shows the error, naming the store, in the decisions panel and in the notes the CLI prints."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelmon.dashboards import catalog, decisions
from modelmon.dashboards.catalog import SERVING_UID, all_dashboards
from modelmon.dashboards.report import write_report
from modelmon.stack.processes import free_port
from modelmon.stack.prometheus import Prometheus
from tests.conftest import ServerProcess

pytestmark = pytest.mark.slow
SERVING = next(d for d in all_dashboards() if d.uid == SERVING_UID)


@pytest.fixture(scope="module")
def prometheus(server: ServerProcess, tmp_path_factory) -> Iterator[Prometheus]:
    prom = Prometheus.start(tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{server.port}"])
    try:
        assert prom.wait_for('count(modelmon_model_info{model="shop"})', 1, timeout=30) == 1
        yield prom
    finally:
        prom.stop()


def _unreachable_postgresql(tmp_path: Path) -> str:
    return f"postgresql+psycopg://modelmon@127.0.0.1:{free_port()}/test"  # free_port's answer: nothing listens


def _not_a_database(tmp_path: Path) -> str:
    junk = tmp_path / "store.db"
    junk.write_bytes(b"this is not an SQLite database, " * 64)
    return f"sqlite:///{junk}"


@pytest.mark.parametrize(("make_store", "cause"), [
    (_unreachable_postgresql, "Connection refused"),
    (_not_a_database, "file is not a database"),
], ids=["unreachable", "not-a-database"])
def test_a_store_that_cannot_be_read_is_reported_not_hidden(prometheus: Prometheus, tmp_path: Path, make_store, cause: str) -> None:
    store = make_store(tmp_path)
    assert prometheus.query('modelmon_rollout_state{model="shop"}') == []  # Prometheus saw no rollout
    summary = write_report(tmp_path / "report.html", prometheus.url, store, range_seconds=300, scrape_interval=1.0, model="shop")
    page = (tmp_path / "report.html").read_text()

    (outcome,) = [p for p in summary.panels if p.dashboard == SERVING.title and p.title == decisions.TITLE]
    assert not outcome.has_data and outcome.error is not None
    # The store is named once, by the error that opening it raised.
    assert outcome.error.startswith(f"the rollout store could not be read: cannot open the store {store}: ")
    assert outcome.error.count(store) == 1
    assert f"{SERVING.title}: {outcome.error}" in summary.notes
    # In the page: the decisions row's heading and its panel with the error; not the Rollout
    # row of Prometheus panels (they have nothing to show without a rollout).
    serving = page.split("<h2 id='modelmon-serving'>")[1].split("<h2 ")[0]
    assert "<h3>Rollout</h3>" not in serving
    rollout = serving.split(f"<h3>{catalog.rollout_decisions().title}</h3>")[1]
    assert re.findall(r"<h4>(.*?)</h4>", rollout) == [decisions.TITLE]
    assert f"Error: the rollout store could not be read: cannot open the store {store}: " in rollout
    assert cause in rollout
