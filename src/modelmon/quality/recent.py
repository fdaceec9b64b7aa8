"""Recent predictions kept in memory, so a label arriving soon after its prediction joins
without a store query (and even before the prediction log has written it)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class PredictionRecord:
    model: str
    version: int
    predicted: str  # the predicted class label, as text
    predicted_at: float  # unix seconds


class RecentPredictions:
    """The last ``capacity`` predictions by id; written and read on the event loop only."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._records: OrderedDict[str, PredictionRecord] = OrderedDict()

    def add(self, model: str, version: int, ids: list[str], labels: list[str], at: float) -> None:
        records = self._records
        for prediction_id, label in zip(ids, labels, strict=True):
            records[prediction_id] = PredictionRecord(model, version, label, at)
        while len(records) > self.capacity:
            records.popitem(last=False)

    def get(self, prediction_id: str) -> PredictionRecord | None:
        return self._records.get(prediction_id)

    def __len__(self) -> int:
        return len(self._records)
