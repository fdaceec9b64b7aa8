"""``model.json``: everything known about one registered model version."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from modelmon.registry.calibration import Calibration
from modelmon.registry.profile import ReferenceProfile
from modelmon.runtimes.base import ArtifactInfo, OnnxCheck, runtime_names
from modelmon.types import Signature

CARD_FILE = "model.json"

__all__ = ["CARD_FILE", "ArtifactInfo", "ModelCard", "OnnxCheck"]


class ModelCard(BaseModel):
    schema_version: int = 1
    name: str
    version: int
    flavor: str = Field(description="The runtime that registered the model (modelmon.runtimes).")
    created_at: datetime
    description: str = ""
    signature: Signature
    artifact: ArtifactInfo
    serving_artifact: ArtifactInfo | None = Field(
        default=None,
        description="An ONNX graph converted from the model and proven to agree with it; "
        "served instead of the original when present.",
    )
    onnx_check: OnnxCheck | None = None
    # Slots that the monitoring features fill at registration.
    reference_profile: ReferenceProfile | None = None
    calibration: Calibration | None = None
    baseline: dict[str, float] | None = None

    @field_validator("flavor")
    @classmethod
    def _known_runtime(cls, value: str) -> str:
        known = runtime_names()
        if value not in known:
            raise ValueError(f"unknown runtime {value!r}; this modelmon knows {known}")
        return value

    @property
    def runtime(self) -> str:
        """The runtime that serves the version: ONNX when a converted graph was kept."""
        return "onnx" if self.serving_artifact is not None else self.flavor
