"""The model registry: versioned artifacts with their signature and baselines.

Names are resolved on first use, so that importing one module of the package (the
signature, say, from the monitoring code) does not import all of it: the card imports the
monitoring profile, which imports the signature.
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
    from modelmon.registry.signature import FeatureBatch, FeatureSpec, Signature
    from modelmon.registry.store import Registry, parse_model_ref

_LAZY = {
    "FeatureBatch": "modelmon.registry.signature",
    "FeatureSpec": "modelmon.registry.signature",
    "Signature": "modelmon.registry.signature",
    "ModelCard": "modelmon.registry.card",
    "Registry": "modelmon.registry.store",
    "parse_model_ref": "modelmon.registry.store",
    "register_model": "modelmon.registry.register",
}


__getattr__ = lazy_attributes("modelmon.registry", _LAZY)
