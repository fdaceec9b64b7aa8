"""`modelmon rules export` writes rules that promtool accepts, and tests that promtool runs
and that fail when the rules compute the wrong thing."""

import shutil
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow


def export(out_dir, *windows):
    args = [a for w in windows for a in ("--window", w)]
    result = subprocess.run([sys.executable, "-m", "modelmon.cli", "rules", "export", str(out_dir), *args],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return sorted(out_dir.glob("*.test.yml"))


def promtool(*args, cwd):
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=cwd)


def test_exported_rules_pass_promtool_check_and_their_tests(tmp_path):
    tests = export(tmp_path, "1h", "10m")
    assert len(tests) == 6  # drift, quality and regression, per window
    check = promtool("check", "rules", "modelmon-drift.rules.yml", "modelmon-quality.rules.yml", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    # Each rule once under its level:metric:operations name and once under its name before
    # issue 23 (modelmon:<what>:<window>), an alias kept one release.
    assert "SUCCESS: 24 rules found" in check.stdout  # drift: 6 + 6 aliases per window
    assert "SUCCESS: 84 rules found" in check.stdout  # quality: 21 + 21 aliases per window
    run = promtool("test", "rules", *[t.name for t in tests], cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.fixture(scope="module")
def exported_1h(tmp_path_factory):
    """One export of the 1h rules and tests for every wrong-rule case below (each edits a copy):
    an export is a CLI process, about 2.9 s of CPU here, against 0.2-0.4 s for promtool's run."""
    out = tmp_path_factory.mktemp("rules-1h")
    export(out, "1h")
    return out


@pytest.mark.parametrize(
    ("kind", "record"),
    [("drift", "model_version_feature:modelmon_feature_bin:psi"), ("quality", "model_version_class:modelmon_confusion:f1_"),
     ("quality", "model_version:modelmon_confusion:accuracy"), ("drift", "modelmon:feature_drift_psi:"),
     ("quality", "model_version:modelmon_feedback_matched:ratio_predictions")],
)
def test_generated_test_fails_against_a_wrong_rule(tmp_path, exported_1h, kind, record):
    shutil.copytree(exported_1h, tmp_path, dirs_exist_ok=True)
    rules_path = tmp_path / f"modelmon-{kind}.rules.yml"
    rules = yaml.safe_load(rules_path.read_text())
    for rule in rules["groups"][0]["rules"]:
        if rule["record"].startswith(record):
            rule["expr"] = f"1.01 * ({rule['expr']})"  # one percent off
    rules_path.write_text(yaml.safe_dump(rules))
    run = promtool("test", "rules", f"modelmon-{kind}-1h.test.yml", cwd=tmp_path)
    assert run.returncode != 0 and record.rstrip(":") in run.stdout + run.stderr


def test_bad_window_is_refused_with_a_message(tmp_path):
    result = subprocess.run([sys.executable, "-m", "modelmon.cli", "rules", "export", str(tmp_path), "--window", "soon"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "Prometheus duration" in result.stderr
