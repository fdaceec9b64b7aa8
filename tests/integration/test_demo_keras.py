"""``modelmon demo --model keras`` end to end, as a user runs it: a real subprocess, server and
Prometheus, with a Keras network trained epoch by epoch in place of the default model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelmon.registry import Registry
from modelmon.stack.processes import free_port
from modelmon.stack.prometheus import prometheus_binary
from modelmon.store import open_store
from modelmon.tracking import records
from tests.integration.test_demo import printed_scores, processes_mentioning, rolled_back_on

EPOCHS = 8


@pytest.mark.slow
def test_keras_demo_trains_registers_serves_and_monitors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "demo", "--model", "keras",
         "--port", str(free_port()), "--requests", "300"],
        env={**os.environ, "MODELMON_HOME": str(home), "COLUMNS": "140", "KERAS_BACKEND": "torch"},
        capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "a Keras 3" in out and "torch backend" in out
    assert "per-epoch metrics from the run store" in out
    assert "What the clients saw" in out
    assert "300 in" in out
    assert "Done in" in out

    # The Keras model is what was registered and served (through its exported graph).
    registry = Registry(home / "registry")
    assert registry.versions("churn") == [1, 2]
    card = registry.card("churn", 1)
    assert card.flavor == "keras"
    assert card.signature.classes == ["no", "yes"]
    assert card.signature.categorical_features  # the text columns are served as text
    assert card.onnx_check is not None
    assert card.runtime == ("onnx" if card.onnx_check.used else "keras")

    # Every epoch's loss, accuracy, precision, recall and F1, for both splits, in the run store.
    frame = records.metric_frame(open_store(str(home / "modelmon.db")), split=None)
    for split in ("train", "validation"):
        logged = frame[frame["split"] == split]
        for metric in ("loss", "accuracy", "precision", "recall", "f1"):
            steps = sorted(logged[logged["metric"] == metric]["step"].tolist())
            assert steps == list(range(1, EPOCHS + 1)), (split, metric, steps)

    # The rollout phase: a scikit-learn candidate beside the Keras version (a rollout compares
    # versions whatever serves them), worse on the drifted customers and rolled back by CBPE
    # before any label arrived: the store's plan and decision.
    assert registry.card("churn", 2).flavor == "sklearn"
    _, evidence = rolled_back_on(home, "churn")
    assert evidence["failed"] == ["estimated_quality"] and evidence["gates"]["estimated_quality"]["low"] > 0
    assert "beside the Keras version" in out and "on estimated_quality: its interval" in out
    printed = printed_scores(out)
    assert printed[1][0] > printed[2][0]

    if prometheus_binary() is not None:
        # The run's gauges were live in Prometheus while it trained.
        assert f"Prometheus scraped the run at epoch {EPOCHS}" in out
        assert "Read back from Prometheus" in out
        assert "partial" not in out
        assert "200: " in out and "400: " in out
    else:
        assert "no Prometheus found" in out
    assert processes_mentioning(str(home)) == []
