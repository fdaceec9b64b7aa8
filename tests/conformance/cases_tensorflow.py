"""The TensorFlow SavedModel rows of the conformance table: three small ``tf.Module`` models
with a serving signature, written with ``tf.saved_model.save``.

No Keras here (Keras runs on torch in this process, see cases_keras.py): the models are
plain TensorFlow, their weights fitted by scikit-learn (cheaper than training in
TensorFlow; what is tested is serving). The reference each row is held to is TensorFlow's
own answer, the serving function called on the frame's columns (its logits through the
softmax the row states; the regressor's values as they are). The Python object registered is what ``tf.saved_model.load``
returns.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tests.conformance.cases import Built, numeric_data, shop_data, split

SIGNATURE = "serving_default"


def tensorflow() -> Any:
    import tensorflow as tf

    return tf


def savedmodel_writer(module: Any, function: Any) -> Any:
    def write(directory: Path) -> Path:
        path = directory / "model"  # a SavedModel is a directory
        tensorflow().saved_model.save(module, str(path), signatures={SIGNATURE: function})
        return path

    return write


def loaded(module: Any, function: Any) -> Any:
    """What ``tf.saved_model.load`` gives for the module: the object a user holds."""
    directory = Path(tempfile.mkdtemp(prefix="conformance-savedmodel-")) / "model"
    return tensorflow().saved_model.load(str(savedmodel_writer(module, function)(directory.parent)))


def tensorflow_binary() -> Built:
    """One ``[N, 5]`` float32 input ``features``, standardized inside the model, logistic
    regression weights and one sigmoid unit ``p`` (output ``[N, 1]``); classes 0 and 1."""
    from sklearn.linear_model import LogisticRegression

    tf = tensorflow()
    train, validation = split(numeric_data(9), drop=("spend",))
    features = [c for c in train.columns if c != "churned"]
    X = train[features].to_numpy(np.float64)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    fitted = LogisticRegression(max_iter=1000).fit((X - mean) / scale, train.churned)

    module = tf.Module()
    module.mean = tf.Variable(mean.astype(np.float32))
    module.scale = tf.Variable(scale.astype(np.float32))
    module.w = tf.Variable(fitted.coef_.T.astype(np.float32))
    module.b = tf.Variable(fitted.intercept_.astype(np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, len(features)], tf.float32, name="features")])
    def serve(x: Any) -> dict[str, Any]:
        return {"p": tf.sigmoid(tf.matmul((x - module.mean) / module.scale, module.w) + module.b)}

    module.serve = serve

    def predict(frame: pd.DataFrame) -> np.ndarray:
        p = serve(tf.constant(frame[features].to_numpy(np.float32)))["p"].numpy().astype(np.float64).reshape(-1)
        return np.column_stack([1 - p, p])

    return Built(
        model=loaded(module, serve), write=savedmodel_writer(module, serve), train=train, validation=validation,
        target="churned", classes=[0, 1], predict=predict,
    )


def tensorflow_multiclass() -> Built:
    """One input per feature: ``amount`` float32 ``[N]``, ``items`` int64 ``[N, 1]``, and the
    two text features as ``tf.string`` ``[N, 1]`` looked up in a ``StaticHashTable`` and
    one-hot encoded inside the model; multinomial logistic regression weights, the output
    the three logits (no softmax: modelmon applies it); string classes in sorted order."""
    from sklearn.linear_model import LogisticRegression

    tf = tensorflow()
    train, validation = split(shop_data(10))
    classes = sorted(train.segment.unique())
    levels = {name: sorted(train[name].unique()) for name in ("channel", "region")}

    def design(frame: pd.DataFrame) -> np.ndarray:
        numeric = [(frame.amount.to_numpy() - 60.0) / 40.0, (frame["items"].to_numpy() - 5.0) / 3.0]
        onehot = [(frame[name].to_numpy()[:, None] == np.array(values)[None, :]) for name, values in levels.items()]
        return np.column_stack([*numeric, *onehot]).astype(np.float64)

    fitted = LogisticRegression(max_iter=2000).fit(design(train), train.segment)
    assert fitted.classes_.tolist() == classes

    module = tf.Module()
    module.w = tf.Variable(fitted.coef_.T.astype(np.float32))
    module.b = tf.Variable(fitted.intercept_.astype(np.float32))
    module.tables = {
        name: tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(values), tf.range(len(values), dtype=tf.int64)), -1
        )
        for name, values in levels.items()
    }

    @tf.function(input_signature=[
        tf.TensorSpec([None], tf.float32, name="amount"),
        tf.TensorSpec([None, 1], tf.int64, name="items"),
        tf.TensorSpec([None, 1], tf.string, name="channel"),
        tf.TensorSpec([None, 1], tf.string, name="region"),
    ])
    def serve(amount: Any, items: Any, channel: Any, region: Any) -> dict[str, Any]:
        columns = [tf.reshape((amount - 60.0) / 40.0, [-1, 1]), (tf.cast(items, tf.float32) - 5.0) / 3.0]
        for name, text in (("channel", channel), ("region", region)):
            codes = module.tables[name].lookup(tf.reshape(text, [-1]))
            columns.append(tf.one_hot(codes, len(levels[name]), dtype=tf.float32))  # -1: all zeros
        return {"logits": tf.matmul(tf.concat(columns, axis=1), module.w) + module.b}

    module.serve = serve

    def predict(frame: pd.DataFrame) -> np.ndarray:
        logits = serve(
            tf.constant(frame.amount.to_numpy(np.float32)), tf.constant(frame[["items"]].to_numpy(np.int64)),
            tf.constant(frame[["channel"]].to_numpy(str)), tf.constant(frame[["region"]].to_numpy(str)),
        )["logits"].numpy().astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    return Built(
        model=loaded(module, serve), write=savedmodel_writer(module, serve), train=train, validation=validation,
        target="segment", classes=classes, predict=predict,
    )


def tensorflow_regression() -> Built:
    """One ``[N, 5]`` float32 input ``features``, standardized inside the model, a hidden
    ReLU layer of fixed random weights and linear weights fitted on it (least squares), one
    linear unit ``spend`` (output ``[N, 1]``, no sigmoid): a regressor, told from a binary
    logit by its target of non-whole numbers."""
    from sklearn.linear_model import LinearRegression

    tf = tensorflow()
    train, validation = split(numeric_data(12), drop=("churned",))
    features = [c for c in train.columns if c != "spend"]
    X = train[features].to_numpy(np.float64)
    mean, scale = X.mean(axis=0), X.std(axis=0)
    hidden = np.random.default_rng(12).normal(size=(len(features), 8))
    fitted = LinearRegression().fit(np.column_stack([(X - mean) / scale, np.maximum((X - mean) / scale @ hidden, 0)]),
                                    train.spend)

    module = tf.Module()
    module.mean = tf.Variable(mean.astype(np.float32))
    module.scale = tf.Variable(scale.astype(np.float32))
    module.hidden = tf.Variable(hidden.astype(np.float32))
    module.w = tf.Variable(fitted.coef_.reshape(-1, 1).astype(np.float32))
    module.b = tf.Variable(np.array([fitted.intercept_], np.float32))

    @tf.function(input_signature=[tf.TensorSpec([None, len(features)], tf.float32, name="features")])
    def serve(x: Any) -> dict[str, Any]:
        z = (x - module.mean) / module.scale
        return {"spend": tf.matmul(tf.concat([z, tf.nn.relu(tf.matmul(z, module.hidden))], axis=1), module.w) + module.b}

    module.serve = serve

    def predict(frame: pd.DataFrame) -> np.ndarray:
        values = serve(tf.constant(frame[features].to_numpy(np.float32)))["spend"].numpy()
        return np.asarray(values, dtype=np.float64).reshape(-1)

    return Built(
        model=loaded(module, serve), write=savedmodel_writer(module, serve), train=train, validation=validation,
        target="spend", classes=[], predict=predict,
    )
