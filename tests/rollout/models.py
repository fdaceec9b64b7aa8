"""Candidate models for the rollout tests, importable by the server (the repository root is
on its path): one that fails on some inputs."""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class FaultyClassifier(ClassifierMixin, BaseEstimator):
    """The wrapped model's answers, except that a call with a row whose first feature is
    above ``limit`` raises, as a model meeting an input it cannot handle."""

    def __init__(self, model=None, limit: float = 0.0) -> None:
        self.model = model
        self.limit = limit

    def fit(self, X, y):
        self.classes_ = self.model.classes_
        self.n_features_in_ = self.model.n_features_in_
        return self

    def predict_proba(self, X):
        values = np.asarray(X, dtype=float)
        if (values[:, 0] > self.limit).any():
            raise ValueError(f"cannot handle a first feature above {self.limit}")
        return self.model.predict_proba(X)

    def predict(self, X):
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
