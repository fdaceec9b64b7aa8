"""The reference profile: what the training data looked like, in the shape live traffic is
counted in.

Numeric features get quantile bins of the training data, so each bin holds about the same
share of it and the bins follow the data wherever it is dense; categorical features get one
bin per frequent category plus ``other``. Live rows are counted into exactly these bins, so
drift is a comparison of two histograms over the same bins, in-process or in PromQL.

Deterministic: the same data gives the same profile (the sample for KS and Wasserstein is
drawn with a fixed seed).
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field

from modelmon.types import FeatureBatch, Signature

#: Top-class probability buckets: the reference profile's confidence shares and the live
#: ``modelmon_prediction_confidence`` histogram use the same bounds.
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)

OTHER = "other"
SAMPLE_FILE = "reference_sample.npz"


class ProfileSettings(BaseModel):
    numeric_bins: int = Field(10, ge=2, le=50, description="Quantile bins per numeric feature.")
    top_categories: int = Field(20, ge=1, le=200, description="Categories kept per feature; the rest are 'other'.")
    sample_size: int = Field(1000, ge=50, description="Reference values kept per numeric feature for KS and Wasserstein.")
    seed: int = 0


class NumericProfile(BaseModel):
    name: str
    edges: list[float] = Field(description="Inner bin edges: bin i is [edges[i-1], edges[i]).")
    bin_labels: list[str]
    shares: list[float] = Field(description="Share of the non-missing training values per bin.")
    count: int
    missing_share: float
    mean: float | None
    std: float | None
    min: float | None
    max: float | None


class CategoricalProfile(BaseModel):
    name: str
    categories: list[str] = Field(description="The most frequent categories, most frequent first.")
    bin_labels: list[str] = Field(description="The categories, then 'other'.")
    shares: list[float]
    count: int
    missing_share: float


class PredictionProfile(BaseModel):
    """The model's outputs on the validation data: the baseline for prediction drift."""

    rows: int
    class_shares: list[float] = Field(description="In the order of the signature's classes.")
    confidence_bounds: list[float]
    confidence_shares: list[float] = Field(description="Per bucket (b[i-1], b[i]], then above the last bound.")


class ReferenceProfile(BaseModel):
    rows: int
    settings: ProfileSettings
    numeric: list[NumericProfile]
    categorical: list[CategoricalProfile]
    prediction: PredictionProfile | None = None
    sample_file: str | None = None
    predicted_values: NumericProfile | None = Field(
        default=None,
        description="A regressor's predictions on the validation data (else the reference data), "
        "binned as a numeric feature: the baseline of prediction drift.",
    )
    predictions_from_validation: bool = Field(
        default=False,
        description="Whether ``prediction`` / ``predicted_values`` are the model's outputs on held-out validation "
        "rows (else on its training rows, where a model that overfits looks more confident than on any traffic): "
        "the rollout drift gate compares a version's traffic with them only then.",
    )
    target: NumericProfile | None = Field(
        default=None, description="A regressor's target on the validation data, binned the same way."
    )


def interval_labels(edges: np.ndarray) -> list[str]:
    """Readable, unique bin labels: ``(-inf, 1.5)``, ``[1.5, 3)``, ..., ``[9, +inf)``,
    with just enough significant digits to tell every edge apart."""
    if len(edges) == 0:
        return ["(-inf, +inf)"]
    for digits in range(4, 18):
        text = [f"{e:.{digits}g}" for e in edges]
        if len(set(text)) == len(text):
            break
    return [f"(-inf, {text[0]})"] + [f"[{a}, {b})" for a, b in pairwise(text)] + [f"[{text[-1]}, +inf)"]


def numeric_profile(name: str, values: np.ndarray, bins: int) -> NumericProfile:
    present = values[~np.isnan(values)]
    if present.size == 0:
        edges = np.empty(0)
        shares = np.ones(1)
    else:
        edges = np.unique(np.quantile(present, np.arange(1, bins) / bins))
        counts = np.bincount(np.searchsorted(edges, present, side="right"), minlength=len(edges) + 1)
        shares = counts / present.size
    stats = (float(present.mean()), float(present.std()), float(present.min()), float(present.max())) if present.size else (None,) * 4
    return NumericProfile(
        name=name, edges=edges.tolist(), bin_labels=interval_labels(edges), shares=shares.tolist(),
        count=int(present.size), missing_share=float(1 - present.size / max(len(values), 1)),
        mean=stats[0], std=stats[1], min=stats[2], max=stats[3],
    )


def categorical_profile(name: str, values: np.ndarray, top: int) -> CategoricalProfile:
    present = [v for v in values.tolist() if v is not None]
    levels, counts = np.unique(np.array(present, dtype=str), return_counts=True)  # both empty when nothing is present
    # Most frequent first; ties by name, so the profile does not depend on row order.
    order = sorted(zip(levels, counts, strict=True), key=lambda lc: (-lc[1], lc[0]))
    kept = [str(level) for level, _ in order if level != OTHER][:top]
    kept_counts = {str(level): int(count) for level, count in order}
    shares = [kept_counts[c] / len(present) for c in kept] if present else [0.0] * len(kept)
    other_share = 1.0 - sum(shares) if present else 1.0
    return CategoricalProfile(
        name=name, categories=kept, bin_labels=[*kept, OTHER], shares=[*shares, max(other_share, 0.0)],
        count=len(present), missing_share=float(1 - len(present) / max(len(values), 1)),
    )


def prediction_profile(proba: np.ndarray, confidence_bounds: tuple[float, ...]) -> PredictionProfile:
    top = proba.argmax(axis=1)
    confidence = proba[np.arange(len(top)), top]
    bounds = np.asarray(confidence_bounds)
    buckets = np.bincount(np.searchsorted(bounds, confidence, side="left"), minlength=len(bounds) + 1)
    return PredictionProfile(
        rows=len(proba),
        class_shares=(np.bincount(top, minlength=proba.shape[1]) / len(proba)).tolist(),
        confidence_bounds=bounds.tolist(),
        confidence_shares=(buckets / len(proba)).tolist(),
    )


def build_profile(
    signature: Signature,
    reference: FeatureBatch,
    settings: ProfileSettings,
    prediction: PredictionProfile | None,
    predicted_values: np.ndarray | None = None,
    target: np.ndarray | None = None,
    predictions_from_validation: bool = False,
) -> tuple[ReferenceProfile, dict[str, np.ndarray]]:
    """The profile, and the seeded sample of each numeric feature's values."""
    rng = np.random.default_rng(settings.seed)
    numeric, sample = [], {}
    for i, spec in enumerate(signature.numeric_features):
        column = reference.numeric[:, i]
        numeric.append(numeric_profile(spec.name, column, settings.numeric_bins))
        present = column[~np.isnan(column)]
        if present.size > settings.sample_size:
            present = rng.choice(present, settings.sample_size, replace=False)
        sample[spec.name] = np.sort(present)
    categorical = [
        categorical_profile(spec.name, reference.categorical[:, j], settings.top_categories)
        for j, spec in enumerate(signature.categorical_features)
    ]
    profile = ReferenceProfile(
        rows=reference.n_rows, settings=settings, numeric=numeric, categorical=categorical,
        prediction=prediction, sample_file=SAMPLE_FILE,
        predicted_values=None if predicted_values is None else numeric_profile("prediction", predicted_values, settings.numeric_bins),
        target=None if target is None else numeric_profile("target", target, settings.numeric_bins),
        predictions_from_validation=predictions_from_validation,
    )
    return profile, sample


def save_sample(directory: Path, sample: dict[str, np.ndarray]) -> None:
    # Positional keys: feature names may hold characters npz keys cannot.
    np.savez(directory / SAMPLE_FILE, *[sample[k] for k in sample])


def load_sample(directory: Path, profile: ReferenceProfile) -> dict[str, np.ndarray]:
    if profile.sample_file is None or not (directory / profile.sample_file).is_file():
        return {}
    with np.load(directory / profile.sample_file, allow_pickle=False) as arrays:
        return {p.name: arrays[f"arr_{i}"] for i, p in enumerate(profile.numeric)}
