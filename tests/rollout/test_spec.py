"""What a rollout start accepts for a regressor, and a candidate that cannot stand in for
the primary (rollout_spec.py), on a real registry."""

from __future__ import annotations

import pandas as pd
import pytest
from sklearn.datasets import make_regression
from sklearn.linear_model import Ridge

from modelmon.errors import RolloutInputError
from modelmon.monitoring.sequential import distance_interval
from modelmon.registry import Registry, register_model
from modelmon.serving.rollout_gates import GATES, drift_floor
from modelmon.serving.rollout_spec import parse_start


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Registry:
    root = tmp_path_factory.mktemp("spec-registry")
    X, y = make_regression(n_samples=300, n_features=4, noise=5.0, random_state=0)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"]).assign(target=y)
    for alpha in (1.0, 10.0):
        register_model(Ridge(alpha=alpha).fit(frame[["a", "b", "c", "d"]], y), name="price", reference=frame,
                       target="target", validation=frame, registry=root, convert_to_onnx=False)
    fewer = frame[["a", "b", "c"]].assign(target=y)
    register_model(Ridge().fit(fewer[["a", "b", "c"]], y), name="price", reference=fewer, target="target",
                   validation=fewer, registry=root, convert_to_onnx=False)
    return Registry(root)


def test_a_regressor_is_gated_on_errors_latency_and_its_estimated_error(registry):
    spec = parse_start("price", {"candidate": 2, "primary": 1}, registry, None)
    assert (spec.primary_version, spec.candidate_version) == (1, 2)
    # No drift gate: 300 validation rows in 10 prediction bins leave too little room (below).
    assert spec.gates == ["errors", "latency", "estimated_error"]
    assert spec.margins == {"errors": 0.01, "latency": 0.05, "estimated_error": 0.05}
    with pytest.raises(RolloutInputError, match="gates: 'estimated_quality' needs a classifier; price is a regression model"):
        parse_start("price", {"candidate": 2, "primary": 1, "gates": ["errors", "estimated_quality"]}, registry, None)


def test_a_candidate_with_other_features_is_refused(registry):
    with pytest.raises(RolloutInputError, match="candidate: version 3 takes other inputs than version 1"):
        parse_start("price", {"candidate": 3, "primary": 1}, registry, None)
    # Without a primary named, it is the newest other version: 3 here, which takes other inputs.
    with pytest.raises(RolloutInputError, match="candidate: version 2 takes other inputs than version 3"):
        parse_start("price", {"candidate": 2}, registry, None)


def test_a_sticky_feature_is_one_of_the_models_features(registry):
    spec = parse_start("price", {"candidate": 2, "primary": 1, "sticky_feature": "b"}, registry, None)
    assert (spec.sticky_feature, spec.sticky_header) == ("b", None)
    assert parse_start("price", {"candidate": 2, "primary": 1}, registry, None).sticky_feature is None
    with pytest.raises(RolloutInputError, match=r"sticky_feature: 'e' is not a feature of price version 1; its features: \['a', 'b', 'c', 'd'\]"):
        parse_start("price", {"candidate": 2, "primary": 1, "sticky_feature": "e"}, registry, None)
    with pytest.raises(RolloutInputError, match="sticky_feature: give sticky_header or sticky_feature, not both"):
        parse_start("price", {"candidate": 2, "primary": 1, "sticky_feature": "b", "sticky_header": "x-id"}, registry, None)


def test_the_drift_gate_needs_both_versions_validation_predictions(registry):
    """A version registered without validation data has no outputs on held-out rows to drift
    from (its training rows' would look too confident): the gate does not apply."""
    primary, candidate = registry.card("price", 1), registry.card("price", 2)
    assert GATES["drift"].applies_to(primary, candidate) is None
    profile = candidate.reference_profile
    assert profile is not None and profile.predictions_from_validation
    trained_only = candidate.model_copy(update={"reference_profile": profile.model_copy(update={"predictions_from_validation": False})})
    assert GATES["drift"].applies_to(primary, trained_only) == (
        "'drift' compares each version's predictions with its outputs on its validation rows; version(s) [2] of "
        "price were registered without validation data")
    bare = candidate.model_copy(update={"reference_profile": None})
    assert "version(s) [2]" in str(GATES["drift"].applies_to(primary, bare))
    assert GATES["estimated_quality"].applies_to(primary, candidate) == "'estimated_quality' needs a classifier; price is a regression model"


def test_the_drift_gate_is_refused_where_the_validation_rows_leave_it_no_room(registry):
    """300 validation rows in 10 bins leave each version's drift uncertain by up to 0.37
    however much traffic comes (drift_floor: the distance interval's top on unlimited traffic
    like the validation rows, by sequential.distance_interval): at the default margin 0.2 the
    gate could never pass, so asking for it is a 400 that says what would do; a margin of
    twice the floor is accepted."""
    card = registry.card("price", 1)
    assert card.reference_profile is not None and card.reference_profile.predicted_values is not None
    values = card.reference_profile.predicted_values
    # Its 10 bins' shares, then NaN predictions' (none among the validation predictions).
    shares = [x * (1 - values.missing_share) for x in values.shares] + [values.missing_share]
    assert values.missing_share == 0.0
    floor = distance_interval([x * 1e12 for x in shares], shares, 0.05 / 4 / 2, 300)[1]
    assert drift_floor(card, 0.05 / 4 / 2) == pytest.approx(floor)
    assert 0.3 < floor < 0.45
    asked = {"candidate": 2, "primary": 1, "gates": ["errors", "latency", "estimated_error", "drift"]}
    with pytest.raises(RolloutInputError, match=rf"gates: 'drift' cannot decide at margin 0.2: .*rows by version: 1: 300, 2: 300.* uncertain by up to {floor:.3f}; give margins.drift of at least {2 * floor:.2f}"):
        parse_start("price", asked, registry, None)
    with pytest.raises(RolloutInputError, match=r"'drift' cannot decide at margin 0\.3"):
        parse_start("price", {"candidate": 2, "primary": 1, "margins": {"drift": 0.3}}, registry, None)
    spec = parse_start("price", {**asked, "margins": {"drift": round(2 * floor + 0.01, 2)}}, registry, None)
    assert "drift" in spec.gates


def test_the_cli_help_and_the_openapi_schema_name_every_gate():
    """The CLI's help is static text (it loads without the serving stack) and the OpenAPI
    schema an enum: both must list every registered gate, and the CLI the defaults."""
    from typer.testing import CliRunner

    from modelmon.cli import app
    from modelmon.serving.openapi import openapi_document
    from modelmon.serving.rollout_gates import DEFAULT_GATES

    text = " ".join(CliRunner().invoke(app, ["rollout", "start", "--help"], env={"COLUMNS": "400"}).output.split())
    for name in GATES:
        assert name in text, name
    assert "default: " + ",".join(g for g in DEFAULT_GATES if g != "estimated_error") in text
    schema = str(openapi_document(False, False, {"m": ["1"]}))
    assert str(list(GATES)) in schema
