"""The Keras 3 rows of the conformance table: tiny models trained for a few epochs.

Keras runs on the CPU build of torch here (``KERAS_BACKEND=torch``, set before Keras is
first imported). The reference each row is held to is Keras' own ``model.predict``; a
sigmoid unit's ``p`` is the second class's probability, ``1 - p`` the first's.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.conformance.cases import Built, numeric_data, shop_data, split

os.environ["KERAS_BACKEND"] = "torch"  # before Keras is first imported

EPOCHS = 20


def keras_for_tests() -> Any:
    """Keras, with torch on one thread: a tiny model only loses to threads contending for
    the machine's few cores (several times slower on a busy two-core runner)."""
    import keras
    import torch

    torch.set_num_threads(1)
    return keras


def keras_writer(model: Any) -> Any:
    def write(directory: Path) -> Path:
        path = directory / "model.keras"
        model.save(path)
        return path

    return write


def keras_binary() -> Built:
    """One ``[N, 5]`` float input (four floats and an integer count, standardized inside the
    model), a hidden layer and one sigmoid unit; classes 0 and 1."""
    import keras

    train, validation = split(numeric_data(7), drop=("spend",))
    features = [c for c in train.columns if c != "churned"]
    X = train[features].to_numpy(np.float32)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((len(features),), name="features")
    x = keras.layers.Normalization(mean=X.mean(axis=0), variance=X.var(axis=0))(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="binary_crossentropy")
    model.fit(X, train.churned.to_numpy(), epochs=EPOCHS, batch_size=32, verbose=0)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        p = model.predict(frame[features].to_numpy(np.float32), verbose=0).astype(np.float64).reshape(-1)
        return np.column_stack([1 - p, p])

    return Built(
        model=model, write=keras_writer(model), train=train, validation=validation,
        target="churned", classes=[0, 1], predict=predict,
    )


def keras_multiclass() -> Built:
    """One input per feature: ``amount`` (float32), ``items`` (int32) and two text features
    as integer codes through modelmon's ``TextLevels`` layer; a softmax over the three
    string classes in sorted order (bronze, gold, silver)."""
    from modelmon.runtimes.keras import TextLevels

    keras = keras_for_tests()
    train, validation = split(shop_data(8))
    classes = sorted(train.segment.unique())
    levels = {name: TextLevels(sorted(train[name].unique()), name=f"{name}_levels") for name in ("channel", "region")}

    def inputs_of(frame: pd.DataFrame) -> dict[str, np.ndarray]:
        return {
            "amount": frame[["amount"]].to_numpy(np.float32),
            "items": frame[["items"]].to_numpy(np.int32),
            **{name: layer.encode(frame[name]) for name, layer in levels.items()},
        }

    keras.utils.set_random_seed(0)
    amount = keras.Input((1,), name="amount")
    items = keras.Input((1,), name="items", dtype="int32")
    text = {name: keras.Input((1,), name=name, dtype="int32") for name in levels}
    scaled_amount = keras.layers.Normalization(mean=train.amount.mean(), variance=train.amount.var())(amount)
    scaled_items = keras.layers.Normalization(mean=train["items"].mean(), variance=train["items"].var())(
        keras.ops.cast(items, "float32")
    )
    x = keras.layers.Concatenate()([scaled_amount, scaled_items, *(levels[n](t) for n, t in text.items())])
    x = keras.layers.Dense(16, activation="relu")(x)
    model = keras.Model([amount, items, *text.values()], keras.layers.Dense(3, activation="softmax")(x))
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    y = train.segment.map({c: i for i, c in enumerate(classes)}).to_numpy()
    model.fit(inputs_of(train), y, epochs=EPOCHS, batch_size=32, verbose=0)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return model.predict(inputs_of(frame), verbose=0).astype(np.float64)

    return Built(
        model=model, write=keras_writer(model), train=train, validation=validation,
        target="segment", classes=classes, predict=predict,
    )


def keras_regression() -> Built:
    """One ``[N, 5]`` float input, a hidden layer and one linear unit trained on a number
    (mean squared error): a regressor, told from a binary logit by its target."""
    import keras

    train, validation = split(numeric_data(11), drop=("churned",))
    features = [c for c in train.columns if c != "spend"]
    X = train[features].to_numpy(np.float32)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((len(features),), name="features")
    x = keras.layers.Normalization(mean=X.mean(axis=0), variance=X.var(axis=0))(inputs)
    x = keras.layers.Dense(8, activation="relu")(x)
    model = keras.Model(inputs, keras.layers.Dense(1)(x))
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    model.fit(X, train.spend.to_numpy(np.float32), epochs=EPOCHS, batch_size=32, verbose=0)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return model.predict(frame[features].to_numpy(np.float32), verbose=0).astype(np.float64).reshape(-1)

    return Built(
        model=model, write=keras_writer(model), train=train, validation=validation,
        target="spend", classes=[], predict=predict,
    )
