"""Ground-truth labels: joined to their predictions by id, recorded once, counted once.

A label is joined to its prediction from memory when the prediction is recent, else from
the store (so labels arriving after a restart, or at another replica, still count). The
insert is ``ON CONFLICT DO NOTHING ... RETURNING``: the store decides which labels are new,
atomically, so a label sent twice (even to two replicas at once) is counted once, and the
second is reported as a duplicate: the first label for an id wins, also within one request.

A classifier's label is one of its classes; a regressor's (a model without classes) is a
finite number, stored as the text ``repr`` writes (which reads back as the same float), and
counted into the version's label sums (``monitoring.tasks.RegressionLabels``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn

import numpy as np
from sqlalchemy import select

from modelmon.errors import InvalidInputError, MalformedRequestError, StoreUnavailableError
from modelmon.monitoring.metrics import QualityMetrics
from modelmon.serving.recent import PredictionRecord, RecentPredictions
from modelmon.store import Store
from modelmon.store.predictions import insert_ignoring_duplicates, labels, predictions

MAX_LABELS_PER_REQUEST = 10_000


@dataclass
class FeedbackResult:
    matched: list[str] = field(default_factory=list)
    duplicate: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)

    def as_response(self) -> dict[str, Any]:
        return {
            "matched": len(self.matched),
            "duplicate": len(self.duplicate),
            "unknown": len(self.unknown),
            "duplicate_ids": self.duplicate,
            "unknown_ids": self.unknown,
        }


def label_shape(classes: list[str]) -> str:
    """One feedback item as the model's task expects it, for error messages."""
    return '{"id": "<prediction id>", "label": ' + ("<class>}" if classes else "<number>}")


def _task(classes: list[str]) -> str:
    return "classifier" if classes else "regressor"


def shown(value: Any) -> str:
    """``value`` for an error message, cut to 80 characters (a label may be a megabyte of text)."""
    text = repr(value)
    return text if len(text) <= 80 else f"{text[:60]}... ({len(text)} characters)"


def parse_feedback(payload: Any, classes: list[str]) -> list[tuple[str, str]]:
    """``{"labels": [{"id": ..., "label": ...}, ...]}`` (or the bare list) as (id, label)
    pairs, labels as text; any invalid item rejects the request, naming it and the key. No
    ``classes``: a regressor's labels, finite numbers."""
    items = payload.get("labels") if isinstance(payload, dict) else payload
    if not isinstance(items, list) or not items:
        raise MalformedRequestError(f"expected {{\"labels\": [{label_shape(classes)}, ...]}} (the model is a {_task(classes)})")
    if len(items) > MAX_LABELS_PER_REQUEST:
        raise InvalidInputError(f"{len(items)} labels in one request; the limit is {MAX_LABELS_PER_REQUEST}", reason="wrong_shape")
    known = set(classes)
    pairs = []
    for i, item in enumerate(items):
        prediction_id = item.get("id") if isinstance(item, dict) else None
        if (type(prediction_id) is not str or "label" not in item or not prediction_id or "\x00" in prediction_id
                or not (prediction_id.isascii() or _utf8(prediction_id))):
            _bad_item(i, item, classes)
        label = item["label"]
        if not classes:
            pairs.append((prediction_id, numeric_label(i, prediction_id, label)))
            continue
        if isinstance(label, bool) or not isinstance(label, (str, int, float)):
            raise InvalidInputError(f"labels[{i}] (id {shown(prediction_id)}): label {shown(label)} is not a class", reason="invalid_label")
        text = str(int(label)) if isinstance(label, float) and label.is_integer() else str(label)
        if text not in known:
            raise InvalidInputError(
                f"labels[{i}] (id {shown(prediction_id)}): label {shown(label)} is not one of the model's classes {classes}",
                reason="invalid_label",
            )
        pairs.append((prediction_id, text))
    return pairs


def _bad_item(index: int, item: Any, classes: list[str]) -> NoReturn:
    """Why ``items[index]`` is not a feedback item, naming the key."""
    expected = f"expected {label_shape(classes)}, the model is a {_task(classes)}"
    if not isinstance(item, dict):
        raise MalformedRequestError(f"labels[{index}] is {shown(item)}, not an object ({expected})")
    for key in ("id", "label"):
        if key not in item:
            raise MalformedRequestError(f'labels[{index}]: missing "{key}" ({expected})')
    prediction_id = item["id"]
    if not isinstance(prediction_id, str):
        raise MalformedRequestError(f"labels[{index}].id must be a string (the prediction's id), not {shown(prediction_id)}")
    # None of these can be a prediction's id. PostgreSQL refuses NUL in text and a lone
    # surrogate (JSON "\\ud800") cannot be encoded: the lookup would fail as a store error
    # (503) or the response as a 500, instead of naming the item.
    problem = "is empty" if not prediction_id else "holds a NUL character" if "\x00" in prediction_id else "is not valid Unicode (a lone surrogate)"
    raise MalformedRequestError(f"labels[{index}].id {shown(prediction_id)} {problem}: not a prediction id")


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def numeric_label(index: int, prediction_id: str, label: Any) -> str:
    """A regressor's true value as text (``repr``: it reads back as the same float)."""
    if isinstance(label, bool) or not isinstance(label, (int, float)):
        raise InvalidInputError(
            f"labels[{index}] (id {shown(prediction_id)}): label {shown(label)} is not a number (the model is a regressor)",
            reason="invalid_label",
        )
    try:
        value = float(label)
    except OverflowError:  # an integer beyond the largest float (JSON integers are exact, unbounded)
        value = math.inf
    if not math.isfinite(value):
        raise InvalidInputError(
            f"labels[{index}] (id {shown(prediction_id)}): label {shown(label)} is not a finite number", reason="invalid_label"
        )
    return repr(value)


class FeedbackJoiner:
    """Joins and records labels for one server; store work runs in a worker thread."""

    def __init__(self, store: Store, recent: RecentPredictions | None) -> None:
        self.store = store
        self.recent = recent

    def lookup_recent(self, model: str, ids: list[str]) -> dict[str, PredictionRecord]:
        """On the event loop: the predictions still in memory."""
        if self.recent is None:
            return {}
        found = {}
        for prediction_id in ids:
            record = self.recent.get(prediction_id)
            if record is not None and record.model == model:
                found[prediction_id] = record
        return found

    def record(
        self, model: str, pairs: list[tuple[str, str]], known: dict[str, PredictionRecord]
    ) -> tuple[FeedbackResult, dict[str, tuple[PredictionRecord, str]]]:
        """In a worker thread: look the rest up in the store and insert the new labels.
        Returns the outcome and, for each newly matched id, its prediction and label."""
        # The first label sent for an id wins, within a request as across requests (where the
        # store keeps the first): a later one in the same request is a duplicate, not stored.
        first: dict[str, str] = {}
        repeats = []
        for prediction_id, label in pairs:
            if prediction_id in first:
                repeats.append(prediction_id)
            else:
                first[prediction_id] = label
        missing = [i for i in first if i not in known]
        try:
            with self.store.write() as connection:
                records = dict(known)
                for start in range(0, len(missing), 500):
                    chunk = missing[start : start + 500]
                    rows = connection.execute(
                        select(predictions.c.id, predictions.c.version, predictions.c.predicted_label, predictions.c.predicted_at)
                        .where(predictions.c.id.in_(chunk), predictions.c.model == model)
                    )
                    for row in rows:
                        at = row.predicted_at if row.predicted_at.tzinfo else row.predicted_at.replace(tzinfo=UTC)
                        records[row.id] = PredictionRecord(model, row.version, row.predicted_label, at.timestamp())
                now = datetime.now(UTC)
                values = [
                    {"prediction_id": i, "model": model, "version": records[i].version, "label": first[i], "received_at": now}
                    for i in first
                    if i in records
                ]
                inserted: set[str] = set()
                if values:
                    statement = insert_ignoring_duplicates(labels, self.store.dialect).returning(labels.c.prediction_id)
                    inserted = {row[0] for row in connection.execute(statement, values)}
        except Exception as exc:
            raise StoreUnavailableError(f"the store did not answer ({type(exc).__name__}); nothing was recorded, retry") from exc
        result = FeedbackResult()
        matched: dict[str, tuple[PredictionRecord, str]] = {}
        for prediction_id in first:
            if prediction_id not in records:
                result.unknown.append(prediction_id)
            elif prediction_id in inserted:
                result.matched.append(prediction_id)
                matched[prediction_id] = (records[prediction_id], first[prediction_id])
            else:
                result.duplicate.append(prediction_id)
        result.duplicate.extend(repeats)
        return result, matched


def count_matched(
    matched: dict[str, tuple[PredictionRecord, str]],
    quality_for: Callable[[str, int], tuple[QualityMetrics, list[str]] | None],
    model: str,
) -> None:
    """Add newly matched labels to the confusion cells (a regressor's: the label sums) and
    label delays of their version."""
    now = time.time()
    by_version: dict[int, list[tuple[PredictionRecord, str]]] = {}
    for record, label in matched.values():
        by_version.setdefault(record.version, []).append((record, label))
    for version, items in by_version.items():
        bound = quality_for(model, version)
        if bound is None:
            continue
        quality, classes = bound
        if quality.regression is not None:
            _count_values(quality, items, now)
            continue
        index = {c: i for i, c in enumerate(classes)}
        cells = np.zeros(len(classes) ** 2)
        for record, label in items:
            if record.predicted in index and label in index:
                cells[index[label] * len(classes) + index[record.predicted]] += 1
            quality.label_delay.observe(max(0.0, now - record.predicted_at))
        quality.confusion.add(cells)
        quality.feedback["matched"].inc(len(items))


def _count_values(quality: QualityMetrics, items: list[tuple[PredictionRecord, str]], now: float) -> None:
    """A regressor's matched labels into its sums: predicted minus true, per row."""
    assert quality.regression is not None
    predicted, actual = [], []
    for record, label in items:
        try:
            value = float(record.predicted)
        except ValueError:  # not a regressor's prediction: nothing to subtract from
            continue
        if not math.isfinite(value):  # a NaN prediction has no error; it would poison the sums
            continue
        predicted.append(value)
        actual.append(float(label))
        quality.label_delay.observe(max(0.0, now - record.predicted_at))
    quality.regression.count(np.array(predicted), np.array(actual))
    quality.feedback["matched"].inc(len(items))
