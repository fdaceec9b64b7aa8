"""How a run reports: where its store is, whether it is live, how often it writes.

Each field can come from the environment, so a training script picks up production
settings (a PostgreSQL store, a Pushgateway) without changing its code.
"""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, Field

ENVIRONMENT = {
    "store": "MODELMON_STORE_URL",
    "live_port": "MODELMON_TRAINING_PORT",
    "live_address": "MODELMON_TRAINING_ADDRESS",
    "pushgateway": "MODELMON_PUSHGATEWAY_URL",
}


class TrackingSettings(BaseModel):
    store: str | None = Field(
        None, description="Store URL or SQLite path [default: $MODELMON_HOME/modelmon.db]."
    )
    live_port: int | None = Field(
        None, ge=0, le=65535,
        description="Serve the live training gauges on this port of the training process.",
    )
    live_address: str = Field("127.0.0.1", description="Address the live gauges listen on.")
    pushgateway: str | None = Field(
        None, description="Push the live training gauges to this Pushgateway URL instead."
    )
    flush_seconds: float = Field(
        1.0, gt=0, description="Longest a logged value waits before it is written and pushed."
    )
    max_buffered_rows: int = Field(
        1000, ge=1, description="Write at once when this many values are waiting."
    )

    @classmethod
    def from_env(cls, **overrides: Any) -> TrackingSettings:
        """Settings from ``MODELMON_*`` variables, with non-None ``overrides`` on top."""
        values: dict[str, Any] = {
            field: os.environ[variable]
            for field, variable in ENVIRONMENT.items()
            if os.environ.get(variable)
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
