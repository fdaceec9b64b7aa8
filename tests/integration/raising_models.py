"""A regressor for the batching tests, importable by the server (the repository root is on
its path): it refuses negative inputs, as a model whose preprocessing (a log) cannot take
them, naming the value, so each failing request's error is recognisably its own."""

from __future__ import annotations

import time

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin


class NegativeRefusingRegressor(RegressorMixin, BaseEstimator):
    """The wrapped regressor's answers on log1p of the inputs; a call with a negative input
    raises naming the smallest. Each call takes at least ``delay`` seconds (so the server runs
    it in its thread pool and concurrent requests queue and merge) and, when ``calls_file``
    is set, appends ``<rows> ok|failed`` to it: the test sees merged calls that failed."""

    def __init__(self, model=None, delay: float = 0.0, calls_file: str = "") -> None:
        self.model = model
        self.delay = delay
        self.calls_file = calls_file

    def fit(self, X, y):
        self.n_features_in_ = self.model.n_features_in_
        return self

    def predict(self, X):
        values = np.asarray(X, dtype=float)
        time.sleep(self.delay)
        failed = bool((values < 0).any())
        if self.calls_file:
            with open(self.calls_file, "a") as calls:
                calls.write(f"{len(values)} {'failed' if failed else 'ok'}\n")
        if failed:
            raise ValueError(f"cannot take a log of {float(values.min())!r}")
        return self.model.predict(np.log1p(values))
