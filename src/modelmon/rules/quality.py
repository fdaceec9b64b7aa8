"""Recording rules for fleet-wide model quality: realized (from labels) and estimated (from
calibrated probabilities, CBPE), over a window.

Both read a confusion matrix kept as counters, ``modelmon_confusion_total`` and
``modelmon_expected_confusion_total`` {model, version, actual, predicted}, summed over
replicas with exact windowed differences (see ``modelmon.rules.drift``). The metrics
follow scikit-learn's definitions: per-class F1 is 2 TP / (predicted + actual), and the
macro average is over the classes that occur as actual or predicted in the window
(``f1_score(average="macro")`` on the same labels). PromQL cannot compare two label values,
so the diagonal (actual == predicted) is selected by matching against a series whose
``actual`` and ``predicted`` are both copied from ``modelmon_predictions_total``'s ``class``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modelmon.rules.drift import check_window, pd_minutes, windowed

#: Kept labels: see ``modelmon.rules.drift.BY_FEATURE``.
BY_VERSION = "cluster, namespace, job, model, version"
BY_CELL = "cluster, namespace, job, model, version, actual, predicted"
BY_CLASS = "cluster, namespace, job, model, version, class"
DIAGONAL = (
    'label_replace(label_replace(modelmon_predictions_total, "actual", "$1", "class", "(.+)"), '
    '"predicted", "$1", "class", "(.+)")'
)


#: Each rule's level (the labels it keeps) and operation; the metric is the counter it
#: derives from: ``level:metric:operations`` (Prometheus' naming convention).
KINDS = {
    "cells": ("model_version_actual_predicted", "increase"),
    "labelled": ("model_version", "increase"),
    "tp": ("model_version_class", "true_positive"),
    "predicted": ("model_version_class", "predicted"),
    "actual": ("model_version_class", "actual"),
    "accuracy": ("model_version", "accuracy"),
    "precision": ("model_version_class", "precision"),
    "recall": ("model_version_class", "recall"),
    "f1": ("model_version_class", "f1_"),
    "f1_macro": ("model_version", "f1_macro"),
}
#: The names before the rename, ``modelmon:<prefix><old>:<window>``: aliases for one release.
OLD_NAMES = {"cells": "confusion_window", "labelled": "labelled_window", "tp": "class_true_positive_window",
             "predicted": "class_predicted_window", "actual": "class_actual_window", "accuracy": "accuracy",
             "precision": "precision", "recall": "recall", "f1": "f1", "f1_macro": "f1_macro"}
SOURCES = {"modelmon_confusion_total": "", "modelmon_expected_confusion_total": "estimated_"}


def name(kind: str, window: str, source: str = "modelmon_confusion_total") -> str:
    """``model_version:modelmon_confusion:accuracy1h``; the estimates (CBPE) read
    ``modelmon_expected_confusion``. ``f1`` per class is ``f1_1h`` (``f11h`` would misread)."""
    level, operation = KINDS[kind]
    return f"{level}:{source.removesuffix('_total')}:{operation}{window}"


def coverage_name(window: str) -> str:
    return f"model_version:modelmon_feedback_matched:ratio_predictions{window}"


def confusion_rules(source: str, w: str) -> list[dict[str, str]]:
    n = {kind: name(kind, w, source) for kind in KINDS}
    cells, tp, predicted, actual = n["cells"], n["tp"], n["predicted"], n["actual"]

    def per_class(expr: str, from_label: str) -> str:
        return f'sum by ({BY_CLASS}) (label_replace({expr}, "class", "$1", "{from_label}", "(.+)"))'

    diagonal = f"({cells} and on ({BY_CELL}) {DIAGONAL})"
    rules = [
        {"record": cells, "expr": f"sum by ({BY_CELL}) {windowed(source, w)}"},
        {"record": n["labelled"], "expr": f"sum by ({BY_VERSION}) ({cells})"},
        {"record": tp, "expr": per_class(diagonal, "predicted")},
        {"record": predicted, "expr": per_class(cells, "predicted")},
        {"record": actual, "expr": per_class(cells, "actual")},
        {
            "record": n["accuracy"],
            "expr": f"sum by ({BY_VERSION}) ({tp}) / ({n['labelled']} > 0)",
        },
        # Per class, zero when the class was never predicted (or never actual), as
        # scikit-learn's zero_division=0; only classes that occur in the window.
        {
            "record": n["precision"],
            "expr": f"(({tp} / ({predicted} > 0)) or ({tp} * 0 and ({actual} > 0)))",
        },
        {
            "record": n["recall"],
            "expr": f"(({tp} / ({actual} > 0)) or ({tp} * 0 and ({predicted} > 0)))",
        },
        {"record": n["f1"], "expr": f"2 * {tp} / (({predicted} + {actual}) > 0)"},
        {"record": n["f1_macro"], "expr": f"avg by ({BY_VERSION}) ({n['f1']})"},
    ]
    prefix = SOURCES[source]
    return rules + [{"record": f"modelmon:{prefix}{old}:{w}", "expr": n[kind]} for kind, old in OLD_NAMES.items()]


def quality_rule_group(window: str = "1h") -> dict[str, Any]:
    w = check_window(window)
    # Rows predicted are the batch size histogram's sum, every model call's rows, so a
    # regressor has a coverage too: modelmon_predictions_total is a classifier's only.
    coverage = {
        "record": coverage_name(w),
        "expr": f'sum by ({BY_VERSION}) {windowed("modelmon_feedback_total{outcome=" + chr(34) + "matched" + chr(34) + "}", w)}'
        f" / (sum by ({BY_VERSION}) {windowed('modelmon_batch_size_sum', w)} > 0)",
    }
    rules = [
        *confusion_rules("modelmon_confusion_total", w),
        *confusion_rules("modelmon_expected_confusion_total", w),
        coverage,
        {"record": f"modelmon:label_coverage:{w}", "expr": coverage_name(w)},  # alias, one release
    ]
    return {"name": f"modelmon-quality-{w}", "rules": rules}


def quality_rules_test(rule_file: str, window: str = "1h", seed: int = 0) -> dict[str, Any]:
    """A promtool test: two replicas' confusion counters from seeded labels; the rules must
    give scikit-learn's accuracy and macro F1 (and per-class F1) on the pooled labels, and
    the label coverage of the classifier and of a regressor (which has no class)."""
    from sklearn.metrics import accuracy_score, f1_score

    w = check_window(window)
    minutes = int(pd_minutes(w))
    classes = ["a", "b", "c"]
    rng = np.random.default_rng(seed)
    y_true = rng.choice(classes, 300, p=[0.5, 0.3, 0.2])
    y_pred = np.where(rng.random(300) < 0.7, y_true, rng.choice(classes, 300))
    y_pred[y_pred == "c"] = "a"  # "c" is never predicted: precision's zero_division case
    replica = rng.integers(0, 2, 300)
    labels = 'model="m", version="1"'
    series = []
    for instance in (0, 1):
        for klass in classes:
            series.append({"series": f'modelmon_predictions_total{{{labels}, class="{klass}", instance="r{instance}"}}',
                           "values": f"0+1x{minutes}"})
        for actual in classes:
            for predicted in classes:
                n = int(((y_true == actual) & (y_pred == predicted) & (replica == instance)).sum())
                start = 7  # counts before the window, which the rules must leave out
                series.append({
                    "series": f'modelmon_confusion_total{{{labels}, actual="{actual}", predicted="{predicted}", instance="r{instance}"}}',
                    "values": f"{start}+0x{minutes - 1} {start + n}",
                })
    # Label coverage: labels matched over rows predicted, pooled over the replicas: the
    # classifier (1 + 2) / (3 + 5) a minute, the regressor (1 + 1) / (2 + 8). Replicas of
    # unequal rows, so an average of the replicas' ratios (0.367 and 0.313) would fail.
    regressor = 'model="p", version="1"'
    for of, rows, matched in ((labels, (3, 5), (1, 2)), (regressor, (2, 8), (1, 1))):
        for instance in (0, 1):
            series.append({"series": f'modelmon_batch_size_sum{{{of}, instance="r{instance}"}}',
                           "values": f"3+{rows[instance]}x{minutes}"})
            series.append({"series": f'modelmon_feedback_total{{{of}, outcome="matched", instance="r{instance}"}}',
                           "values": f"2+{matched[instance]}x{minutes}"})
    at = f"{minutes}m"
    f1_per_class = f1_score(y_true, y_pred, labels=classes, average=None, zero_division=0)

    def close(expr: str, value: float, extra: str = "", of: str = labels) -> dict[str, Any]:
        return {"expr": f"abs({expr} - {value!r}) < bool 1e-9", "eval_time": at,
                "exp_samples": [{"labels": f"{{{of}{extra}}}", "value": 1}]}

    tests = [
        close(name("accuracy", w), float(accuracy_score(y_true, y_pred))),
        close(name("f1_macro", w), float(f1_score(y_true, y_pred, average="macro", zero_division=0))),
        close(f"modelmon:accuracy:{w}", float(accuracy_score(y_true, y_pred))),  # the alias, one release
        close(f'{coverage_name(w)}{{model="m"}}', 3 / 8),
        close(f'{coverage_name(w)}{{model="p"}}', 2 / 10, of=regressor),
    ]
    tests += [close(f'{name("f1", w)}{{class="{k}"}}', float(v), f', class="{k}"') for k, v in zip(classes, f1_per_class, strict=True)]
    return {"rule_files": [rule_file], "evaluation_interval": "1m",
            "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}]}
