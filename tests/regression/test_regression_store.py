"""The prediction log's table holds a regressor's rows on SQLite and PostgreSQL (migration
0003: probabilities may be NULL), through the journal's fast insert; going back to 0002
keeps them (their probabilities become the JSON null) and forward again restores NULL-able."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import inspect, select

from modelmon.serving.feedback import numeric_label
from modelmon.store import Store, open_store
from modelmon.store.migrate import HEAD_REVISION, current_revision, downgrade, upgrade
from modelmon.store.predictions import (
    PredictionTimestamps,
    insert_ignoring_duplicates,
    insert_journal_lines,
    labels,
    predictions,
)


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


def _view(store: Store) -> dict[str, dict[str, Any]]:
    with store.read() as connection:
        rows = connection.exec_driver_sql("SELECT * FROM labelled_predictions").mappings().all()
    return {row["prediction_id"]: dict(row) for row in rows}


def test_the_labelled_predictions_view_gives_a_regressors_error_not_correct(store_url: str) -> None:
    """Revision 0006: ``correct`` is NULL for a regressor's rows (0002 compared the values as
    text: always 0) and ``error`` is predicted minus true (NULL for a classifier's rows);
    down to 0005 the old view is back, and up again the new one, also over the JSON null
    probabilities that going down to 0002 leaves."""
    store = open_store(store_url)
    t = 1_700_000_000.25
    regressor = orjson.dumps(["price", 1, t, "reg", 0, [272.966796875, -0.1, 3.0], None, None])
    # A call with a value that is not finite journals all its values as text (repr).
    not_finite = orjson.dumps(["price", 1, t, "nan", 0, ["nan", "2.5"], None, None])
    classifier = orjson.dumps(["shop", 1, t, "cls", 0, ["gold", "gold", "1"], [[0.2, 0.8, 0.0]] * 3, None])
    entries = [b"[" + orjson.dumps(PredictionTimestamps()(t)) + b"," + raw + b"]" for raw in (regressor, not_finite, classifier)]
    # True values as the feedback endpoint stores them (repr of the float).
    truth = {"reg-0": numeric_label(0, "reg-0", 321), "reg-1": numeric_label(1, "reg-1", 0.4),
             "reg-2": numeric_label(2, "reg-2", 3.0), "nan-0": numeric_label(3, "nan-0", 1.0),
             "nan-1": numeric_label(4, "nan-1", 4), "cls-0": "gold", "cls-1": "silver", "cls-2": "1"}
    model = {"reg": "price", "nan": "price", "cls": "shop"}
    received = datetime(2023, 11, 14, 22, 20, tzinfo=UTC)
    with store.write() as connection:
        insert_journal_lines(connection, entries)
        connection.execute(insert_ignoring_duplicates(labels, store.dialect), [
            {"prediction_id": i, "model": model[i.split("-")[0]], "version": 1, "label": y, "received_at": received}
            for i, y in truth.items()
        ])

    # Hand-worked: 272.966796875 - 321 = -48.033203125 and 3 - 3 = 0 (exact in binary);
    # -0.1 - 0.4 = -0.5 to within the text-to-float reading of each database.
    expected_error = {"reg-0": -48.033203125, "reg-1": -0.5, "reg-2": 0.0, "nan-0": None, "nan-1": -1.5,
                      "cls-0": None, "cls-1": None, "cls-2": None}
    expected_correct = {"reg-0": None, "reg-1": None, "reg-2": None, "nan-0": None, "nan-1": None,
                        "cls-0": 1, "cls-1": 0, "cls-2": 1}

    def check_new_view() -> None:
        rows = _view(store)
        assert {i: r["correct"] for i, r in rows.items()} == expected_correct
        errors = {i: r["error"] for i, r in rows.items()}
        assert {i for i, e in errors.items() if e is None} == {i for i, e in expected_error.items() if e is None}
        assert {i: float(e) for i, e in errors.items() if e is not None} == pytest.approx(
            {i: e for i, e in expected_error.items() if e is not None}, rel=1e-15, abs=1e-15
        )
        assert rows["reg-0"]["error"] == -48.033203125  # exactly
        with store.read() as connection:  # quality.md's queries, per model
            quality = connection.exec_driver_sql(
                "SELECT model, avg(correct), avg(abs(error)), count(*) FROM labelled_predictions GROUP BY model ORDER BY model"
            ).all()
        # price: |errors| 48.033203125, 0.5, 0, 1.5 (the nan row has none) over 4; shop: 2 of 3 right.
        assert [(m, None if a is None else float(a), None if e is None else float(e), n) for m, a, e, n in quality] == [
            ("price", None, pytest.approx((48.033203125 + 0.5 + 0 + 1.5) / 4), 5),
            ("shop", pytest.approx(2 / 3), None, 3),
        ]

    assert current_revision(store.engine) == HEAD_REVISION == "0006"
    check_new_view()

    downgrade(store.engine, "0005")  # revision 0002's view: text comparison, no error column
    rows = _view(store)
    assert "error" not in rows["reg-0"]
    # Text equality: a regressor's row is 1 only where the two texts match ('3.0' and '3.0').
    assert {i: r["correct"] for i, r in rows.items()} == {"reg-0": 0, "reg-1": 0, "reg-2": 1, "nan-0": 0, "nan-1": 0,
                                                        "cls-0": 1, "cls-1": 0, "cls-2": 1}
    upgrade(store.engine)
    check_new_view()

    downgrade(store.engine, "0002")  # a regressor's probabilities become the JSON null
    with store.read() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM predictions WHERE probabilities IS NULL").scalar_one() == 0
    upgrade(store.engine)
    check_new_view()
