"""RecentPredictions (a ring indexed by id counter) against a plain dict of the last N ids."""

from __future__ import annotations

import numpy as np
import pytest

from modelmon.serving.recent import PredictionRecord, RecentPredictions


def test_matches_a_dict_of_the_last_capacity_predictions() -> None:
    rng = np.random.default_rng(7)
    recent = RecentPredictions(50, "abc")
    sources = [recent.source("m", 1, ["no", "yes"]), recent.source("m", 2, ["a", "b", "c"]), recent.source("other", 1, ["x", "y"])]
    assert sources == [0, 1, 2]
    assert recent.source("m", 2, ["a", "b", "c"]) == 1  # the same handle again
    classes = {0: ("m", 1, ["no", "yes"]), 1: ("m", 2, ["a", "b", "c"]), 2: ("other", 1, ["x", "y"])}
    reference: dict[str, PredictionRecord] = {}
    order: list[str] = []
    counter = 1
    for step in range(300):
        source = int(rng.integers(3))
        n = int(rng.integers(1, 80))  # sometimes more than the capacity at once
        predicted = rng.integers(len(classes[source][2]), size=n)
        at = 1000.0 + step
        recent.add(source, counter, predicted, at)
        model, version, labels = classes[source]
        for k in range(n):
            pid = f"abc-{counter + k}"
            reference[pid] = PredictionRecord(model, version, labels[predicted[k]], at)
            order.append(pid)
        counter += n
    kept = set(order[-50:])
    for pid in order:
        assert recent.get(pid) == (reference[pid] if pid in kept else None), pid
    assert len(recent) == 50


def test_ids_it_never_made_are_not_found() -> None:
    recent = RecentPredictions(10, "abc")
    source = recent.source("m", 1, ["0", "1"])
    recent.add(source, 1, np.array([1, 0, 1]), 5.0)
    assert recent.get("abc-2") == PredictionRecord("m", 1, "0", 5.0)
    for unknown in ("abc-4", "abc-0", "xyz-2", "abc-12", "abc--1", "abc-x", "2", "", "abc-"):
        assert recent.get(unknown) is None, unknown


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        RecentPredictions(0, "abc")
