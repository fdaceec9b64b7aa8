"""Recording rules for a regressor's error over a window, realized (from labels) and
estimated (label-free), per model version across the fleet; with their promtool test.

Every replica exports sums (``monitoring.tasks.RegressionLabels`` and ``RegressionCounts``),
so a window's figure is a ratio of the sums' exact windowed changes over all replicas (as
``modelmon.rules.drift`` takes them): with n labelled predictions, errors e = predicted -
true and true values y,

- MAE = sum |e| / n, RMSE = sqrt(sum e² / n), bias (mean error) = sum e / n;
- R² = 1 - sum e² / (sum y² - (sum y)² / n), scikit-learn's ``r2_score`` (no value when
  the window's true values are all equal, where scikit-learn's is not meaningful either);
- estimated MAE = sum of expected |e| / estimated rows, estimated RMSE = sqrt(sum of
  expected e² / estimated rows), from each prediction's expected errors (the loss estimator
  fitted at registration).

Names follow Prometheus' ``level:metric:operations`` convention: ``model_version:`` is the
aggregation level (by model and version within one deployment: cluster, namespace and
job kept, replicas summed), the metric is the family's name,
the operation says what was done over the window (``increase1h``, ``mean1h``,
``rootmean1h``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelmon.rules.drift import check_window, pd_minutes, windowed
from modelmon.rules.quality import BY_VERSION  # a deployment's replicas, never two deployments

LEVEL = "model_version"

#: Each summed family (the counter, without ``_total``), in the order of the promtool
#: test's input.
SUMS = (
    "modelmon_regression_labelled",
    "modelmon_regression_error",
    "modelmon_regression_absolute_error",
    "modelmon_regression_squared_error",
    "modelmon_regression_target",
    "modelmon_regression_target_squared",
    "modelmon_regression_estimated",
    "modelmon_regression_expected_absolute_error",
    "modelmon_regression_expected_squared_error",
)


def increase(metric: str, w: str) -> str:
    """The recorded name of a family's windowed change, summed over replicas."""
    return f"{LEVEL}:{metric}:increase{w}"


def regression_rule_group(window: str = "1h") -> dict[str, Any]:
    """One rule group: the window's sums, then MAE, RMSE, bias, R² and the estimates."""
    w = check_window(window)
    n = increase("modelmon_regression_labelled", w)
    estimated = increase("modelmon_regression_estimated", w)

    def per(metric: str, rows: str) -> str:
        return f"{increase(metric, w)} / ({rows} > 0)"

    sst = (
        f"({increase('modelmon_regression_target_squared', w)} - "
        f"{increase('modelmon_regression_target', w)} ^ 2 / ({n} > 0))"
    )
    rules = [{"record": increase(m, w), "expr": f"sum by ({BY_VERSION}) {windowed(m + '_total', w)}"} for m in SUMS]
    rules += [
        {"record": f"{LEVEL}:modelmon_regression_absolute_error:mean{w}", "expr": per("modelmon_regression_absolute_error", n)},
        {"record": f"{LEVEL}:modelmon_regression_squared_error:rootmean{w}",
         "expr": f"sqrt({per('modelmon_regression_squared_error', n)})"},
        {"record": f"{LEVEL}:modelmon_regression_error:mean{w}", "expr": per("modelmon_regression_error", n)},
        {"record": f"{LEVEL}:modelmon_regression_r2:{w}",
         "expr": f"1 - {increase('modelmon_regression_squared_error', w)} / ({sst} > 0)"},
        {"record": f"{LEVEL}:modelmon_regression_expected_absolute_error:mean{w}",
         "expr": per("modelmon_regression_expected_absolute_error", estimated)},
        {"record": f"{LEVEL}:modelmon_regression_expected_squared_error:rootmean{w}",
         "expr": f"sqrt({per('modelmon_regression_expected_squared_error', estimated)})"},
    ]
    return {"name": f"modelmon-regression-{w}", "rules": rules}


def regression_rules_test(rule_file: str, window: str = "1h", seed: int = 0) -> dict[str, Any]:
    """A promtool test: two replicas' sums from seeded rows (and sums before the window, which
    the rules must leave out); the rules must give scikit-learn's MAE, RMSE, R² and the mean
    error on the pooled rows, and the pooled estimate's ratios."""
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    w = check_window(window)
    minutes = int(pd_minutes(w))
    rng = np.random.default_rng(seed)
    rows = 400
    y_true = rng.normal(50.0, 12.0, rows)
    y_pred = y_true + rng.normal(1.5, 4.0, rows)  # biased: the mean error is about 1.5
    expected_abs = np.abs(rng.normal(3.0, 1.0, rows))
    expected_sq = expected_abs**2 * 1.3
    replica = rng.integers(0, 2, rows)
    labels = 'model="m", version="1"'
    series = []
    for instance in (0, 1):
        mine = replica == instance
        e, y = (y_pred - y_true)[mine], y_true[mine]
        values = (mine.sum(), e.sum(), np.abs(e).sum(), (e**2).sum(), y.sum(), (y**2).sum(),
                  mine.sum(), expected_abs[mine].sum(), expected_sq[mine].sum())
        for metric, value in zip(SUMS, values, strict=True):
            start = 11.0 + instance  # before the window
            series.append({
                "series": f'{metric}_total{{{labels}, instance="r{instance}"}}',
                "values": f"{start!r}+0x{minutes - 1} {start + float(value)!r}",
            })
    at = f"{minutes}m"

    def close(record: str, value: float) -> dict[str, Any]:
        bound = 1e-9 * max(1.0, abs(value))
        return {"expr": f"abs({record} - {value!r}) < bool {bound!r}", "eval_time": at,
                "exp_samples": [{"labels": f"{{{labels}}}", "value": 1}]}

    tests = [
        close(f"{LEVEL}:modelmon_regression_absolute_error:mean{w}", float(mean_absolute_error(y_true, y_pred))),
        close(f"{LEVEL}:modelmon_regression_squared_error:rootmean{w}", float(np.sqrt(mean_squared_error(y_true, y_pred)))),
        close(f"{LEVEL}:modelmon_regression_error:mean{w}", float(np.mean(y_pred - y_true))),
        close(f"{LEVEL}:modelmon_regression_r2:{w}", float(r2_score(y_true, y_pred))),
        close(f"{LEVEL}:modelmon_regression_expected_absolute_error:mean{w}", float(expected_abs.mean())),
        close(f"{LEVEL}:modelmon_regression_expected_squared_error:rootmean{w}", float(np.sqrt(expected_sq.mean()))),
        {"expr": increase("modelmon_regression_labelled", w), "eval_time": at,
         "exp_samples": [{"labels": f"{increase('modelmon_regression_labelled', w)}{{{labels}}}", "value": float(rows)}]},
    ]
    return {"rule_files": [rule_file], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}]}
