"""``modelmon demo --model keras``: the churn model as a small Keras 3 network.

The same customers, registration, serving and monitoring as the default demo; only the
model differs. It is trained epoch by epoch with modelmon's Keras callback: each epoch's
loss, accuracy, precision, recall and F1 for the training and validation data go to the run
store and, while the run is live, to Prometheus (the run's gauges are served on a port of
this process that the demo's Prometheus scrapes). The network takes the customer table
as it is: one input per column, numbers standardized inside the model, text columns as
codes through ``TextLevels``, which records their levels so that the served model takes
the text itself.

Keras runs on the backend ``KERAS_BACKEND`` names (else ``~/.keras/keras.json``). When
neither names one and TensorFlow (Keras' default) is not installed but torch is, the demo
uses torch and says so.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from modelmon import ModelCard, register_model
from modelmon.demo.data import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TARGET, generate_customers
from modelmon.stack.prometheus import Prometheus
from modelmon.tracking import Run, start_run
from modelmon.tracking.records import metric_frame

EXPERIMENT = "churn-keras-demo"
EPOCHS = 8
BATCH_SIZE = 256
LEARNING_RATE = 0.02
HIDDEN_UNITS = 16
#: The positive class last: the sigmoid unit is P("yes"), and modelmon's classes are sorted.
LABELS = ["no", "yes"]
#: Seconds to wait for Prometheus to scrape the run's last epoch.
LIVE_TIMEOUT = 10.0


def prepare_keras() -> tuple[Any, str]:
    """Keras (imported, which takes seconds) and a note on its backend for the output."""
    backend_note = choose_backend()
    from modelmon.runtimes.keras import keras_module

    keras = keras_module()  # says which extra or backend is missing
    if keras.backend.backend() == "torch":
        import torch

        # A network this small trains faster on one thread than with threads contending
        # for the cores (several times faster on a busy two-core machine).
        torch.set_num_threads(1)
    return keras, backend_note


def train_and_register_keras(
    registry_dir: Path,
    console: Console,
    model_name: str,
    train_rows: int,
    validation_rows: int,
    prometheus: Prometheus | None = None,
    live_port: int | None = None,
    prepared: tuple[Any, str] | None = None,
) -> ModelCard:
    """Train the network in a tracked run (live on ``live_port`` when given), register it
    from that run and return its card. ``prepared``: what ``prepare_keras`` returned."""
    keras, backend_note = prepared or prepare_keras()
    from modelmon.tracking.keras import ModelmonCallback

    train = generate_customers(train_rows, seed=1)
    validation = generate_customers(validation_rows, seed=2)
    model = build_model(keras, train)
    console.print(
        f"[bold]1. Train[/bold]     a Keras {keras.__version__} network ({keras.backend.backend()} backend"
        f"{backend_note}) on {len(train):,} synthetic customers ({train[TARGET].eq('yes').mean():.0%} churned), "
        f"{EPOCHS} epochs, tracked in a run"
    )
    store = registry_dir.parent / "modelmon.db"
    params = {"model": "keras", "epochs": EPOCHS, "batch_size": BATCH_SIZE, "hidden_units": HIDDEN_UNITS,
              "learning_rate": LEARNING_RATE, "train_rows": len(train)}
    X, y = model_inputs(model, train), labels_of(train)
    X_val, y_val = model_inputs(model, validation), labels_of(validation)
    with start_run(EXPERIMENT, params=params, tags={"source": "modelmon demo --model keras"}, store=store,
                   live_port=live_port) as run:
        with Progress(TextColumn("    training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
                      console=console) as progress:
            task = progress.add_task("", total=EPOCHS)
            callbacks = [
                ModelmonCallback(run, (X_val, y_val), labels=LABELS, batch_size=1024),
                epoch_progress(keras, lambda epoch, f1: progress.update(
                    task, completed=epoch, description=f"validation F1 {f1:.3f}")),
            ]
            model.fit(X, y, validation_data=(X_val, y_val), epochs=EPOCHS, batch_size=BATCH_SIZE,
                      callbacks=callbacks, verbose=0)
        print_epochs(console, run)
        if prometheus is not None and live_port is not None:
            print_live(console, prometheus, run)
        card = register_model(model, name=model_name, reference=train, target=TARGET, validation=validation,
                              registry=registry_dir, run=run)
    baseline = card.baseline or {}
    console.print(f"[bold]2. Register[/bold]  {card.name} version {card.version} in {registry_dir}, from run {run.id}")
    console.print(
        f"             validation accuracy {baseline.get('accuracy', float('nan')):.3f}, "
        f"macro F1 {baseline.get('f1_macro', float('nan')):.3f}"
    )
    console.print(f"             {serving_runtime(card)}", soft_wrap=True)
    return card


def choose_backend() -> str:
    """Leave Keras' backend to the user's configuration (``KERAS_BACKEND``, else the one
    ``keras.json`` names, else TensorFlow); only when that backend is not installed and
    torch is, use torch. Returns a note for the output when the demo chose."""
    if "keras" in sys.modules or os.environ.get("KERAS_BACKEND"):
        return ""
    configured = "tensorflow"
    config = Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "keras.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        configured = str(json.loads(config.read_text()).get("backend", configured))
    if importlib.util.find_spec(configured) is not None or importlib.util.find_spec("torch") is None:
        return ""
    os.environ["KERAS_BACKEND"] = "torch"
    return f", chosen by the demo as {configured} is not installed; set KERAS_BACKEND to choose"


def build_model(keras: Any, train: pd.DataFrame) -> Any:
    """One input per customer column: numbers standardized with the training data's mean and
    variance, text through TextLevels; one hidden layer; one sigmoid unit, P(churn)."""
    from modelmon.runtimes.keras import TextLevels

    keras.utils.set_random_seed(0)
    inputs, encoded = [], []
    for name in train.columns:
        if name == TARGET:
            continue
        if name in CATEGORICAL_FEATURES:
            column = keras.Input((1,), name=name, dtype="int32")
            levels = sorted(str(v) for v in train[name].dropna().unique())
            encoded.append(TextLevels(levels, name=f"{name}_levels")(column))
        elif name in NUMERIC_FEATURES:
            column = keras.Input((1,), name=name, dtype="float32")
            values = train[name].to_numpy(np.float64)
            encoded.append(keras.layers.Normalization(mean=values.mean(), variance=values.var(),
                                                      name=f"{name}_scaled")(column))
        else:
            continue
        inputs.append(column)
    x = keras.layers.Concatenate(name="features")(encoded)
    x = keras.layers.Dense(HIDDEN_UNITS, activation="relu", name="hidden")(x)
    output = keras.layers.Dense(1, activation="sigmoid", name="churn_probability")(x)
    model = keras.Model(inputs, output, name="churn")
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss="binary_crossentropy",
        metrics=[
            "accuracy",
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
            keras.metrics.F1Score(average="micro", threshold=0.5, name="f1"),
        ],
    )
    return model


def model_inputs(model: Any, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The frame as the network's inputs: floats, and text as its levels' codes."""
    from modelmon.runtimes.keras import encode_levels, text_levels

    levels = text_levels(model)
    feeds = {}
    for tensor in model.inputs:
        name = tensor.name
        if name in levels:
            feeds[name] = encode_levels(frame[name].to_numpy(dtype=object), levels[name])
        else:
            feeds[name] = frame[[name]].to_numpy(np.float32)
    return feeds


def labels_of(frame: pd.DataFrame) -> np.ndarray:
    return frame[TARGET].eq(LABELS[1]).to_numpy(np.float32).reshape(-1, 1)


def epoch_progress(keras: Any, report: Callable[[int, float], Any]) -> Any:
    """A Keras callback calling ``report(epoch, validation F1)`` after each epoch."""
    base: Any = keras.callbacks.Callback

    class EpochProgress(base):
        def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
            report(epoch + 1, float((logs or {}).get("val_f1", float("nan"))))

    return EpochProgress()


def print_epochs(console: Console, run: Run) -> None:
    """The run's per-epoch curves, read back from the run store."""
    run.flush()
    metrics = ["loss", "accuracy", "precision", "recall", "f1"]
    frame = metric_frame(run.store, [run.id], metrics=metrics)
    table = Table(title=f"Run {run.id}: per-epoch metrics from the run store", title_justify="left")
    table.add_column("epoch", justify="right")
    columns = [(split, metric) for split in ("train", "validation") for metric in metrics]
    short = {"train": "train", "validation": "val", "loss": "loss", "accuracy": "acc", "precision": "prec",
             "recall": "rec", "f1": "F1"}
    for split, metric in columns:
        table.add_column(f"{short[split]} {short[metric]}", justify="right")
    values = {
        (str(split), str(metric), int(step)): float(value)
        for split, metric, step, value in zip(frame["split"], frame["metric"], frame["step"], frame["value"], strict=True)
    }
    for step in sorted({step for _, _, step in values}):
        table.add_row(str(step), *[f"{values.get((split, metric, step), float('nan')):.3f}" for split, metric in columns])
    console.print(table)


def print_live(console: Console, prometheus: Prometheus, run: Run) -> None:
    """What Prometheus scraped of the live run (its series go when the run ends)."""
    selector = f'experiment="{EXPERIMENT}", run="{run.id}"'
    epoch = prometheus.wait_for(f"max(modelmon_training_epoch{{{selector}}})", EPOCHS, timeout=LIVE_TIMEOUT)
    promql = f'modelmon_training_metric{{{selector}, split="validation", metric="f1"}}'
    f1 = prometheus.scalar(promql)
    if epoch is None or f1 is None:
        console.print("    live        Prometheus had not scraped the run's gauges yet")
        return
    console.print(f"    live        Prometheus scraped the run at epoch {epoch:.0f}: validation F1 {f1:.3f}")
    console.print(f"                {promql}", style="dim cyan", soft_wrap=True)


def serving_runtime(card: ModelCard) -> str:
    check = card.onnx_check
    if card.runtime == "onnx" and check is not None and check.max_abs_difference is not None:
        return (f"served with ONNX Runtime (the graph Keras exported matches Keras within "
                f"{check.max_abs_difference:.0e})")
    reason = f": {check.reason}" if check is not None and check.reason else ""
    return f"served with Keras itself{reason}"
