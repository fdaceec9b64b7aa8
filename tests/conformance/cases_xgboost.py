"""The XGBoost rows of the conformance table: 20 trees of depth 3 on a few hundred rows.

``xgboost-binary`` is an ``XGBClassifier`` on numbers, written with its own ``save_model``
as JSON (the ONNX graph converted at registration agrees, so it is served as ONNX);
``xgboost-multiclass`` is a ``Booster`` from ``xgboost.train`` on a DataFrame whose text
columns are pandas categories (``enable_categorical``), written as UBJSON and served by
XGBoost itself. The framework's own answer is ``predict_proba`` / ``Booster.predict`` on a
DataFrame with the training categories.

xgboost is imported inside the factories (importing the table must not import it), and the
helpers of the table's module inside them too (``cases.py`` imports this module at its end,
and either may be imported first).
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
#: Class codes of the shop data's ``segment`` (XGBoost's classes are 0..C-1).
SEGMENTS = {"bronze": 0, "gold": 1, "silver": 2}
TEXT_COLUMNS = ("channel", "region")


def xgboost_writer(model: Any, suffix: str) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        path = directory / f"model{suffix}"
        model.save_model(str(path))
        return path

    return write


def coded_shop_data(seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The shop data split, ``segment`` as class codes; text columns stay text (what a
    user's reference data holds)."""
    from tests.conformance.cases import shop_data, split

    train, validation = split(shop_data(seed))
    for frame in (train, validation):
        frame["segment"] = frame["segment"].map(SEGMENTS).astype(np.int64)
    return train, validation


def as_categories(frame: pd.DataFrame, train: pd.DataFrame, features: list[str]) -> pd.DataFrame:
    """The features with the text columns as pandas categories of the training data."""
    dtypes = {c: pd.CategoricalDtype(sorted(train[c].unique())) for c in TEXT_COLUMNS}
    return frame[features].astype(dtypes)


def xgboost_binary() -> Built:
    """An XGBClassifier on four floats and an integer; classes 0/1."""
    import xgboost as xgb

    from tests.conformance.cases import Built, numeric_data, split

    train, validation = split(numeric_data(11), drop=("spend",))
    features = [c for c in train.columns if c != "churned"]
    model = xgb.XGBClassifier(n_estimators=TREES, max_depth=DEPTH, random_state=0, n_jobs=1)
    model.fit(train[features], train.churned)
    return Built(
        model=model, write=xgboost_writer(model, ".json"), train=train, validation=validation,
        target="churned", classes=model.classes_.tolist(),
        predict=lambda frame: model.predict_proba(frame[features]),
    )


def xgboost_multiclass() -> Built:
    """A Booster (``multi:softprob``) on a float, an integer and two categorical text
    features; classes 0/1/2."""
    import xgboost as xgb

    from tests.conformance.cases import Built

    train, validation = coded_shop_data(12)
    features = [c for c in train.columns if c != "segment"]
    data = xgb.DMatrix(as_categories(train, train, features), train.segment, enable_categorical=True)
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": DEPTH, "nthread": 1, "seed": 0}
    booster = xgb.train(params, data, num_boost_round=TREES)

    def predict(frame: pd.DataFrame) -> np.ndarray:
        rows = xgb.DMatrix(as_categories(frame, train, features), enable_categorical=True)
        return np.asarray(booster.predict(rows), dtype=np.float64)

    return Built(
        model=booster, write=xgboost_writer(booster, ".ubj"), train=train, validation=validation,
        target="segment", classes=[0, 1, 2], predict=predict,
    )


def xgboost_regression() -> Built:
    """An XGBRegressor (squared error) on numbers and an integer count."""
    import xgboost as xgb

    from tests.conformance.cases import Built, numeric_data, split

    train, validation = split(numeric_data(13), drop=("churned",))
    features = [c for c in train.columns if c != "spend"]
    model = xgb.XGBRegressor(n_estimators=TREES, max_depth=DEPTH, n_jobs=1).fit(train[features], train.spend)
    return Built(
        model=model, write=xgboost_writer(model, ".json"), train=train, validation=validation,
        target="spend", classes=[], predict=lambda frame: model.predict(frame[features]),
    )
