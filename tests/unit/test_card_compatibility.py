"""``model.json`` files written by modelmon 0.1 before runtimes and tasks existed (no
``task`` in the signature; ``flavor`` from a closed list) still load, serve and are
monitored. The registry under data/registry-0.1 was written by that version's
``register_model`` (commit d0a28ec) and is kept as it wrote it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import skops.io

from modelmon.monitoring.metrics import ServerMetrics
from modelmon.monitoring.monitor import VersionMonitor
from modelmon.registry import Registry
from modelmon.types import FeatureBatch, Task

DATA = Path(__file__).parent / "data" / "registry-0.1"


def test_a_card_written_before_tasks_loads_as_a_classifier():
    written = json.loads((DATA / "legacy" / "1" / "model.json").read_text())
    assert "task" not in written["signature"] and written["flavor"] == "sklearn"
    card = Registry(DATA).card("legacy")
    assert card.flavor == "sklearn" and card.runtime == "sklearn"
    assert card.signature.task is Task.BINARY and card.signature.classes == ["no", "yes"]


def test_it_serves_what_the_saved_model_answers_and_is_monitored():
    registry = Registry(DATA)
    card = registry.card("legacy")
    frame = pd.read_csv(DATA / "legacy-frame.csv")
    batch = FeatureBatch.from_frame(frame, card.signature)
    output = registry.load_predictor(card).predict(batch)
    # The framework's own answer: the artifact loaded by skops, not through modelmon.
    path = registry.version_dir("legacy", 1) / card.artifact.path
    model = skops.io.load(path, trusted=card.artifact.trusted_types or None)
    np.testing.assert_allclose(output.probabilities, model.predict_proba(frame[["amount", "channel"]]), atol=1e-12)

    server = ServerMetrics()
    monitor = VersionMonitor(server, model="legacy", version="1", flavor=card.flavor, signature=card.signature,
                             profile=card.reference_profile, calibration=card.calibration)
    monitor.observe(batch, 0.001, output, [0.0])
    text = server.render().decode()
    predicted = np.bincount(output.predicted, minlength=2)
    for index, label in enumerate(["no", "yes"]):
        assert f'modelmon_predictions_total{{model="legacy",version="1",class="{label}"}} {float(predicted[index])!r}' in text
