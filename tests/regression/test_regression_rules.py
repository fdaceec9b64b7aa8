"""The regression recording rules (modelmon.rules.regression) under promtool: they pass
their generated test (scikit-learn's MAE, RMSE, R² and mean error on the pooled rows of two
replicas, and the estimate's ratios), and that test fails when a rule is one percent off."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from modelmon.rules.drift import dump_yaml
from modelmon.rules.regression import regression_rule_group, regression_rules_test


def promtool(*args, cwd):
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd)


def write(tmp_path, windows=("1h",)):
    (tmp_path / "regression.rules.yml").write_text(dump_yaml({"groups": [regression_rule_group(w) for w in windows]}))
    for w in windows:
        (tmp_path / f"regression-{w}.test.yml").write_text(dump_yaml(regression_rules_test("regression.rules.yml", w)))


def test_rules_pass_promtool_check_and_their_tests(tmp_path):
    write(tmp_path, ("1h", "10m"))
    check = promtool("check", "rules", "regression.rules.yml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 30 rules found" in check.stdout  # 9 sums and 6 figures per window
    run = promtool("test", "rules", "regression-1h.test.yml", "regression-10m.test.yml", cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(
    "record",
    [":modelmon_regression_absolute_error:mean", ":modelmon_regression_squared_error:rootmean",
     ":modelmon_regression_error:mean", ":modelmon_regression_r2:",
     ":modelmon_regression_expected_absolute_error:mean", ":modelmon_regression_expected_squared_error:rootmean"],
)
def test_the_test_fails_against_a_wrong_rule(tmp_path, record):
    write(tmp_path)
    path = tmp_path / "regression.rules.yml"
    rules = yaml.safe_load(path.read_text())
    changed = 0
    for rule in rules["groups"][0]["rules"]:
        if record in rule["record"]:
            rule["expr"] = f"1.01 * ({rule['expr']})"
            changed += 1
    assert changed == 1
    path.write_text(yaml.safe_dump(rules))
    run = promtool("test", "rules", "regression-1h.test.yml", cwd=tmp_path)
    assert run.returncode != 0 and record in run.stdout + run.stderr
