"""The exported Prometheus rules: promtool accepts them, and the generated promtool tests
prove every built-in rule fires on a violating input and stays quiet on a healthy one, for
the default thresholds and for others."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score, f1_score

from modelmon.alerting import builtins
from modelmon.alerting.builtins import Builder
from modelmon.alerting.config import AlertingConfig, parse_config
from modelmon.alerting.export import export
from modelmon.alerting.prometheus_rules import dump_yaml
from modelmon.rules import regression as regression_rules
from tests.alerting.conftest import require

CUSTOM = [
    {"name": "UnseenAmount", "metric": "modelmon_feature_unseen_total", "matchers": {"feature": "amount"},
     "aggregation": "rate", "comparator": ">", "threshold": 0.5, "window": "10m", "for": "5m", "labels": {"team": "risk"}},
    {"name": "FewRowsScored", "metric": "modelmon_drift_window_rows", "aggregation": "min", "comparator": "<",
     "threshold": 50, "window": "15m", "severity": "info"},
    {"name": "ManyErrorsToday", "metric": "modelmon_request_errors_total", "aggregation": "increase",
     "by": ["model"], "comparator": ">=", "threshold": 1000, "window": "1h"},
    {"name": "RawCondition", "expr": 'sum(modelmon_inflight_requests) > 100', "for": "1m"},
]


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def halves(directory: Path) -> list[str]:
    """Each test file's cases split in two files beside it (every other case; named so that
    ``*.test.yml`` still finds the originals only), so that two promtool processes share
    them: one runs its files' cases one after another, and this suite has two cores (the
    two tests below that check all cases: 26.8 -> 20.1 s on a busy 2-core machine)."""
    parts = []
    for path in sorted(directory.glob("*.test.yml")):
        content = yaml.safe_load(path.read_text())
        for half in (0, 1):
            name = f"{path.stem}.half{half}.yml"
            (directory / name).write_text(dump_yaml({**content, "tests": content["tests"][half::2]}))
            parts.append(name)
    return parts


def check_and_test(out: Path) -> None:
    rules = sorted(str(p) for p in (out / "prometheus").glob("*.rules.yml"))
    checked = promtool("check", "rules", *rules)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    parts = halves(out / "prometheus")
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(lambda files: promtool("test", "rules", *files, cwd=out / "prometheus"),
                             [parts[0::2], parts[1::2]]))
    for tested in runs:
        assert tested.returncode == 0, tested.stdout + tested.stderr


def cases_by_alert(out: Path) -> dict[str, list[int]]:
    """Alert name -> number of expected alerts of each of its test cases."""
    found: dict[str, list[int]] = {}
    for path in (out / "prometheus").glob("*.test.yml"):
        for test in yaml.safe_load(path.read_text())["tests"]:
            for check in test["alert_rule_test"]:
                found.setdefault(check["alertname"], []).append(len(check["exp_alerts"]))
    return found


def test_default_rules_pass_promtool_and_every_builtin_is_proven_both_ways(tmp_path):
    require("promtool")
    result = export(AlertingConfig(), tmp_path, alertmanager_files=False)
    check_and_test(tmp_path)
    cases = cases_by_alert(tmp_path)
    for names in builtins.NAMES.values():
        for name in names:
            assert any(n > 0 for n in cases[name]), f"{name} has no firing case"
            assert name == builtins.WATCHDOG or any(n == 0 for n in cases[name]), f"{name} has no quiet case"
    groups = yaml.safe_load((tmp_path / "prometheus" / "modelmon-drift.rules.yml").read_text())["groups"]
    assert [g["name"] for g in groups] == ["modelmon-drift-1h"]  # the fleet recording rules come along
    groups = yaml.safe_load((tmp_path / "prometheus" / "modelmon-quality.rules.yml").read_text())["groups"]
    assert [g["name"] for g in groups] == ["modelmon-quality-1h"]
    groups = yaml.safe_load((tmp_path / "prometheus" / "modelmon-regression.rules.yml").read_text())["groups"]
    assert [g["name"] for g in groups] == ["modelmon-regression-1h"]  # what `modelmon rules export` writes
    assert groups[0]["rules"] == regression_rules.regression_rule_group("1h")["rules"]
    alerts = yaml.safe_load((tmp_path / "prometheus" / "modelmon-alerts.rules.yml").read_text())["groups"][0]["rules"]
    assert [a["alert"] for a in alerts] == result.alert_names
    for alert in alerts:
        # ModelmonFeatureDrift reports its deciding method as an annotation, not a label;
        # ModelmonRolloutRolledBack its rolled-back candidate.
        extra = {"ModelmonFeatureDrift": {"method"}, "ModelmonRolloutRolledBack": {"candidate"}}.get(alert["alert"], set())
        assert set(alert["annotations"]) == {"summary", "description", "value", "threshold", "runbook_url"} | extra
        assert "$value" in alert["annotations"]["description"], alert["alert"]
        assert alert["annotations"]["runbook_url"].endswith("#" + alert["alert"].lower())
        # The raw contract metrics only, but for the fleet drift alert (exported with its rules).
        assert ":" not in alert["expr"].replace(":1m]", "").replace(":1h]", "") or alert["alert"] == "ModelmonFleetFeatureDrift", alert["alert"]


def test_other_thresholds_and_custom_rules_are_proven_too(tmp_path):
    require("promtool")
    config = parse_config({
        "prometheus": {"job": "ml-serving", "recording_windows": ["30m", "1d"]},
        "builtins": {
            "target_down": {"for": "3m", "labels": {"team": "platform"}},
            "error_ratio": {"threshold": 0.2, "window": "10m", "severity": "warning"},
            "latency_p99": {"threshold": 2.0, "quantile": 0.95, "for": "1m"},
            "feature_drift": {"methods": ["psi", "ks", "wasserstein"], "for": "30m"},
            "dataset_drift": {"threshold": 0.3},
            "prediction_drift": {"threshold": 0.1, "for": "0s"},
            "realized_quality": {"margin": 0.1, "window": "1h", "min_labels": 5000, "metrics": ["f1_macro"]},
            "estimated_accuracy": {"margin": 0.02, "window": "3h", "min_rows": 20},
            "realized_error": {"margin": 0.5, "window": "1h", "min_labels": 200, "metrics": ["rmse"]},
            "estimated_error": {"margin": 0.1, "window": "3h", "min_rows": 50},
            "label_coverage": {"threshold": 0.5, "window": "6h", "require_some_labels": False, "min_predictions": 10},
            "training_nan_loss": {"metrics": ["loss", "val_loss"]},
            "training_plateau": {"patience": 3, "lookback": "2h", "split": "val", "metric": "loss"},
            "training_stalled": {"threshold": 300, "for": "1m"},
        },
        "rules": CUSTOM,
    })
    result = export(config, tmp_path, alertmanager_files=False)
    check_and_test(tmp_path)
    cases = cases_by_alert(tmp_path)
    assert "ModelmonAccuracyBelowBaseline" not in result.alert_names  # only f1_macro asked for
    assert "ModelmonMAEAboveBaseline" not in result.alert_names  # only rmse asked for
    assert sorted(cases["ModelmonRMSEAboveBaseline"]) == [0, 0, 1]  # at the baseline; too few labels
    for name in ("UnseenAmount", "FewRowsScored", "ManyErrorsToday"):
        assert sorted(cases[name]) == [0, 1], name
    assert "RawCondition" not in cases and any("RawCondition" in n for n in result.notes)
    groups = yaml.safe_load((tmp_path / "prometheus" / "modelmon-drift.rules.yml").read_text())["groups"]
    assert [g["name"] for g in groups] == ["modelmon-drift-30m", "modelmon-drift-1d"]
    groups = yaml.safe_load((tmp_path / "prometheus" / "modelmon-quality.rules.yml").read_text())["groups"]
    assert [g["name"] for g in groups] == ["modelmon-quality-30m", "modelmon-quality-1d"]
    groups = yaml.safe_load((tmp_path / "prometheus" / "modelmon-regression.rules.yml").read_text())["groups"]
    assert [g["name"] for g in groups] == ["modelmon-regression-30m", "modelmon-regression-1d"]


@pytest.mark.parametrize(
    ("alert", "old", "new"),
    [
        ("ModelmonHighErrorRatio", ") > 0.05", ") > 0.5"),           # a threshold off by ten
        ("ModelmonFeatureDrift", "modelmon_drift_window_rows <= 1000", "modelmon_drift_window_rows <= 100"),  # verdict rule
        ("ModelmonLowLabelCoverage", ") < 0.1", ") > 0.1"),           # comparison inverted
        ("ModelmonTrainingLossNaN", "!=", "=="),                      # NaN test lost
        ("ModelmonMAEAboveBaseline", "* 1.2)", "* 2.2)"),              # margin off by five
        ("ModelmonEstimatedRMSEAboveBaseline", ">= 500", ">= 5"),      # the rows floor lost
        # A regressor's output="value" is what makes the alert cover regression models.
        ("ModelmonPredictionDrift", 'output=~"class|value"', 'output="class"'),
    ],
)
def test_a_broken_rule_fails_its_generated_test(tmp_path, alert, old, new):
    """The generated tests are not vacuous: damage one rule and promtool reports it."""
    require("promtool")
    export(AlertingConfig(), tmp_path, alertmanager_files=False)
    rule_file = tmp_path / "prometheus" / "modelmon-alerts.rules.yml"
    content = yaml.safe_load(rule_file.read_text())
    rule = next(r for r in content["groups"][0]["rules"] if r["alert"] == alert)
    assert old in rule["expr"]
    rule["expr"] = rule["expr"].replace(old, new)
    rule_file.write_text(dump_yaml(content))
    # Only this rule's cases, so the check stays quick.
    for path in sorted((tmp_path / "prometheus").glob("*.test.yml")):
        test = yaml.safe_load(path.read_text())
        test["tests"] = [t for t in test["tests"] if t["name"].startswith(f"{alert}:")]
        if test["tests"]:
            (tmp_path / "prometheus" / f"only-{path.name}").write_text(dump_yaml(test))
    tests = sorted(p.name for p in (tmp_path / "prometheus").glob("only-*.test.yml"))
    tested = promtool("test", "rules", *tests, cwd=tmp_path / "prometheus")
    assert tested.returncode != 0
    assert alert in tested.stdout + tested.stderr


def test_accuracy_and_macro_f1_from_confusion_cells_equal_scikit_learn(tmp_path):
    """On three classes (one never predicted, one never seen as a label) and a fourth class
    with no rows at all, the PromQL accuracy and macro F1 equal scikit-learn's."""
    require("promtool")
    rng = np.random.default_rng(3)
    y_true = rng.choice(["a", "b", "c"], 500, p=[0.5, 0.3, 0.2])
    y_pred = np.where(rng.random(500) < 0.7, y_true, rng.choice(["a", "b", "d"], 500))
    y_pred = np.where(y_pred == "c", "a", y_pred)  # "c" is never predicted, "d" never a label
    classes = ["a", "b", "c", "d", "e"]  # "e": a class of the model that occurs nowhere
    builder = Builder(parse_config({"builtins": {"realized_quality": {"window": "1h"}}}))
    parts = builder._confusion("modelmon_confusion_total", "1h")
    accuracy = f"{parts['correct']} / {parts['total']}"
    f1 = (f"avg by (model, version) (2 * ({parts['tp']} or {parts['row']} * 0)"
          f" / (({parts['row']} + {parts['col']}) > 0))")
    rules = {rule.name: rule.expr for rule in builder.build()}
    assert parts["correct"] in rules["ModelmonAccuracyBelowBaseline"] and parts["tp"] in rules["ModelmonF1BelowBaseline"]
    series = []
    for actual in classes:
        for predicted in classes:
            count = int(np.sum((y_true == actual) & (y_pred == predicted)))
            labels = f'model="m", version="1", actual="{actual}", predicted="{predicted}", instance="r:1"'
            series.append({"series": f"modelmon_confusion_total{{{labels}}}", "values": f"0 0+{count}x60"})
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [
                {"expr": f"abs(({accuracy}) - {accuracy_score(y_true, y_pred)!r}) < bool 1e-12", "eval_time": "61m",
                 "exp_samples": [{"labels": '{model="m", version="1"}', "value": 1}]},
                {"expr": f"abs(({f1}) - {f1_score(y_true, y_pred, average='macro')!r}) < bool 1e-12", "eval_time": "61m",
                 "exp_samples": [{"labels": '{model="m", version="1"}', "value": 1}]},
            ],
        }],
    }
    (tmp_path / "quality.test.yml").write_text(dump_yaml(test))
    tested = promtool("test", "rules", "quality.test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr


FLEET = "cluster, namespace, job, model, version"
#: The rules as exported before issue 23 (grouped by FLEET, and counting rows predicted as
#: the cases feed them, modelmon_batch_size_sum, so that only their logic differs), and the
#: generated cases each must fail.
OLD_RULES = {
    "ModelmonHighErrorRatio": (
        f'(\n  sum by ({FLEET}) (rate(modelmon_request_errors_total{{model!="_unknown_"}}[5m]))\n  /\n'
        f'  sum by ({FLEET}) (rate(modelmon_requests_total{{model!="_unknown_", endpoint=~"infer|predict"}}[5m]))\n) > 0.05',
        ["client errors and /feedback errors do not count", "a burst shorter than the long window",
         "under the traffic floor (100 requests in 1h)"],
    ),
    "ModelmonLowLabelCoverage": (
        f'(\n  sum by ({FLEET}) (increase(modelmon_feedback_total{{outcome="matched"}}[1d]))\n  /\n'
        f'  sum by ({FLEET}) (increase(modelmon_batch_size_sum[1d]))\n) < 0.1\n'
        f'and on ({FLEET}) (sum by ({FLEET}) (increase(modelmon_batch_size_sum[1d])) >= 100)\n'
        f'and on ({FLEET}) (sum by ({FLEET}) (modelmon_feedback_total{{outcome="matched"}}) > 0)',
        ["restart with the label feed dead"],
    ),
    "ModelmonTargetDown": (
        '(\n  (up{job="modelmon"} == 0)\n  * on (instance, job) group_right ()\n'
        '  max by (instance, job, model, version) (last_over_time(modelmon_model_info{job="modelmon"}[1h]))\n)\n'
        'or on (instance, job)\n(up{job="modelmon"} == 0)',
        ["2 of 20 targets down (not more than 10%)", "4 of 20 targets down"],
    ),
}


@pytest.mark.parametrize("alert", sorted(OLD_RULES))
def test_the_rules_before_issue_23_fail_the_new_cases(tmp_path, alert):
    """Each defect of issue 23 is a generated case the old rule fails, and only those: the
    error ratio counted client and /feedback errors and had no traffic floor and no long
    window; label coverage went silent after a restart; TargetDown paged for one replica."""
    require("promtool")
    export(AlertingConfig(), tmp_path, alertmanager_files=False)
    rule_file = tmp_path / "prometheus" / "modelmon-alerts.rules.yml"
    content = yaml.safe_load(rule_file.read_text())
    rule = next(r for r in content["groups"][0]["rules"] if r["alert"] == alert)
    old, failing = OLD_RULES[alert]
    rule["expr"] = old
    rule_file.write_text(dump_yaml(content))
    names = []
    for path in sorted((tmp_path / "prometheus").glob("*.test.yml")):
        test = yaml.safe_load(path.read_text())
        test["tests"] = [t for t in test["tests"] if t["name"].startswith(f"{alert}:")]
        names += [t["name"] for t in test["tests"]]
        if test["tests"]:
            (tmp_path / "prometheus" / f"only-{path.name}").write_text(dump_yaml(test))
    tests = sorted(p.name for p in (tmp_path / "prometheus").glob("only-*.test.yml"))
    tested = promtool("test", "rules", *tests, cwd=tmp_path / "prometheus")
    output = tested.stdout + tested.stderr
    assert tested.returncode != 0
    failed = sorted(n for n in names if f"name: {n}," in output)
    assert failed == sorted(f"{alert}: {case}" for case in failing), output


def test_fleet_drift_false_alarm_rate_as_documented():
    """docs/alerting.md: on undrifted data with equal-share reference bins (numeric features:
    quantile bins), n * PSI over k bins is about chi-square with k - 1 degrees of freedom, so
    with 500 rows (min_rows) the 0.2 threshold is chi2 >= 100: under 6e-13 a window for up to
    20 bins. Checked by simulation (the 99.9% quantile of n * PSI within 10% of scipy's
    chi-square quantile). Skewed categorical shares (a 0.4% category) have a heavier tail,
    where the approximation does not hold: 20,000 undrifted windows still never reach 0.2
    (under 1.5e-4 a window, by the rule of three)."""
    from scipy.stats import chi2

    from modelmon.monitoring import drift_stats

    rng = np.random.default_rng(23)
    for reference, chi_square in ((np.full(20, 0.05), True), (rng.dirichlet(np.ones(20)), False)):
        counts = rng.multinomial(500, reference, size=20_000)
        psi = np.array([drift_stats.psi(reference, c) for c in counts])
        assert psi.max() < 0.2
        if chi_square:
            assert abs(np.quantile(500 * psi, 0.999) / chi2.isf(0.001, 19) - 1) < 0.1
        else:
            assert reference.min() < 0.005  # the skewed case has a rare category
    assert chi2.sf(0.2 * 500, 19) < 6e-13


def test_alerts_link_to_their_dashboard_when_grafana_url_is_set(tmp_path):
    """Issue 23, item 9: dashboard_url on every built-in alert, on its model and version; the
    generated promtool cases expect it rendered, so promtool proves the template."""
    require("promtool")
    config = parse_config({"grafana": {"url": "https://grafana.example/"}})
    export(config, tmp_path, alertmanager_files=False)
    alerts = {a["alert"]: a for a in yaml.safe_load((tmp_path / "prometheus" / "modelmon-alerts.rules.yml").read_text())["groups"][0]["rules"]}
    assert alerts["ModelmonHighErrorRatio"]["annotations"]["dashboard_url"] == (
        "https://grafana.example/d/modelmon-serving?var-model={{ $labels.model }}&var-version={{ $labels.version }}")
    assert alerts["ModelmonFleetFeatureDrift"]["annotations"]["dashboard_url"].startswith("https://grafana.example/d/modelmon-drift?")
    assert alerts["ModelmonTrainingLossNaN"]["annotations"]["dashboard_url"].startswith("https://grafana.example/d/modelmon-training?var-experiment=")
    assert all("dashboard_url" in a["annotations"] for a in alerts.values())
    tests = sorted(p.name for p in (tmp_path / "prometheus").glob("*.test.yml"))
    short = yaml.safe_load((tmp_path / "prometheus" / tests[-1]).read_text())
    short["tests"] = [t for t in short["tests"] if t["name"].startswith("ModelmonHighErrorRatio:")]
    (tmp_path / "prometheus" / "only.test.yml").write_text(dump_yaml(short))
    tested = promtool("test", "rules", "only.test.yml", cwd=tmp_path / "prometheus")
    assert tested.returncode == 0, tested.stdout + tested.stderr


OLD_FEATURE_DRIFT = """max by (cluster, namespace, job, model, version, feature, method) (
  (modelmon_feature_drift{method=~"psi"} >= modelmon_feature_drift_threshold{method=~"psi"})
  and ignoring (feature, method) (modelmon_drift_window_rows > 1000)
)
or
min by (cluster, namespace, job, model, version, feature, method) (
  (modelmon_feature_drift{method=~"ks|chi2_pvalue"} < modelmon_feature_drift_threshold{method=~"ks|chi2_pvalue"})
  and ignoring (feature, method) (modelmon_drift_window_rows <= 1000)
)"""


def test_feature_drift_is_one_alert_across_the_ks_to_psi_switch(tmp_path):
    """Issue 23, item 4. The generated case "the window passes 1000 rows mid-episode" expects
    the alert still firing less than `for` after the switch, without a method label. The rule
    before (method in its labels) fails it: on the same input its ks alert fired before the
    switch and, after it, nothing fires (the ks alert resolved, the psi one is pending)."""
    require("promtool")
    rule = next(r for r in Builder(AlertingConfig()).build() if r.name == "ModelmonFeatureDrift")
    case = next(c for c in rule.cases if "mid-episode" in c.name)
    (fired,) = case.alerts
    assert "method" not in fired[0] and fired[1]["method"] == "psi"
    switch = 15 + 3  # the default for (15m) + 3: the case's switch minute
    rows = next(v for s, v in case.series if s.startswith("modelmon_drift_window_rows"))
    assert rows.split()[1].startswith("2000x") and rows.startswith(f"200x{switch - 1} ")
    old = {"groups": [{"name": "old", "rules": [{"alert": "Old", "expr": OLD_FEATURE_DRIFT, "for": "15m"}]}]}
    (tmp_path / "old.rules.yml").write_text(dump_yaml(old))
    labels = {"job": "modelmon", "model": "shop", "version": "1", "feature": "amount"}
    test = {"rule_files": ["old.rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": s, "values": v} for s, v in case.series],
        "alert_rule_test": [
            {"eval_time": f"{switch - 1}m", "alertname": "Old", "exp_alerts": [{"exp_labels": {**labels, "method": "ks"}}]},
            {"eval_time": f"{case.eval_minutes}m", "alertname": "Old", "exp_alerts": []},
        ],
    }]}
    (tmp_path / "old.test.yml").write_text(dump_yaml(test))
    tested = promtool("test", "rules", "old.test.yml", cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
