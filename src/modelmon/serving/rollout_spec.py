"""Checking what starts a rollout, field by field, for the CLI and the HTTP endpoint alike.

Every field is checked before anything is written, and a bad one is named in a
``RolloutInputError`` (400), so a bad command changes nothing.
"""

from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass
from typing import Any

from modelmon.errors import ModelNotFoundError, RolloutInputError
from modelmon.registry.card import ModelCard
from modelmon.registry.store import Registry
from modelmon.serving.rollout_gates import DEFAULT_GATES, GATES, drift_floor, validation_rows
from modelmon.store.rollouts import MODES, Rollout

#: Canary steps unless given: 1% of traffic, then 10%, 50% and all.
DEFAULT_CANARY_STEPS = (1.0, 10.0, 50.0, 100.0)
#: Shadow copies all traffic to the candidate; promotion then hands it all traffic.
DEFAULT_SHADOW_STEPS = (100.0,)
DEFAULT_ALPHA = 0.05
DEFAULT_MIN_REQUESTS = 100
FIELDS = frozenset({"candidate", "primary", "mode", "steps", "gates", "margins", "alpha", "min_requests", "sticky_header",
                    "sticky_feature"})
#: An HTTP header name (RFC 9110 token characters).
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")


@dataclass(frozen=True, slots=True)
class StartSpec:
    model: str
    primary_version: int
    candidate_version: int
    mode: str
    steps: list[float]
    gates: list[str]
    margins: dict[str, float]
    alpha: float
    min_requests: int
    sticky_header: str | None
    sticky_feature: str | None = None


def _version(value: Any, field: str, model: str, registry: Registry) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise RolloutInputError(f"{field} must be a version number, got {value!r}")
    try:
        number = int(value)
    except ValueError:
        raise RolloutInputError(f"{field} must be a version number, got {value!r}") from None
    if number not in registry.versions(model):
        raise RolloutInputError(f"{field}: model {model!r} has no version {number}; registered: {registry.versions(model)}")
    return number


def _number(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RolloutInputError(f"{field} must be a finite number, got {value!r}")
    return float(value)


def _steps(value: Any, mode: str) -> list[float]:
    if value is None:
        return list(DEFAULT_CANARY_STEPS if mode == "canary" else DEFAULT_SHADOW_STEPS)
    if not isinstance(value, list) or not value:
        raise RolloutInputError(f"steps must be a non-empty list of percentages, got {value!r}")
    steps = [_number(v, "steps") for v in value]
    if any(not 0 < s <= 100 for s in steps):
        raise RolloutInputError(f"steps must be percentages in (0, 100], got {steps}")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise RolloutInputError(f"steps must increase, got {steps}")
    if steps[-1] != 100:
        raise RolloutInputError(f"the last step must be 100 (the candidate takes all traffic), got {steps[-1]:g}")
    if mode == "canary" and len(steps) < 2:
        raise RolloutInputError("a canary needs a step below 100 before it takes all traffic, e.g. steps 10,100")
    return steps


def _gates(value: Any, primary: ModelCard, candidate: ModelCard) -> list[str]:
    if value is None:
        return [g for g in DEFAULT_GATES if GATES[g].applies_to(primary, candidate) is None]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise RolloutInputError(f"gates must be a non-empty list of gate names ({', '.join(GATES)}), got {value!r}")
    names = list(dict.fromkeys(value))
    for name in names:
        if name not in GATES:
            raise RolloutInputError(f"gates: unknown gate {name!r}; known gates: {', '.join(GATES)}")
        reason = GATES[name].applies_to(primary, candidate)
        if reason is not None:
            raise RolloutInputError(f"gates: {reason}")
    return names


def _margins(value: Any, gates: list[str]) -> dict[str, float]:
    margins = {name: GATES[name].default_margin for name in gates}
    if value is None:
        return margins
    if not isinstance(value, dict):
        raise RolloutInputError(f"margins must map gate names to numbers, got {value!r}")
    for name, margin in value.items():
        if name not in gates:
            raise RolloutInputError(f"margins: {name!r} is not one of this rollout's gates ({', '.join(gates)})")
        number = _number(margin, f"margins.{name}")
        if not 0 < number < 1:
            raise RolloutInputError(f"margins.{name} must be a share in (0, 1), got {number:g}")
        margins[name] = number
    return margins


def _drift_can_decide(gates: list[str], margins: dict[str, float], alpha: float, primary: ModelCard,
                      candidate: ModelCard, asked: bool) -> tuple[list[str], dict[str, float]]:
    """The drift gate passes a step only when its interval's top is at most the margin, and
    the versions' validation shares, counted on finitely many rows, leave a floor under that
    top however much traffic comes (``drift_floor``). Above half the margin the gate would
    wait for ever or nearly: left out of the default gates then, and a 400 when asked for."""
    if "drift" not in gates:
        return gates, margins
    alpha_each = alpha / len(gates) / 2
    floor = max(drift_floor(primary, alpha_each), drift_floor(candidate, alpha_each))
    if floor <= margins["drift"] / 2:
        return gates, margins
    if asked:
        rows = ", ".join(f"{card.version}: {validation_rows(card):.0f}" for card in (primary, candidate))
        raise RolloutInputError(
            f"gates: 'drift' cannot decide at margin {margins['drift']:g}: the versions' validation predictions "
            f"(rows by version: {rows}) alone leave each version's drift uncertain by up to {floor:.3f}; give "
            f"margins.drift of at least {2 * floor:.2f}, register with more validation rows, or leave the gate out"
        )
    return [g for g in gates if g != "drift"], {g: m for g, m in margins.items() if g != "drift"}


def _compatible(primary: ModelCard, candidate: ModelCard) -> None:
    """The candidate must take the primary's requests as they are validated, and answer in
    the same classes, for its answers and monitors to be compared row for row."""
    ours = [(f.name, f.dtype) for f in primary.signature.features]
    theirs = [(f.name, f.dtype) for f in candidate.signature.features]
    if ours != theirs:
        raise RolloutInputError(
            f"candidate: version {candidate.version} takes other inputs than version {primary.version} "
            f"({theirs} vs {ours}); a rollout needs the same features"
        )
    if primary.signature.task != candidate.signature.task or primary.signature.class_labels != candidate.signature.class_labels:
        raise RolloutInputError(
            f"candidate: version {candidate.version} answers a {candidate.signature.task} task with classes "
            f"{candidate.signature.class_labels}, version {primary.version} a {primary.signature.task} task with "
            f"{primary.signature.class_labels}; a rollout needs the same"
        )


def serving_version(registry: Registry, model: str, latest: Rollout | None, candidate: int) -> int:
    """The version now answering ``model``'s unversioned requests: the one its last rollout
    left serving, else the newest registered version other than the candidate."""
    if latest is not None:
        return latest.serving_version
    others = [v for v in registry.versions(model) if v != candidate]
    if not others:
        raise RolloutInputError(f"primary: model {model!r} has no version besides the candidate {candidate} to compare it with")
    return others[-1]


def parse_start(model: str, payload: Any, registry: Registry, latest: Rollout | None) -> StartSpec:
    """A start request's fields, checked (``latest``: the model's last rollout, which says
    which version serves it now)."""
    if not isinstance(payload, dict):
        raise RolloutInputError('expected a JSON object such as {"candidate": 2, "mode": "canary"}')
    unknown = sorted(set(payload) - FIELDS)
    if unknown:
        raise RolloutInputError(f"unknown field(s) {unknown}; a rollout takes {sorted(FIELDS)}")
    if model not in registry.model_names():
        raise ModelNotFoundError(f"model {model!r} is not registered")
    if "candidate" not in payload:
        raise RolloutInputError("candidate: the version to roll out is required")
    candidate = _version(payload["candidate"], "candidate", model, registry)
    if payload.get("primary") is None:
        primary = serving_version(registry, model, latest, candidate)
    else:
        primary = _version(payload["primary"], "primary", model, registry)
    if primary == candidate:
        raise RolloutInputError(f"candidate: version {candidate} is the primary already; roll out another version")
    mode = payload.get("mode", "canary")
    if mode not in MODES:
        raise RolloutInputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    primary_card, candidate_card = registry.card(model, primary), registry.card(model, candidate)
    _compatible(primary_card, candidate_card)
    steps = _steps(payload.get("steps"), mode)
    gates = _gates(payload.get("gates"), primary_card, candidate_card)
    margins = _margins(payload.get("margins"), gates)
    alpha = _number(payload.get("alpha", DEFAULT_ALPHA), "alpha")
    if not 0 < alpha <= 0.5:
        raise RolloutInputError(f"alpha (the false-alarm rate) must be in (0, 0.5], got {alpha:g}")
    asked = payload.get("gates") is not None or "drift" in (payload.get("margins") or {})
    gates, margins = _drift_can_decide(gates, margins, alpha, primary_card, candidate_card, asked)
    min_requests = payload.get("min_requests", DEFAULT_MIN_REQUESTS)
    if isinstance(min_requests, bool) or not isinstance(min_requests, int) or min_requests < 1:
        raise RolloutInputError(f"min_requests must be a whole number of at least 1, got {min_requests!r}")
    sticky = payload.get("sticky_header")
    if sticky is not None:
        if not isinstance(sticky, str) or not _HEADER.match(sticky):
            raise RolloutInputError(f"sticky_header must be an HTTP header name, got {sticky!r}")
        if mode != "canary":
            raise RolloutInputError("sticky_header: only a canary splits traffic by a key; a shadow copies it")
        sticky = sticky.lower()
    feature = _sticky_feature(payload.get("sticky_feature"), primary_card, mode, sticky)
    return StartSpec(model, primary, candidate, mode, steps, gates, margins, alpha, min_requests, sticky, feature)


def _sticky_feature(value: Any, card: ModelCard, mode: str, header: str | None) -> str | None:
    """A feature of the model's signature (the candidate takes the same ones: ``_compatible``)
    whose value decides each row's version."""
    if value is None:
        return None
    if header is not None:
        raise RolloutInputError("sticky_feature: give sticky_header or sticky_feature, not both: one key decides the version")
    names = card.signature.feature_names
    if not isinstance(value, str) or value not in names:
        raise RolloutInputError(f"sticky_feature: {value!r} is not a feature of {card.name} version {card.version}; its features: {names}")
    if mode != "canary":
        raise RolloutInputError("sticky_feature: only a canary splits traffic by a key; a shadow copies it")
    return value
