"""Server settings, validated at the boundary (CLI flags or Python)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr

from modelmon.monitoring.drift import DriftSettings
from modelmon.monitoring.metrics import DEFAULT_MAX_SERIES
from modelmon.serving.prediction_log import PredictionLogSettings


class RolloutSettings(BaseModel):
    """Following the rollouts in the store (``serving/rollout.py``, docs/rollout.md)."""

    enabled: bool = Field(True, description="Follow and evaluate the rollouts in the store.")
    check_seconds: float = Field(1.0, gt=0, description="How often the plans are read and the gates evaluated.")
    shadow_queue: int = Field(256, ge=1, description="Shadow copies waiting for the candidate; past it they are dropped (counted).")
    shadow_timeout_seconds: float = Field(10.0, gt=0, description="A shadow call taking longer counts as the candidate's error.")
    shadow_linger_ms: float = Field(
        20.0, ge=0, le=10_000, description="How long the shadow waits after a copy arrives, to send the copies queued by then "
        "to the candidate as one batch (docs/rollout.md, \"What a shadow costs\")."
    )


class ServingSettings(BaseModel):
    max_batch_size: int = Field(256, ge=1, description="Most rows in one model call.")
    max_batch_delay_ms: float = Field(
        0.0, ge=0, description="How long a batch may wait for more rows (0: never wait; the "
        "batch is whatever queued while the model was busy)."
    )
    batching: bool = Field(True, description="Merge concurrent requests into one model call.")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body.")
    max_rows_per_request: int = Field(10_000, ge=1)
    inference_threads: int = Field(2, ge=1, description="Threads running model calls.")
    inline_predict_ms: float = Field(
        1.0, ge=0, description="Model calls that typically take less than this run on the event loop "
        "instead of a worker thread, whose handoff costs more than they do (0: always a thread)."
    )
    monitoring: bool = Field(True, description="Prediction metrics and drift accounting.")
    max_series: int = Field(
        DEFAULT_MAX_SERIES, ge=0, description="Most series the served versions may export (0: no limit). A version "
        "that would take the server past it serves with reduced monitoring: without its feature and drift series, "
        "or also without its prediction series if even those do not fit (modelmon_monitoring_reduced)."
    )
    drift: DriftSettings = Field(default_factory=DriftSettings)
    prediction_log: PredictionLogSettings = Field(default_factory=PredictionLogSettings)
    store_url: str | None = Field(None, description="The store for the prediction log and labels [default: $MODELMON_STORE_URL, else $MODELMON_HOME/modelmon.db].")
    api_token: SecretStr | None = Field(None, description="Bearer token required by write endpoints (feedback).")
    token_for_inference: bool = Field(False, description="Require the token for inference too.")
    recent_predictions: int = Field(100_000, ge=0, description="Predictions kept in memory to join labels without a store query.")
    rollouts: RolloutSettings = Field(default_factory=RolloutSettings)
    drain_seconds: float = Field(
        2.0, ge=0, description="On SIGTERM, how long to report not-ready while still serving, "
        "so load balancers stop sending before the server closes."
    )
    grpc_port: int | None = Field(
        None, ge=0, le=65535, description="Also serve the V2 gRPC protocol on this port (needs the `grpc` extra; "
        "0: any free port; None: no gRPC)."
    )
    grpc_host: str = Field("127.0.0.1", description="Address the gRPC server listens on (the CLI: --host, as HTTP).")
