"""One served model version: its predictor, batcher, validator and bound metrics."""

from __future__ import annotations

import math
import random
import time
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from modelmon.errors import InferenceError, InvalidInputError
from modelmon.monitoring.metrics import ModelMetrics, ServerMetrics
from modelmon.monitoring.monitor import MonitorSettings, VersionMonitor
from modelmon.monitoring.tasks import ErrorEstimator
from modelmon.registry.card import ModelCard
from modelmon.runtimes.base import Runtime
from modelmon.serving.batching import AdaptiveBatcher, ObserverError
from modelmon.serving.outputs import outputs_for
from modelmon.serving.prediction_log import Chunk, PredictionLog, prediction_ids
from modelmon.serving.recent import RecentPredictions
from modelmon.serving.settings import ServingSettings
from modelmon.serving.validation import RequestValidator
from modelmon.types import FeatureBatch, ModelOutput


class PredictionIds:
    """Ids ``<process prefix>-<counter>``: unique across replicas and restarts (a random
    64-bit prefix per process), cheap to make, and short. Used from the event loop only."""

    def __init__(self) -> None:
        self.prefix = uuid.uuid4().hex[:16]
        self.next = 1

    def reserve(self, n: int) -> int:
        """The counter of the first of ``n`` new ids (the others follow it)."""
        first, self.next = self.next, self.next + n
        return first

    def format(self, first: int, n: int) -> list[str]:
        return prediction_ids(self.prefix, first, n)


PREDICTION_IDS = PredictionIds()


@dataclass(slots=True)
class Prediction:
    ids: list[str]
    output: ModelOutput


class ModelRuntime:
    """One served model version: its runtime (the model), batcher, validator and monitor."""

    def __init__(
        self,
        card: ModelCard,
        predictor: Runtime,
        metrics: ServerMetrics,
        executor: Executor,
        settings: ServingSettings,
        reference_sample: dict[str, np.ndarray] | None = None,
        prediction_log: PredictionLog | None = None,
        recent: RecentPredictions | None = None,
        loss_estimator: ErrorEstimator | None = None,
    ) -> None:
        self.card = card
        self.name = card.name
        self.version = str(card.version)
        self.outputs = outputs_for(card.signature)
        self.predictor = predictor
        self.monitoring = settings.monitoring
        self.monitor = VersionMonitor(
            metrics,
            model=card.name,
            version=self.version,
            flavor=card.flavor,
            signature=card.signature,
            baseline=card.baseline,
            profile=card.reference_profile,
            calibration=card.calibration,
            reference_sample=reference_sample,
            settings=MonitorSettings(enabled=settings.monitoring, drift=settings.drift),
            loss_estimator=loss_estimator,
        )
        self.metrics: ModelMetrics = self.monitor.metrics
        self.class_labels = [str(c) for c in card.signature.class_labels]
        self.prediction_log = prediction_log
        self.feature_sample = settings.prediction_log.feature_sample
        self.recent = recent
        self.recent_source = recent.source(card.name, card.version, self.class_labels) if recent is not None else 0
        self.validator = RequestValidator(card.signature, settings.max_rows_per_request)
        self.batcher = AdaptiveBatcher(
            predictor.predict,
            executor,
            self._on_model_call,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_ms=settings.max_batch_delay_ms,
            enabled=settings.batching,
            inline_below_ms=settings.inline_predict_ms,
        )

    async def predict(self, batch: FeatureBatch) -> Prediction:
        try:
            answer = await self.batcher.submit(batch)
        # A value the model's graph cannot take (runtimes/onnx.py): the caller's 400. The
        # model answered but recording its call failed: modelmon's 500 (logged by the batcher).
        except (InvalidInputError, ObserverError):
            raise
        except Exception as exc:
            raise InferenceError(
                f"model {self.name} version {self.version} failed: {type(exc).__name__}: {exc}"
            ) from exc
        ids = PREDICTION_IDS.format(answer.first_row, batch.n_rows)
        return Prediction(ids=ids, output=answer.output)

    def _on_model_call(self, batch: FeatureBatch, seconds: float, output: ModelOutput, waits: list[float]) -> int:
        """Once per model call, before its requests are answered: queue its monitoring work,
        give its rows their prediction ids, remember them for labels and journal them in one
        prediction log line. Returns the first row's id counter."""
        self.monitor.observe(batch, seconds, output, waits)
        first_id = PREDICTION_IDS.reserve(batch.n_rows)
        if self.recent is None and self.prediction_log is None:
            return first_id
        predicted = output.predicted
        now = time.time()
        if self.recent is not None:
            self.recent.add(self.recent_source, first_id, predicted, now)
        if self.prediction_log is not None:
            # A classifier's predicted labels; a regressor's values as numbers, which the
            # writer process stores as text that reads back as the same float (repr) for the
            # feedback join: repr on the event loop cost 0.3-0.6 µs per row (issue 18). JSON
            # has no NaN or infinity, so a call with one journals all its values as text.
            labels: list[str] | list[float]
            if self.class_labels:
                labels = [self.class_labels[i] for i in predicted.tolist()]
            else:
                values = predicted.tolist()
                labels = values if math.isfinite(sum(values)) else [repr(v) for v in values]
            features = None
            if self.feature_sample and random.random() < self.feature_sample:
                # The frame's columns are the signature's feature names: text.
                features = cast(list[dict[str, Any]], batch.to_frame(self.card.signature).to_dict("records"))
            self.prediction_log.submit(
                Chunk(self.name, int(self.version), now, PREDICTION_IDS.prefix, first_id, labels, output.probabilities, features)
            )
        return first_id
