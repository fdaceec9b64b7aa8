"""``model.json``: everything known about one registered model version."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from modelmon.monitoring.profile import ReferenceProfile
from modelmon.quality.calibration import Calibration
from modelmon.registry.onnx_export import OnnxCheck
from modelmon.registry.signature import Signature

CARD_FILE = "model.json"


class ArtifactInfo(BaseModel):
    path: str = Field(description="File name inside the version directory.")
    sha256: str
    format: Literal["skops", "pickle", "onnx"]
    trusted_types: list[str] = Field(
        default_factory=list, description="Types beyond skops' defaults that loading may build."
    )


class ModelCard(BaseModel):
    schema_version: int = 1
    name: str
    version: int
    flavor: Literal["sklearn", "onnx"]
    created_at: datetime
    description: str = ""
    signature: Signature
    artifact: ArtifactInfo
    serving_artifact: ArtifactInfo | None = Field(
        default=None,
        description="An ONNX graph converted from a scikit-learn model and proven to agree "
        "with it; served instead of the original when present.",
    )
    onnx_check: OnnxCheck | None = None
    # Slots that the monitoring features fill at registration.
    reference_profile: ReferenceProfile | None = None
    calibration: Calibration | None = None
    baseline: dict[str, float] | None = None

    @property
    def runtime(self) -> Literal["sklearn", "onnx"]:
        return "onnx" if self.serving_artifact is not None or self.flavor == "onnx" else "sklearn"
