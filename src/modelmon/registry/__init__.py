"""The model registry: versioned artifacts with their signature and baselines."""

from modelmon.registry.card import ModelCard
from modelmon.registry.register import register_model
from modelmon.registry.signature import FeatureBatch, FeatureSpec, Signature
from modelmon.registry.store import Registry, parse_model_ref

__all__ = [
    "FeatureBatch",
    "FeatureSpec",
    "ModelCard",
    "Registry",
    "Signature",
    "parse_model_ref",
    "register_model",
]
