"""A classifier that takes a known time per call, to hold requests in flight."""

import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin


class SlowClassifier(ClassifierMixin, BaseEstimator):
    def __init__(self, delay: float = 0.5) -> None:
        self.delay = delay

    def fit(self, X, y):
        self.classes_ = np.unique(y)
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def predict_proba(self, X):
        time.sleep(self.delay)
        return np.tile([0.25, 0.75], (len(X), 1))
