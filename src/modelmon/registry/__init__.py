"""The model registry: versioned artifacts with their signature and baselines.

Names are resolved on first use, so that importing the registry's store (as ``modelmon
serve`` does) does not import registration, and with it pandas and scikit-learn.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from modelmon.lazy import lazy_attributes

__all__ = [
    "FeatureBatch",
    "FeatureSpec",
    "ModelCard",
    "Registry",
    "Signature",
    "parse_model_ref",
    "register_model",
]

if TYPE_CHECKING:
    from modelmon.registry.card import ModelCard
    from modelmon.registry.register import register_model
    from modelmon.registry.store import Registry, parse_model_ref
    from modelmon.types import FeatureBatch, FeatureSpec, Signature

_LAZY = {
    "FeatureBatch": "modelmon.types",
    "FeatureSpec": "modelmon.types",
    "Signature": "modelmon.types",
    "ModelCard": "modelmon.registry.card",
    "Registry": "modelmon.registry.store",
    "parse_model_ref": "modelmon.registry.store",
    "register_model": "modelmon.registry.register",
}


__getattr__ = lazy_attributes("modelmon.registry", _LAZY)
