"""What the checks share: request bodies built from data, metric reading, tolerances."""

from __future__ import annotations

from collections import Counter
from typing import Any

import httpx
import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families

from modelmon.registry import ModelCard

#: Agreement between a runtime and its framework when the same model answers both.
EXACT = 1e-5


def tolerance(card: ModelCard) -> float:
    """How closely the served probabilities must equal the framework's: 1e-5, or for a
    model served as the ONNX graph converted at registration, what the card records the
    conversion agreed to on the registration data (the validation rows)."""
    if card.serving_artifact is None:
        return EXACT
    assert card.onnx_check is not None and card.onnx_check.used, card.onnx_check
    return max(EXACT, card.onnx_check.max_abs_difference or 0.0)


def decided_rows(expected: np.ndarray, atol: float) -> np.ndarray:
    """Rows whose top class cannot change within ``atol`` of each probability: there the
    predicted class must be the framework's."""
    top2 = np.sort(expected, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) > 2 * atol


def assert_labels_agree(labels: list[Any], probabilities: np.ndarray, expected: np.ndarray,
                        classes: list[Any], atol: float) -> None:
    """Each label is the class of its row's highest returned probability, and the
    framework's own choice wherever that choice is clear."""
    assert labels == [classes[i] for i in probabilities.argmax(axis=1)]
    decided = decided_rows(expected, atol)
    assert decided.mean() > 0.9, "the case's data leave too many near-ties to check labels on"
    framework = [classes[i] for i in expected.argmax(axis=1)]
    mismatched = [i for i in np.flatnonzero(decided) if labels[i] != framework[i]]
    assert not mismatched, f"rows {mismatched[:10]}: labels differ from the framework's"


# -- Open Inference Protocol bodies from a frame ----------------------------------------


def v2_datatype(column: pd.Series) -> str:
    """The V2 datatype a client sends a column as: FP64, INT64 or BYTES."""
    kind = column.dtype.kind
    if kind in "iu":
        return "INT64"
    if kind == "f":
        return "FP64"
    if kind == "b":
        return "BOOL"
    return "BYTES"


def v2_inputs(frame: pd.DataFrame, features: list[str]) -> list[dict[str, Any]]:
    """One input per feature, typed by the data."""
    return [
        {"name": name, "shape": [len(frame)], "datatype": v2_datatype(frame[name]),
         "data": frame[name].tolist()}
        for name in features
    ]


def records(frame: pd.DataFrame, features: list[str]) -> list[dict[str, Any]]:
    return frame[features].to_dict("records")


# -- /metrics -----------------------------------------------------------------------------


class Scrape:
    """One read of ``/metrics``, parsed one model at a time. The server of every case exposes
    7,594 samples (768 kB) when idle, and the checks read a few of one model's: parsing them
    all took 0.27-0.45 s of CPU per scrape, one model's lines 0.01-0.03 s, and the suite
    scrapes about 450 times (the values were the same for each of the 21 models, measured)."""

    def __init__(self, url: str) -> None:
        response = httpx.get(f"{url}/metrics", timeout=30)
        response.raise_for_status()
        self.text = response.text
        self._by_model: dict[str, list[Any]] = {}

    def samples(self, model: str) -> list[Any]:
        """The samples of the lines naming ``model`` in a label (a superset of its samples:
        ``values`` checks the ``model`` label itself), parsed as a whole scrape would parse them."""
        if model not in self._by_model:
            marker = f'="{model}"'
            lines = [line for line in self.text.splitlines() if marker in line and not line.startswith("#")]
            self._by_model[model] = [s for f in text_string_to_metric_families("\n".join(lines) + "\n") for s in f.samples]
        return self._by_model[model]

    def values(self, name: str, model: str, by: tuple[str, ...] = (), **where: str) -> Counter:
        """Sample values of ``name`` for ``model`` matching ``where``, summed by the labels
        in ``by`` (a key of one label is the label's value, of several a tuple)."""
        out: Counter = Counter()
        for sample in self.samples(model):
            labels = sample.labels
            if sample.name != name or labels.get("model") != model:
                continue
            if any(labels.get(k) != v for k, v in where.items()):
                continue
            key = tuple(labels.get(k) for k in by)
            out[key[0] if len(key) == 1 else key] += sample.value
        return out

    def total(self, name: str, model: str, **where: str) -> float:
        return float(sum(self.values(name, model, **where).values()))


def increase(after: Counter, before: Counter) -> Counter:
    """Per-key growth of a counter between two scrapes (keys that did not grow left out)."""
    return Counter({k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)})
