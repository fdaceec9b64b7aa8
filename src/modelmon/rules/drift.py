"""Prometheus recording rules for fleet-wide drift, and promtool tests that prove them.

Every replica exports the same bins with its own counts; these rules sum the counts over
all replicas for a window and compute PSI and Jensen-Shannon per feature, the same formulas
as ``drift_stats``.

Windowed counts are taken as ``(x - x offset W) >= 0 or x`` rather than ``increase(x[W])``:
``increase`` extrapolates each series to the window's edges, and replicas are scraped at
different moments, so pooled shares built from it are only approximate. The difference of
two samples is exact. A replica that restarted inside the window has a negative difference;
for it the rules fall back to its count since the restart, so its rows from before the
restart are left out of that window (an undercount, never a double count).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import yaml

from modelmon.monitoring import drift_stats

#: Kept labels: a version of a model in one deployment (cluster, namespace, job: the same model
#: name in staging and production is never pooled; labels a setup lacks are empty).
BY_FEATURE = "cluster, namespace, job, model, version, feature"
BY_BIN = "cluster, namespace, job, model, version, feature, bin"
WINDOW_PATTERN = re.compile(r"^\d+[smhdw]$")


def name(kind: str, window: str) -> str:
    """A drift recording rule's name, ``level:metric:operations`` (Prometheus' convention):
    the labels kept, the counter it derives from, and what was done over which window."""
    level, operation = {
        "bin_rows": ("model_version_feature_bin", "increase"),
        "rows": ("model_version_feature", "increase"),
        "ratio": ("model_version_feature_bin", "ratio"),
        "psi": ("model_version_feature", "psi"),
        "mid": ("model_version_feature_bin", "js_mid"),
        "js": ("model_version_feature", "js"),
    }[kind]
    return f"{level}:modelmon_feature_bin:{operation}{window}"


#: The names before the rename (``modelmon:<what>:<window>``), recorded as aliases of the new
#: ones for one release (docs/metrics.md, *Changes*).
OLD_NAMES = {"bin_rows": "feature_bin_window_rows", "rows": "feature_window_rows", "ratio": "feature_bin_window_ratio",
             "psi": "feature_drift_psi", "mid": "feature_bin_window_mid", "js": "feature_drift_js"}


def aliases(names: dict[str, str], old: dict[str, str], window: str) -> list[dict[str, str]]:
    """``modelmon:<old>:<window>`` recorded as a copy of each renamed rule (deprecated)."""
    return [{"record": f"modelmon:{old[kind]}:{window}", "expr": names[kind]} for kind in old]


def check_window(window: str) -> str:
    if not WINDOW_PATTERN.match(window):
        raise ValueError(f"window {window!r}: expected a Prometheus duration such as 30m, 1h or 1d")
    return window


def windowed(metric: str, window: str) -> str:
    """Each series' exact change over ``window`` (see the module doc), not yet summed."""
    return f"((({metric} - {metric} offset {window}) >= 0) or {metric})"


def drift_rule_group(window: str = "1h", epsilon: float = drift_stats.PSI_SMOOTHING) -> dict[str, Any]:
    """One rule group computing fleet PSI and JS per feature over ``window``."""
    w = check_window(window)
    names = {kind: name(kind, w) for kind in OLD_NAMES}
    counts, current, mid = names["bin_rows"], names["ratio"], names["mid"]
    # Every replica of a version exports the same reference shares: take one. Inlined
    # rather than recorded so several window groups need no shared rule.
    reference = f"max by ({BY_BIN}) (modelmon_reference_bin_ratio)"
    bins_per_feature = f"count by ({BY_FEATURE}) ({reference})"

    def smoothed(ratio: str) -> str:
        return f"({ratio} + {epsilon}) / on ({BY_FEATURE}) group_left () (1 + {epsilon} * {bins_per_feature})"

    def kl_to_mid(ratio: str) -> str:
        # sum of ratio * log2(ratio / mid) over the bins where ratio > 0 (0 * log 0 = 0).
        return (
            f"sum by ({BY_FEATURE}) (({ratio} * log2({ratio} / on ({BY_BIN}) {mid}))"
            f" and on ({BY_BIN}) ({ratio} > 0))"
        )

    rules = [
        {
            "record": counts,
            "expr": f"sum by ({BY_BIN}) {windowed('modelmon_feature_bin_total', w)}",
        },
        {
            "record": names["rows"],
            "expr": f"sum by ({BY_FEATURE}) ({counts})",
        },
        {
            "record": current,
            "expr": f"{counts} / on ({BY_FEATURE}) group_left () {names['rows']}",
        },
        {
            "record": names["psi"],
            "expr": f"sum by ({BY_FEATURE}) (({smoothed(current)} - on ({BY_BIN}) {smoothed(reference)})"
            f" * ln({smoothed(current)} / on ({BY_BIN}) {smoothed(reference)}))",
        },
        {
            "record": mid,
            "expr": f"({current} + on ({BY_BIN}) {reference}) / 2",
        },
        {
            "record": names["js"],
            "expr": f"sqrt(clamp_min(0.5 * {kl_to_mid(reference)} + on ({BY_FEATURE}) 0.5 * {kl_to_mid(current)}, 0))",
        },
        *aliases(names, OLD_NAMES, w),
    ]
    return {"name": f"modelmon-drift-{w}", "rules": rules}


def drift_rules(window: str = "1h") -> dict[str, Any]:
    return {"groups": [drift_rule_group(window)]}


def drift_rules_test(rule_file: str, window: str = "1h") -> dict[str, Any]:
    """A promtool unit test: two replicas, one feature of three bins, a known window.

    The expected PSI and JS are computed here with ``drift_stats`` (itself checked against
    scipy and hand-worked values) from the pooled window counts; the test asserts the rules
    agree to 1e-9."""
    w = check_window(window)
    reference = np.array([0.5, 0.3, 0.2])
    # Cumulative counts per replica at t=0 and at t=window: the window holds their change.
    replica_a = {"b0": (10, 40), "b1": (5, 25), "b2": (0, 15)}
    replica_b = {"b0": (0, 10), "b1": (0, 0), "b2": (7, 27)}
    pooled = np.array([(a[1] - a[0]) + (b[1] - b[0]) for a, b in zip(replica_a.values(), replica_b.values(), strict=True)], float)
    labels = 'model="m", version="1", feature="f"'
    minutes = int(pd_minutes(w))
    series = []
    for instance, replica in (("a:1", replica_a), ("b:1", replica_b)):
        for bin_name, (start, end) in replica.items():
            series.append({
                "series": f'modelmon_feature_bin_total{{{labels}, bin="{bin_name}", instance="{instance}"}}',
                "values": f"{start}+0x{minutes - 1} {end}",
            })
            share = reference[int(bin_name[1])]
            series.append({
                "series": f'modelmon_reference_bin_ratio{{{labels}, bin="{bin_name}", instance="{instance}"}}',
                "values": f"{share}+0x{minutes}",
            })
    expected_psi = drift_stats.psi(reference, pooled)
    expected_js = drift_stats.js_distance(reference, pooled)
    at = f"{minutes}m"

    def close(record: str, value: float) -> dict[str, Any]:
        return {
            "expr": f"abs({record} - {value!r}) < bool 1e-9",
            "eval_time": at,
            "exp_samples": [{"labels": f"{{{labels}}}", "value": 1}],
        }

    return {
        "rule_files": [rule_file],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    close(name("psi", w), expected_psi),
                    close(name("js", w), expected_js),
                    close(f"modelmon:feature_drift_psi:{w}", expected_psi),  # the alias, one release
                    {
                        "expr": name("rows", w),
                        "eval_time": at,
                        "exp_samples": [{"labels": f"{name('rows', w)}{{{labels}}}", "value": float(pooled.sum())}],
                    },
                ],
            }
        ],
    }


def pd_minutes(window: str) -> float:
    """A Prometheus duration in minutes."""
    units = {"s": 1 / 60, "m": 1, "h": 60, "d": 1440, "w": 10080}
    return int(window[:-1]) * units[window[-1]]


def dump_yaml(content: dict[str, Any]) -> str:
    return yaml.safe_dump(content, sort_keys=False, width=1000)
