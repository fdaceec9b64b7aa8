"""The decisions table with decisions of two models (dashboards/decisions.py), from a real
store (SQLite and PostgreSQL), through the report's own reader: each row names its model,
which the rollout id and version alone do not; a one-model table stays as it was."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from modelmon.dashboards import report
from modelmon.dashboards.decisions import COLUMNS, MODEL_COLUMN
from modelmon.dashboards.queries import Source
from modelmon.dashboards.templating import Expansion, Selection, TimeRange
from modelmon.store import open_store, rollouts
from tests.rollout.test_report_decisions import new_rollout


def _table(store_url: str, models: tuple[str, ...]) -> tuple[list[str], list[list[str]]]:
    """The report's decisions table for ``models``: its header and its rows' cells."""
    context = Expansion(TimeRange(datetime.now(UTC) - timedelta(minutes=5), datetime.now(UTC) + timedelta(seconds=5)),
                        variables={"model": Selection(models, multi=len(models) > 1)})
    found = report._decisions(Source(store_url=store_url), context)
    assert found is not None and found[1] is None, found
    assert found[0] is not None
    head = re.findall(r"<th>(.*?)</th>", found[0])
    rows = [re.findall(r"<td>(.*?)</td>", row) for row in re.findall(r"<tr>(.*?)</tr>", found[0])[1:]]
    return head, rows


def test_each_row_names_its_model_when_the_table_holds_two(store_url: str) -> None:
    store = open_store(store_url)
    # The same rollout shape for both models (candidate version 2 each), so only the model
    # tells their rows apart.
    churn, spend = new_rollout(store, model="churn"), new_rollout(store, model="spend")
    rollouts.apply(store, churn, "abort", decided_by="cli", evidence={"operator": "abort"})
    rollouts.apply(store, spend, "promote", decided_by="http", evidence={"operator": "promote"})

    head, rows = _table(store_url, ("churn", "spend"))
    assert head == [COLUMNS[0], MODEL_COLUMN, *COLUMNS[1:]]
    assert [(r[1], r[2], r[3]) for r in rows] == [
        ("churn", f"{churn.id}: version 2", "start"), ("churn", f"{churn.id}: version 2", "abort"),
        ("spend", f"{spend.id}: version 2", "start"), ("spend", f"{spend.id}: version 2", "promote"),
    ]
    # One model: no model column, the cells as before.
    head, rows = _table(store_url, ("spend",))
    assert head == list(COLUMNS)
    assert [r[1:3] for r in rows] == [[f"{spend.id}: version 2", "start"], [f"{spend.id}: version 2", "promote"]]
