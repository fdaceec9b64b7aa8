"""A file of labels for ``modelmon feedback``, checked cell by cell before anything is sent.

The model's task decides what a label is (from the server's model metadata): a classifier's
is one of its classes, sent as text; a regressor's is a finite number, sent as a JSON number
(a CSV cell is text, so ``"12"`` reads as 12, as the same column's ``abc`` does not). Rows
are named 1-based, the header not counted (in a CSV, row N is line N + 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from modelmon.errors import ModelmonError
from modelmon.serving.feedback import shown

#: Bad rows listed in one error; the rest are counted.
SHOWN_ERRORS = 20


@dataclass(frozen=True)
class ModelTask:
    """What the server says the model is: its classes, or none for a regressor."""

    classes: list[str]

    @property
    def regressor(self) -> bool:
        return not self.classes

    @classmethod
    def from_metadata(cls, model: str, metadata: dict[str, Any]) -> ModelTask:
        outputs = {o.get("name"): o for o in metadata.get("outputs", []) if isinstance(o, dict)}
        if "probabilities" in outputs:
            return cls([str(c) for c in outputs["probabilities"].get("parameters", {}).get("classes", [])])
        if "prediction" in outputs:
            return cls([])
        raise ModelmonError(f"model {model!r}: its metadata has neither a classifier's nor a regressor's outputs ({sorted(map(str, outputs))})")


def feedback_items(ids: pd.Series, labels: pd.Series, task: ModelTask, source: str) -> list[dict[str, Any]]:
    """The ``{"id", "label"}`` items of a file's rows; raises naming every bad row (the first
    ``SHOWN_ERRORS`` of them) when any row is bad, so that nothing of the file is sent."""
    items, errors = [], []
    for row, (prediction_id, label) in enumerate(zip(ids.tolist(), labels.tolist(), strict=True), start=1):
        problem = None
        id_text = "" if _empty(prediction_id) else str(prediction_id).strip()
        if not id_text:
            problem = "empty id"
        else:
            value, problem = (_number if task.regressor else _class)(label, task.classes)
        if problem is not None:
            errors.append(f"row {row}: {problem}")
        else:
            items.append({"id": id_text, "label": value})
    if errors:
        listed = "\n  ".join(errors[:SHOWN_ERRORS])
        more = f"\n  ... and {len(errors) - SHOWN_ERRORS} more" if len(errors) > SHOWN_ERRORS else ""
        raise ModelmonError(
            f"{source}: {len(errors)} of {len(items) + len(errors)} rows are bad (rows are 1-based, the header not "
            f"counted: in a CSV, row N is line N+1); nothing was sent:\n  {listed}{more}"
        )
    return items


def _empty(value: Any) -> bool:
    return value is None or (not isinstance(value, str) and bool(pd.isna(value)))


def _number(label: Any, classes: list[str]) -> tuple[float | None, str | None]:
    """A regressor's label: a finite number, or text that reads as one."""
    if _empty(label) or (isinstance(label, str) and not label.strip()):
        return None, "empty label"
    if isinstance(label, bool) or not isinstance(label, (str, int, float)):
        return None, f"label {shown(label)} is not a number (the model is a regressor)"
    try:
        value = float(label)
    except ValueError:
        return None, f"label {shown(label)} is not a number (the model is a regressor)"
    except OverflowError:  # an integer beyond the largest float
        value = math.inf
    if not math.isfinite(value):
        return None, f"label {shown(label)} is not a finite number"
    return value, None


def _class(label: Any, classes: list[str]) -> tuple[str | None, str | None]:
    """A classifier's label, as text: one of its classes (a whole float as its integer, as
    the server reads it: 1.0 is class "1")."""
    if _empty(label) or (isinstance(label, str) and not label.strip() and "" not in classes):
        return None, "empty label"
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    text = str(label)
    if classes and text not in classes:
        whole = _whole_number(text)  # "1.0" in a CSV written from a float column: class "1"
        if whole is None or whole not in classes:
            return None, f"label {shown(text)} is not one of the model's classes {classes}"
        text = whole
    return text, None


def _whole_number(text: str) -> str | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else None
