"""The LightGBM rows of the conformance table: 20 trees of depth 3 on a few hundred rows,
written in LightGBM's text format (``Booster.save_model``).

``lightgbm-binary`` is an ``LGBMClassifier`` on numbers (the ONNX graph converted at
registration agrees on these data, so it is served as ONNX); ``lightgbm-multiclass`` is a
``Booster`` from ``lightgbm.train`` on a DataFrame whose text columns are pandas categories
(recorded in the file as ``pandas_categorical``), served by LightGBM itself. The
framework's own answer is ``predict_proba`` / ``Booster.predict`` on a DataFrame with the
training categories.

lightgbm is imported inside the factories (importing the table must not import it), and the
helpers of the table's modules inside them too (``cases.py`` imports this module at its
end, and either may be imported first).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from tests.conformance.cases import Built

TREES = 20
DEPTH = 3
PARAMS = {"max_depth": DEPTH, "num_leaves": 8, "verbose": -1, "num_threads": 1, "seed": 0}


def lightgbm_writer(booster: Any) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        path = directory / "model.txt"
        booster.save_model(str(path))
        return path

    return write


def lightgbm_binary() -> Built:
    """An LGBMClassifier on four floats and an integer; classes 0/1."""
    import lightgbm as lgb

    from tests.conformance.cases import Built, numeric_data, split

    train, validation = split(numeric_data(21), drop=("spend",))
    features = [c for c in train.columns if c != "churned"]
    model = lgb.LGBMClassifier(n_estimators=TREES, **PARAMS).fit(train[features], train.churned)
    return Built(
        model=model, write=lightgbm_writer(model.booster_), train=train, validation=validation,
        target="churned", classes=model.classes_.tolist(),
        predict=lambda frame: model.predict_proba(frame[features]),
    )


def lightgbm_multiclass() -> Built:
    """A Booster (``multiclass``) on a float, an integer and two pandas-categorical text
    features; classes 0/1/2."""
    import lightgbm as lgb

    from tests.conformance.cases import Built
    from tests.conformance.cases_xgboost import as_categories, coded_shop_data

    train, validation = coded_shop_data(22)
    features = [c for c in train.columns if c != "segment"]
    data = lgb.Dataset(as_categories(train, train, features), train.segment)
    booster = lgb.train({"objective": "multiclass", "num_class": 3, **PARAMS}, data, num_boost_round=TREES)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(booster.predict(as_categories(frame, train, features)), dtype=np.float64)

    return Built(
        model=booster, write=lightgbm_writer(booster), train=train, validation=validation,
        target="segment", classes=[0, 1, 2], predict=predict,
    )


def lightgbm_regression() -> Built:
    """An LGBMRegressor (squared error) on numbers and an integer count."""
    import lightgbm as lgb

    from tests.conformance.cases import Built, numeric_data, split

    train, validation = split(numeric_data(23), drop=("churned",))
    features = [c for c in train.columns if c != "spend"]
    model = lgb.LGBMRegressor(n_estimators=TREES, **PARAMS).fit(train[features], train.spend)
    return Built(
        model=model, write=lightgbm_writer(model.booster_), train=train, validation=validation,
        target="spend", classes=[], predict=lambda frame: model.predict(frame[features]),
    )
