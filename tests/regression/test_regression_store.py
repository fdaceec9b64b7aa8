"""The prediction log's table holds a regressor's rows on SQLite and PostgreSQL (migration
0003: probabilities may be NULL), through the journal's fast insert; going back to 0002
keeps them (their probabilities become the JSON null) and forward again restores NULL-able."""

from __future__ import annotations

import orjson
from sqlalchemy import inspect, select

from modelmon.store import open_store
from modelmon.store.migrate import HEAD_REVISION, current_revision, downgrade, upgrade
from modelmon.store.predictions import PredictionTimestamps, insert_journal_lines, predictions


def test_a_regressors_predictions_are_stored_with_null_probabilities(store_url: str) -> None:
    store = open_store(store_url)
    assert current_revision(store.engine) == HEAD_REVISION
    columns = {c["name"]: c for c in inspect(store.engine).get_columns("predictions")}
    assert columns["probabilities"]["nullable"]
    t = 1_700_000_000.25
    values = [21.5, -0.1, 1e-300]
    line = orjson.dumps(["price", 1, t, "pfx", 7, [repr(v) for v in values], None, None])
    classifier = orjson.dumps(["shop", 1, t, "pfx", 20, ["gold"], [[0.25, 0.75]], None])
    entries = [b"[" + orjson.dumps(PredictionTimestamps()(t)) + b"," + raw + b"]" for raw in (line, classifier)]
    with store.write() as connection:
        insert_journal_lines(connection, entries)
        insert_journal_lines(connection, entries)  # again: stored once
    with store.read() as connection:
        rows = connection.execute(
            select(predictions.c.id, predictions.c.predicted_label, predictions.c.probabilities).order_by(predictions.c.id)
        ).all()
    assert [(r.id, r.predicted_label) for r in rows] == [
        ("pfx-20", "gold"), ("pfx-7", "21.5"), ("pfx-8", "-0.1"), ("pfx-9", "1e-300"),
    ]
    assert [float(r.predicted_label) for r in rows[1:]] == values
    assert rows[0].probabilities == [0.25, 0.75]
    assert [r.probabilities for r in rows[1:]] == [None, None, None]

    downgrade(store.engine, "0002")
    assert not {c["name"]: c for c in inspect(store.engine).get_columns("predictions")}["probabilities"]["nullable"]
    with store.read() as connection:
        assert len(connection.execute(select(predictions.c.id)).all()) == 4  # nothing lost
    upgrade(store.engine)
    assert current_revision(store.engine) == HEAD_REVISION
    assert {c["name"]: c for c in inspect(store.engine).get_columns("predictions")}["probabilities"]["nullable"]
    with store.read() as connection:  # the view over the rebuilt table still answers
        connection.exec_driver_sql("SELECT count(*) FROM labelled_predictions").scalar_one()
