"""The drift methods, each registered once with its metadata (as NannyML registers its
methods): its name (the ``method`` label of ``modelmon_feature_drift``), the feature kinds
it applies to, its direction (whether a high or a low score is drift), its default
threshold, the ``DriftSettings`` field that overrides that threshold, and what it measures.

Everything that names a method or its default threshold reads it from here: the server's
settings and verdicts (``drift.py``), the alerting config's schema, the built-in alert rules
and their promtool fixtures (``alerting/``), and the dashboards (``dashboards/catalog.py``).
Adding a method is registering it below and computing its score in
``drift.py: DriftMonitor.report``; docs/drift.md describes the methods for people.

This module imports nothing from modelmon, so every layer can read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

#: The kinds of input features (``FeatureSpec.is_categorical``).
Kind = Literal["numeric", "categorical"]
#: ``high``: a score at or above the threshold is drift (distances); ``low``: a score below
#: the threshold is drift (p-values).
Direction = Literal["high", "low"]


@dataclass(frozen=True)
class DriftMethod:
    name: str
    kinds: tuple[Kind, ...]
    direction: Direction
    default_threshold: float
    #: The ``DriftSettings`` field holding the threshold in force (methods may share one).
    setting: str
    description: str

    @property
    def is_pvalue(self) -> bool:
        return self.direction == "low"

    def drifted(self, score: float, threshold: float) -> bool:
        """Whether ``score`` is drift against ``threshold``; a NaN score never is."""
        if math.isnan(score):
            return False
        return score < threshold if self.direction == "low" else score >= threshold


#: Every method by name, in registration order (the order dashboards list them in).
METHODS: dict[str, DriftMethod] = {}


def register_method(method: DriftMethod) -> DriftMethod:
    """Add ``method`` to the table; methods that share a setting must share its default."""
    if method.name in METHODS:
        raise ValueError(f"drift method {method.name!r} is registered twice")
    for other in METHODS.values():
        if other.setting == method.setting and other.default_threshold != method.default_threshold:
            raise ValueError(
                f"drift methods {other.name!r} and {method.name!r} share the setting {method.setting} "
                "but not its default threshold"
            )
    METHODS[method.name] = method
    return method


def get_method(name: str) -> DriftMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise KeyError(f"unknown drift method {name!r} (methods: {', '.join(METHODS)})") from None


def method_names(*, direction: Direction | None = None, kind: Kind | None = None) -> tuple[str, ...]:
    """Names of the methods with this direction and applying to this kind, in table order."""
    return tuple(
        m.name for m in METHODS.values()
        if (direction is None or m.direction == direction) and (kind is None or kind in m.kinds)
    )


def default_thresholds() -> dict[str, float]:
    """Method name -> default threshold: what the server exports unless configured."""
    return {m.name: m.default_threshold for m in METHODS.values()}


def setting_default(setting: str) -> float:
    """The default of a ``DriftSettings`` threshold field: that of the methods it serves."""
    for method in METHODS.values():
        if method.setting == setting:
            return method.default_threshold
    raise KeyError(f"no drift method has the setting {setting!r}")


PSI = register_method(DriftMethod(
    "psi", ("numeric", "categorical"), "high", 0.2, "psi_threshold",
    "Population stability index of the window's bin shares against the reference's.",
))
JS = register_method(DriftMethod(
    "js", ("numeric", "categorical"), "high", 0.1, "js_threshold",
    "Jensen-Shannon distance (base 2) between the window's and the reference's bin shares.",
))
WASSERSTEIN = register_method(DriftMethod(
    "wasserstein", ("numeric",), "high", 0.1, "wasserstein_threshold",
    "Earth mover's distance between the reference sample and the window's recent values, "
    "in reference standard deviations.",
))
KS = register_method(DriftMethod(
    "ks", ("numeric",), "low", 0.01, "pvalue_threshold",
    "Two-sample Kolmogorov-Smirnov p-value, reference sample against the window's recent values.",
))
CHI2_PVALUE = register_method(DriftMethod(
    "chi2_pvalue", ("categorical",), "low", 0.01, "pvalue_threshold",
    "Chi-square test of homogeneity p-value, reference counts against the window's counts.",
))

# The names as a type, for schemas that accept a method (pydantic validates and documents
# them from this Literal, built from the table); type checkers see a str.
if TYPE_CHECKING:
    MethodName = str
else:
    MethodName = Literal[tuple(METHODS)]
