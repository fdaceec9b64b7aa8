"""Recent predictions kept in memory, so a label arriving soon after its prediction joins
without a store query (and even before the prediction log has written it).

Kept as a ring of numpy arrays indexed by the prediction id's counter, not as a dict of
records: 100,000 entries cost 1.4 MB instead of about 25 MiB, and no Python object per
prediction, so the garbage collector never scans them (a dict of records kept ~100k
long-lived objects in the oldest generation, and each full collection walked them all on
the event loop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True, frozen=True)
class PredictionRecord:
    model: str
    version: int
    predicted: str  # the predicted class label, or a regressor's value, as text
    predicted_at: float  # unix seconds


class RecentPredictions:
    """The last ``capacity`` predictions made by this process, by id; written and read on
    the event loop only.

    Ids are ``<prefix>-<counter>`` (see ``serving.runtime.PredictionIds``): a prediction's
    counter is its slot, ``counter % capacity``. An id from another process (another prefix)
    or older than the last ``capacity`` predictions is simply not here.
    """

    def __init__(self, capacity: int, prefix: str) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.prefix = prefix
        self._counter = np.zeros(capacity, np.int64)  # 0: empty slot (counters start at 1)
        self._source = np.zeros(capacity, np.int32)  # index into _sources
        # The class index in that source's labels; a regressor's predicted value.
        self._predicted = np.zeros(capacity, np.float64)
        self._at = np.zeros(capacity, np.float64)
        self._sources: list[tuple[str, int, list[str]]] = []  # (model, version, class labels)
        self._source_index: dict[tuple[str, int], int] = {}

    def source(self, model: str, version: int, class_labels: list[str]) -> int:
        """The handle under which ``add`` stores predictions of one model version."""
        key = (model, version)
        if key not in self._source_index:
            self._source_index[key] = len(self._sources)
            self._sources.append((model, version, list(class_labels)))
        return self._source_index[key]

    def add(self, source: int, first_counter: int, predicted: np.ndarray, at: float) -> None:
        """Predictions with counters ``first_counter, first_counter + 1, ...``; ``predicted``
        holds their class indices (a regressor's: the values; its source has no labels)."""
        n = len(predicted)
        if n > self.capacity:  # only the last `capacity` fit
            first_counter += n - self.capacity
            predicted = predicted[-self.capacity :]
            n = self.capacity
        start = first_counter % self.capacity
        if start + n > self.capacity:  # wraps: two stretches
            split = self.capacity - start
            self.add(source, first_counter, predicted[:split], at)
            self.add(source, first_counter + split, predicted[split:], at)
            return
        # One-row requests are the common case: item assignment is several times cheaper.
        stretch = start if n == 1 else slice(start, start + n)
        self._counter[stretch] = first_counter if n == 1 else np.arange(first_counter, first_counter + n)
        self._source[stretch] = source
        self._predicted[stretch] = predicted[0] if n == 1 else predicted
        self._at[stretch] = at

    def get(self, prediction_id: str) -> PredictionRecord | None:
        prefix, _, counter_text = prediction_id.rpartition("-")
        if prefix != self.prefix or not counter_text.isdigit():
            return None
        counter = int(counter_text)
        slot = counter % self.capacity
        if counter == 0 or self._counter[slot] != counter:  # 0 marks an empty slot
            return None
        model, version, class_labels = self._sources[self._source[slot]]
        value = float(self._predicted[slot])
        predicted = class_labels[int(value)] if class_labels else repr(value)
        return PredictionRecord(model, version, predicted, float(self._at[slot]))

    def __len__(self) -> int:
        return int(np.count_nonzero(self._counter))
