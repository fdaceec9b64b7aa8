"""Prediction events as CloudEvents 1.0, structured mode (one JSON object per event), from the
prediction log's journal lines."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

EVENT_TYPE = "io.modelmon.prediction.v1"
CONTENT_TYPE = "application/cloudevents+json"


def journal_rows(line: bytes) -> Iterator[dict[str, Any]]:
    """The predictions of one journal line (every format the journal has had), in order."""
    chunk = orjson.loads(line)
    if type(chunk) is dict:  # one request per line, the first format
        chunk = [chunk["m"], chunk["v"], chunk["t"], chunk["ids"], chunk["y"], chunk["p"], chunk.get("f")]
    if len(chunk) == 8:
        model, version, t, id_prefix, first_id, labels, probabilities, features = chunk
        ids = [f"{id_prefix}-{i}" for i in range(first_id, first_id + len(labels))]
    else:
        model, version, t, ids, labels, probabilities, features = chunk
    for i, prediction_id in enumerate(ids):
        yield {
            "id": prediction_id, "model": model, "version": int(version), "time": t,
            "output": {"label": str(labels[i]), "probabilities": probabilities[i] if probabilities is not None else None},
            "features": features[i] if features is not None else None,
        }


def cloud_event(row: dict[str, Any], source: str) -> tuple[str, bytes]:
    """(id, the event's JSON). ``id`` is the prediction id: a consumer that sees it twice
    (at-least-once delivery) knows it is the same prediction."""
    at = datetime.fromtimestamp(row["time"], UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    event = {
        "specversion": "1.0", "id": row["id"], "source": source, "type": EVENT_TYPE, "time": at,
        "subject": f"{row['model']}/{row['version']}", "datacontenttype": "application/json",
        "data": {**row, "time": at},
    }
    return row["id"], orjson.dumps(event)


def segment_events(data: bytes, source: str) -> list[tuple[str, bytes]]:
    """Every event of a journal segment, in order; a line cut short by a crash is skipped
    (the writer skips it too: it never reached the store)."""
    events: list[tuple[str, bytes]] = []
    for line in data.splitlines():
        try:
            rows = list(journal_rows(line))
        except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, IndexError):
            continue
        events.extend(cloud_event(row, source) for row in rows)
    return events
