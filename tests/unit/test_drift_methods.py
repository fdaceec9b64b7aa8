"""The table of drift methods (monitoring/methods.py) is the one source of their names,
kinds, directions and default thresholds: the server's settings and verdicts, the alerting
config, the built-in rules' fixtures and the dashboards all read it."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from modelmon.alerting import builtins
from modelmon.alerting.config import AlertingConfigError, parse_config
from modelmon.dashboards import catalog
from modelmon.monitoring import methods
from modelmon.monitoring.drift import PVALUE_METHODS, DriftSettings, is_drift
from modelmon.monitoring.families import FEATURE_DRIFT
from modelmon.monitoring.methods import (
    METHODS,
    DriftMethod,
    get_method,
    method_names,
    register_method,
)

REPO = Path(__file__).resolve().parents[2]


def test_the_table_holds_the_methods_the_server_exports():
    assert list(METHODS) == ["psi", "js", "wasserstein", "ks", "chi2_pvalue"]
    assert method_names(direction="low") == ("ks", "chi2_pvalue")
    assert method_names(kind="numeric") == ("psi", "js", "wasserstein", "ks")
    assert method_names(kind="categorical") == ("psi", "js", "chi2_pvalue")
    for method in METHODS.values():
        assert method.kinds and set(method.kinds) <= {"numeric", "categorical"}
        assert method.direction in ("high", "low") and method.default_threshold > 0 and method.description


def test_settings_default_to_the_table_and_map_every_method():
    settings = DriftSettings()
    assert settings.thresholds() == methods.default_thresholds()
    for method in METHODS.values():
        assert method.setting in DriftSettings.model_fields
    custom = DriftSettings(psi_threshold=0.3, pvalue_threshold=0.05)
    assert custom.thresholds() == {"psi": 0.3, "js": 0.1, "wasserstein": 0.1, "ks": 0.05, "chi2_pvalue": 0.05}


def test_verdicts_follow_each_methods_direction():
    assert PVALUE_METHODS == {"ks", "chi2_pvalue"}
    assert is_drift("psi", 0.2, 0.2) and not is_drift("psi", 0.19, 0.2)
    assert is_drift("ks", 0.009, 0.01) and not is_drift("ks", 0.01, 0.01)
    assert not is_drift("chi2_pvalue", math.nan, 0.01) and not is_drift("js", math.nan, 0.1)
    with pytest.raises(KeyError, match="unknown drift method 'kl'"):
        get_method("kl")


def test_registering_checks_names_and_shared_settings():
    with pytest.raises(ValueError, match="registered twice"):
        register_method(DriftMethod("psi", ("numeric",), "high", 0.2, "psi_threshold", "again"))
    with pytest.raises(ValueError, match="share the setting pvalue_threshold"):
        register_method(DriftMethod("anderson", ("numeric",), "low", 0.05, "pvalue_threshold", "Anderson-Darling"))
    assert "anderson" not in METHODS


def test_the_alerting_config_accepts_the_tables_methods_and_names_the_key_of_others():
    config = parse_config({"builtins": {"feature_drift": {"methods": list(METHODS)}}})
    assert config.builtins.feature_drift.methods == list(METHODS)
    with pytest.raises(AlertingConfigError) as caught:
        parse_config({"builtins": {"feature_drift": {"methods": ["psi", "kl"]}}})
    message = caught.value.message
    assert "builtins.feature_drift.methods" in message and "[1]: Input should be 'psi', 'js', 'wasserstein', 'ks' or 'chi2_pvalue'" in message
    assert parse_config({}).builtins.prediction_drift.threshold == methods.PSI.default_threshold


def test_rule_fixture_scores_sit_on_either_side_of_every_default_threshold():
    for method in METHODS.values():
        drifted, steady = builtins.DRIFTED_SCORE[method.direction], builtins.STEADY_SCORE[method.direction]
        assert method.drifted(drifted, method.default_threshold), method.name
        assert not method.drifted(steady, method.default_threshold), method.name


def test_dashboards_and_metric_help_read_the_table():
    variable = next(v for v in catalog.drift().variables if v.name == "method")
    assert variable.options == tuple(METHODS)
    assert catalog.GOOD_RED[1].value == methods.PSI.default_threshold
    assert "ks and chi2_pvalue" in FEATURE_DRIFT.help


def test_the_docs_table_lists_every_method_with_its_default_threshold():
    text = (REPO / "docs" / "drift.md").read_text()
    for method in METHODS.values():
        row = re.search(rf"^\| `{method.name}` \|(.*)$", text, re.MULTILINE)
        assert row is not None, method.name
        sign = "<" if method.is_pvalue else ">="
        assert row.group(1).rstrip().endswith(f"| {sign} {method.default_threshold:g} |"), row.group(0)
