"""``modelmon feedback``'s row checks, by hand-worked cases: what each cell becomes (a
regressor's label a number, a classifier's a class as text) and which rows are named."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from modelmon.errors import ModelmonError
from modelmon.serving.feedback_file import ModelTask, feedback_items

REGRESSOR = ModelTask([])
CLASSIFIER = ModelTask(["0", "1"])


def items(ids: list, labels: list, task: ModelTask) -> list[dict]:
    return feedback_items(pd.Series(ids, dtype=object), pd.Series(labels, dtype=object), task, "f.csv")


def test_the_task_is_read_from_the_model_metadata():
    classifier = {"outputs": [{"name": "label"}, {"name": "probabilities", "parameters": {"classes": [0, 1]}},
                              {"name": "prediction_id"}]}
    assert ModelTask.from_metadata("m", classifier) == CLASSIFIER  # numeric classes as the text the server keeps
    assert ModelTask.from_metadata("m", {"outputs": [{"name": "prediction"}, {"name": "prediction_id"}]}).regressor
    with pytest.raises(ModelmonError, match="neither a classifier's nor a regressor's"):
        ModelTask.from_metadata("m", {"outputs": [{"name": "embedding"}]})


def test_a_regressors_labels_go_as_numbers():
    got = items(["a", "b", " c ", "d", 7], ["12", " 3.5 ", 4, -0.0, 2**70], REGRESSOR)
    assert got == [{"id": "a", "label": 12.0}, {"id": "b", "label": 3.5}, {"id": "c", "label": 4.0},
                   {"id": "d", "label": -0.0}, {"id": "7", "label": float(2**70)}]
    assert math.copysign(1, got[3]["label"]) == -1


def test_a_classifiers_labels_go_as_its_classes():
    got = items(["a", "b", "c"], ["1", 0, "1.0"], CLASSIFIER)
    assert [i["label"] for i in got] == ["1", "0", "1"]
    with pytest.raises(ModelmonError) as raised:
        items(["a", "b", "c"], ["2.0", "yes", float("nan")], CLASSIFIER)
    assert raised.value.message.splitlines()[1:] == [
        "  row 1: label '2.0' is not one of the model's classes ['0', '1']",
        "  row 2: label 'yes' is not one of the model's classes ['0', '1']",
        "  row 3: empty label",
    ]


def test_every_bad_row_is_named_and_nothing_is_returned():
    ids = ["a", None, "c", "d", "e", "f", "  ", "h"]
    labels = [1.0, 2.0, None, "x", float("inf"), 10**400, 3.0, True]
    with pytest.raises(ModelmonError) as raised:
        items(ids, labels, REGRESSOR)
    lines = raised.value.message.splitlines()
    assert lines[0].startswith("f.csv: 7 of 8 rows are bad") and lines[0].endswith("nothing was sent:")
    assert [line.strip().split(":")[0] for line in lines[1:]] == [f"row {n}" for n in (2, 3, 4, 5, 6, 7, 8)]
    assert lines[2:] == [
        "  row 3: empty label",
        "  row 4: label 'x' is not a number (the model is a regressor)",
        "  row 5: label inf is not a finite number",
        f"  row 6: label {str(10**400)[:60]}... (401 characters) is not a finite number",
        "  row 7: empty id",
        "  row 8: label True is not a number (the model is a regressor)",
    ]


def test_many_bad_rows_are_counted_past_the_first_twenty():
    with pytest.raises(ModelmonError) as raised:
        items([f"p-{i}" for i in range(30)], [None] * 30, REGRESSOR)
    lines = raised.value.message.splitlines()
    assert lines[0].startswith("f.csv: 30 of 30 rows are bad")
    assert len(lines) == 1 + 20 + 1 and lines[-1] == "  ... and 10 more"


def test_a_labels_file_keeps_classes_named_like_missing_values(tmp_path):
    """pandas reads ``NA``, ``None``, ``null`` and ``nan`` as missing by default: the labels
    file keeps them as text (a class may be named so); only an empty cell is empty."""
    from modelmon.registry.data import read_table

    path = tmp_path / "labels.csv"
    path.write_text("id,label\na,NA\nb,None\nc,null\nd,nan\ne,\n")
    frame = read_table(path, "labels", text_columns=("id", "label"), only_empty_is_missing=True)
    assert frame is not None
    task = ModelTask(["NA", "None", "null", "nan", "yes"])
    with pytest.raises(ModelmonError, match=r"1 of 5 rows are bad.*\n  row 5: empty label"):
        feedback_items(frame["id"], frame["label"], task, "labels.csv")
    items = feedback_items(frame["id"][:4], frame["label"][:4], task, "labels.csv")
    assert [i["label"] for i in items] == ["NA", "None", "null", "nan"]
