"""The benchmark model as a BentoML 1.4 service: one worker, predict_proba on a [N, 30] array.

Served by ``bentoml serve bentoml_service:BreastCancer`` from this directory, with the
model file (written by ``serving_setup.py bentoml``) named in ``BENCH_MODEL``.
"""

from __future__ import annotations

import os

import bentoml
import joblib
import numpy as np


@bentoml.service(workers=1)
class BreastCancer:
    def __init__(self) -> None:
        self.model = joblib.load(os.environ["BENCH_MODEL"])

    @bentoml.api
    def predict(self, input: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(input)
