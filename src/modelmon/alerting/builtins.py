"""The built-in alert rules, written on the raw metrics of the contract (DESIGN.md), each
with the promtool test cases that prove it fires on a violating series and stays quiet on a
healthy one.

Every rule reads only the exporter's own series (never a recording rule another component
might rename), so the rule file works on any Prometheus that scrapes modelmon. Test inputs
are derived from the configured thresholds, so the generated tests prove the rules as
configured, not only the defaults.
"""

from __future__ import annotations

import math
import re

from modelmon.alerting import config as cfg
from modelmon.alerting.model import INTEGER, NUMBER, PERCENT, SECONDS, AlertRule, Case, Threshold
from modelmon.monitoring.methods import PSI, default_thresholds, get_method, method_names
from modelmon.monitoring.metrics import LATENCY_BUCKETS

#: Labels every test series carries, as a scrape would add them.
INSTANCE = "replica-1:8080"
#: Test scores of a drifted and of a steady feature, by the method's direction: on either
#: side of every default threshold of the method table (monitoring/methods.py).
DRIFTED_SCORE = {"high": 0.5, "low": 0.001}
STEADY_SCORE = {"high": 0.01, "low": 0.5}
INFERENCE_ENDPOINTS = "infer|predict"

#: The built-in alert names, by their key under ``builtins:`` in modelmon.yaml.
NAMES = {
    "target_down": ["ModelmonTargetDown"],
    "error_ratio": ["ModelmonHighErrorRatio"],
    "latency_p99": ["ModelmonHighLatencyP99"],
    "feature_drift": ["ModelmonFeatureDrift"],
    "dataset_drift": ["ModelmonDatasetDrift"],
    "prediction_drift": ["ModelmonPredictionDrift"],
    "realized_quality": ["ModelmonAccuracyBelowBaseline", "ModelmonF1BelowBaseline"],
    "estimated_accuracy": ["ModelmonEstimatedAccuracyBelowBaseline"],
    "label_coverage": ["ModelmonLowLabelCoverage"],
    "training_nan_loss": ["ModelmonTrainingLossNaN"],
    "training_plateau": ["ModelmonTrainingValidationLossPlateau"],
    "training_stalled": ["ModelmonTrainingRunStalled"],
    "bridge_dropped": ["ModelmonNotifyBridgeDropping"],
}
#: Alerts about a model's behaviour, held back while that model's target is down.
SYMPTOMS = [
    "ModelmonHighErrorRatio", "ModelmonHighLatencyP99", "ModelmonFeatureDrift", "ModelmonDatasetDrift",
    "ModelmonPredictionDrift", "ModelmonAccuracyBelowBaseline", "ModelmonF1BelowBaseline",
    "ModelmonEstimatedAccuracyBelowBaseline", "ModelmonLowLabelCoverage",
]
DEFAULTS = {  # key: (severity, for)
    "target_down": ("critical", "1m"),
    "error_ratio": ("critical", "5m"),
    "latency_p99": ("warning", "10m"),
    "feature_drift": ("warning", "15m"),
    "dataset_drift": ("critical", "15m"),
    "prediction_drift": ("warning", "15m"),
    "realized_quality": ("critical", "30m"),
    "estimated_accuracy": ("warning", "30m"),
    "label_coverage": ("info", "1h"),
    "training_nan_loss": ("critical", "0s"),
    "training_plateau": ("info", "0s"),
    "training_stalled": ("warning", "5m"),
    "bridge_dropped": ("critical", "0s"),
}


def anchor(name: str) -> str:
    """The docs/runbooks.md anchor of an alert (its heading is the alert's name)."""
    return name.lower()


def minutes(duration: str) -> int:
    return math.ceil(cfg.duration_seconds(duration) / 60)


def seconds(duration: str) -> float:
    return cfg.duration_seconds(duration)


def _labels(**labels: str) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in labels.items())


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _query(promql_format: str, *labels: str, fmt: str = 'printf "%.4g"') -> str:
    """A Prometheus template that runs ``promql_format`` (printf-formatted with the alert's
    labels) and prints its first value; empty when the query returns nothing."""
    args = " ".join(f"$labels.{label}" for label in labels)
    return f"{{{{ with printf `{promql_format}` {args} | query }}}}{{{{ . | first | value | {fmt} }}}}{{{{ end }}}}"


class Builder:
    """Builds the enabled built-in rules of one configuration."""

    def __init__(self, config: cfg.AlertingConfig) -> None:
        self.config = config
        self.job = config.prometheus.job
        self.base = {"model": "shop", "version": "1", "instance": INSTANCE, "job": self.job}

    def series_labels(self, **extra: str) -> str:
        return _labels(**self.base, **extra)

    def rule(self, key: str, name: str, settings: cfg._RuleCommon, **fields) -> AlertRule:
        severity, for_ = DEFAULTS[key]
        for_ = self.config.builtins.override_for or settings.for_ or for_
        return AlertRule(
            name=name, for_=for_, severity=settings.severity or severity, labels=dict(settings.labels),
            channels=list(settings.channels), runbook_url=f"{self.config.runbook_base_url}#{anchor(name)}", **fields,
        )

    def eval_minutes(self, rule: AlertRule, *windows: str) -> int:
        """When a case is evaluated: after the windows fill and ``for`` has passed."""
        return 2 + sum(minutes(w) for w in windows) + minutes(rule.for_) + 2

    def build(self) -> list[AlertRule]:
        b = self.config.builtins
        rules: list[AlertRule] = []
        for key in NAMES:
            settings = getattr(b, key)
            if settings.enabled:
                made = getattr(self, key)(settings)
                rules.extend(made if isinstance(made, list) else [made])
        return rules

    # -- serving -----------------------------------------------------------------------

    def target_down(self, s: cfg.TargetDown) -> AlertRule:
        job = _quote(self.job)
        down = f"up{{job={job}}} == 0"
        expr = (
            f"(\n  ({down})\n  * on (instance, job) group_right ()\n"
            f"  max by (instance, job, model, version) (last_over_time(modelmon_model_info{{job={job}}}[{s.lookback}]))\n)\n"
            f"or on (instance, job)\n({down})"
        )
        rule = self.rule(
            "target_down", "ModelmonTargetDown", s, expr=expr,
            summary="Model server $instance is down",
            description="Prometheus cannot scrape the model server $instance (job $job), which serves "
            "model $model version $version: it is down or unreachable (up = $value).",
            value_format=NUMBER, threshold=Threshold.literal("up == 0"),
        )
        rule.range_seconds = seconds(s.lookback)
        n = self.eval_minutes(rule)
        target = _labels(instance=INSTANCE, job=self.job)
        info = self.series_labels(flavor="onnx")
        expected = {"instance": INSTANCE, "job": self.job, "model": "shop", "version": "1"}
        rule.cases = [
            Case("target down", [(f"up{{{target}}}", f"1 1 0x{n}"), (f"modelmon_model_info{{{info}}}", f"1 1 _x{n}")],
                 n, [(expected, {"value": "0"})]),
            Case("target up", [(f"up{{{target}}}", f"1x{n}"), (f"modelmon_model_info{{{info}}}", f"1x{n}")], n),
        ]
        return rule

    def error_ratio(self, s: cfg.ErrorRatio) -> AlertRule:
        not_unknown = 'model!="_unknown_"'
        errors = f"sum by (model, version) (rate(modelmon_request_errors_total{{{not_unknown}}}[{s.window}]))"
        requests = (
            f"sum by (model, version) (rate(modelmon_requests_total{{{not_unknown}, endpoint=~\"{INFERENCE_ENDPOINTS}\"}}[{s.window}]))"
        )
        rule = self.rule(
            "error_ratio", "ModelmonHighErrorRatio", s,
            expr=f"(\n  {errors}\n  /\n  {requests}\n) > {s.threshold!r}",
            summary="Model $model version $version rejects or fails $value of its requests",
            description=f"$value of the inference requests to model $model version $version failed or were "
            f"rejected over the last {s.window} (threshold $threshold). modelmon_request_errors_total by reason "
            "says why.",
            value_format=PERCENT, threshold=Threshold.literal(PERCENT.expect(s.threshold)),
        )
        rule.range_seconds = seconds(s.window)
        n = self.eval_minutes(rule, s.window)
        ratio = min(1.0, 2 * s.threshold)
        requests_series = f"modelmon_requests_total{{{self.series_labels(endpoint='predict', code='200')}}}"
        errors_series = f"modelmon_request_errors_total{{{self.series_labels(reason='invalid_value')}}}"
        rule.cases = [
            Case("errors above the threshold", [(requests_series, f"0+100x{n}"), (errors_series, f"0+{100 * ratio!r}x{n}")],
                 n, [({"model": "shop", "version": "1"}, {"value": PERCENT.expect(ratio)})]),
            Case("no errors", [(requests_series, f"0+100x{n}"), (errors_series, f"0x{n}")], n),
        ]
        return rule

    def latency_p99(self, s: cfg.LatencyP99) -> AlertRule:
        q = s.quantile
        expr = (
            f"histogram_quantile({q!r}, sum by (model, version, le) (rate(modelmon_request_duration_seconds_bucket"
            f'{{model!="_unknown_", endpoint=~"{INFERENCE_ENDPOINTS}"}}[{s.window}])))\n> {s.threshold!r}'
        )
        label = f"p{q * 100:g}"
        rule = self.rule(
            "latency_p99", "ModelmonHighLatencyP99", s, expr=expr,
            summary=f"Model $model version $version answers slowly ({label} $value)",
            description=f"The {label} latency of inference requests to model $model version $version was $value "
            f"over the last {s.window}, above the objective of $threshold.",
            value_format=SECONDS, threshold=Threshold.literal(SECONDS.expect(s.threshold)),
        )
        rule.range_seconds = seconds(s.window)
        n = self.eval_minutes(rule, s.window)
        bounds = [0.0, *LATENCY_BUCKETS]

        def histogram(bucket: int) -> list[tuple[str, str]]:
            """Every request in bucket ``bucket`` (1-based index into LATENCY_BUCKETS)."""
            out = []
            for le in [*LATENCY_BUCKETS, math.inf]:
                count = 60 if le >= LATENCY_BUCKETS[bucket - 1] else 0
                le_text = "+Inf" if math.isinf(le) else repr(le)
                out.append((f"modelmon_request_duration_seconds_bucket{{{self.series_labels(endpoint='predict', le=le_text)}}}",
                            f"0+{count}x{n}"))
            return out

        slow = next((i for i in range(1, len(bounds)) if bounds[i - 1] >= s.threshold), None)
        if slow is not None:
            p = bounds[slow - 1] + (bounds[slow] - bounds[slow - 1]) * q
            rule.cases.append(Case(f"every request in ({bounds[slow - 1]}, {bounds[slow]}]", histogram(slow), n,
                                   [({"model": "shop", "version": "1"}, {"value": SECONDS.expect(p)})]))
        if LATENCY_BUCKETS[0] * q <= s.threshold:
            rule.cases.append(Case("every request under 0.1 ms", histogram(1), n))
        return rule

    # -- drift -------------------------------------------------------------------------

    def feature_drift(self, s: cfg.FeatureDrift) -> AlertRule:
        by = "model, version, feature, method"

        def high(methods: str) -> str:
            return f'modelmon_feature_drift{{method=~"{methods}"}} >= modelmon_feature_drift_threshold{{method=~"{methods}"}}'

        def low(methods: str) -> str:
            return f'modelmon_feature_drift{{method=~"{methods}"}} < modelmon_feature_drift_threshold{{method=~"{methods}"}}'

        if s.methods == "auto":  # the server's verdict: p-value tests on small windows, PSI above
            rows = "modelmon_drift_window_rows"
            pvalues = "|".join(method_names(direction="low"))
            expr = (
                f"max by ({by}) (\n  ({high(PSI.name)})\n  and ignoring (feature, method) ({rows} > {s.pvalue_max_rows})\n)\n"
                f"or\nmin by ({by}) (\n  ({low(pvalues)})\n  and ignoring (feature, method) ({rows} <= {s.pvalue_max_rows})\n)"
            )
        else:
            highs = [m for m in s.methods if get_method(m).direction == "high"]
            lows = [m for m in s.methods if get_method(m).direction == "low"]
            parts = [f"max by ({by}) ({high('|'.join(highs))})"] if highs else []
            parts += [f"min by ({by}) ({low('|'.join(lows))})"] if lows else []
            expr = "\nor\n".join(parts)
        threshold = Threshold(
            _query('min(modelmon_feature_drift_threshold{model=%q, version=%q, feature=%q, method=%q})',
                   "model", "version", "feature", "method"),
            "modelmon_feature_drift_threshold",
        )
        rule = self.rule(
            "feature_drift", "ModelmonFeatureDrift", s, expr=expr,
            summary="Feature $feature of model $model has drifted",
            description="Feature $feature of model $model version $version has drifted from its training data: "
            "$method = $value against a threshold of $threshold (p-values drift below it, the other scores at "
            "or above it).",
            value_format=NUMBER, threshold=threshold,
        )
        n = self.eval_minutes(rule)
        # The server's default thresholds, as it exports them (modelmon_feature_drift_threshold).
        thresholds = default_thresholds()

        def scores(rows: int, values: dict[tuple[str, str], float]) -> list[tuple[str, str]]:
            out = [(f"modelmon_drift_window_rows{{{self.series_labels()}}}", f"{rows}x{n}")]
            for (feature, method), value in values.items():
                labels = self.series_labels(feature=feature, method=method)
                out.append((f"modelmon_feature_drift{{{labels}}}", f"{value!r}x{n}"))
                out.append((f"modelmon_feature_drift_threshold{{{labels}}}", f"{thresholds[method]!r}x{n}"))
            return out

        def alert(feature: str, method: str, value: float, threshold: float) -> tuple[dict[str, str], dict[str, str]]:
            return ({"model": "shop", "version": "1", "feature": feature, "method": method},
                    {"value": NUMBER.expect(value), "threshold": NUMBER.expect(threshold)})

        small, large = min(200, s.pvalue_max_rows), s.pvalue_max_rows + 1000
        drifted = {("amount", "ks"): 0.001, ("amount", "psi"): 0.5, ("channel", "chi2_pvalue"): 0.0001,
                   ("channel", "psi"): 0.9, ("items", "ks"): 0.4, ("items", "psi"): 0.01}
        if s.methods == "auto":
            rule.cases = [
                Case("small window: p-values decide", scores(small, drifted), n,
                     [alert("amount", "ks", 0.001, thresholds["ks"]), alert("channel", "chi2_pvalue", 0.0001, thresholds["chi2_pvalue"])]),
                Case("large window: PSI decides", scores(large, drifted), n,
                     [alert("amount", "psi", 0.5, thresholds["psi"]), alert("channel", "psi", 0.9, thresholds["psi"])]),
                Case("small window, high PSI but p-values fine", scores(small, {
                    ("amount", "ks"): 0.3, ("amount", "psi"): 0.5, ("channel", "chi2_pvalue"): 0.2, ("channel", "psi"): 0.9}), n),
                Case("large window, low p-values but PSI fine", scores(large, {
                    ("amount", "ks"): 0.001, ("amount", "psi"): 0.05, ("channel", "chi2_pvalue"): 0.0001, ("channel", "psi"): 0.1}), n),
            ]
        else:
            bad = {m: DRIFTED_SCORE[get_method(m).direction] for m in s.methods}
            good = {m: STEADY_SCORE[get_method(m).direction] for m in s.methods}
            rule.cases = [
                Case("every method drifted", scores(small, {("amount", m): bad[m] for m in s.methods}), n,
                     [alert("amount", m, bad[m], thresholds[m]) for m in s.methods]),
                Case("no method drifted", scores(small, {("amount", m): good[m] for m in s.methods}), n),
            ]
        return rule

    def dataset_drift(self, s: cfg.DatasetDrift) -> AlertRule:
        rule = self.rule(
            "dataset_drift", "ModelmonDatasetDrift", s,
            expr=f"max by (model, version) (modelmon_dataset_drift_share) >= {s.threshold!r}",
            summary="Model $model: $value of its features have drifted",
            description="$value of the monitored features of model $model version $version have drifted from the "
            "training data (threshold $threshold): the inputs as a whole no longer look like the training set.",
            value_format=PERCENT, threshold=Threshold.literal(PERCENT.expect(s.threshold)),
        )
        n = self.eval_minutes(rule)
        series = f"modelmon_dataset_drift_share{{{self.series_labels()}}}"
        bad, good = (1 + s.threshold) / 2, s.threshold / 2
        rule.cases = [
            Case("most features drifted", [(series, f"{bad!r}x{n}")], n,
                 [({"model": "shop", "version": "1"}, {"value": PERCENT.expect(bad)})]),
            Case("few features drifted", [(series, f"{good!r}x{n}")], n),
        ]
        return rule

    def prediction_drift(self, s: cfg.PredictionDrift) -> AlertRule:
        rule = self.rule(
            "prediction_drift", "ModelmonPredictionDrift", s,
            expr=f'max by (model, version) (modelmon_prediction_drift{{output="class", method="psi"}}) >= {s.threshold!r}',
            summary="Model $model predicts classes in different proportions",
            description="The predicted classes of model $model version $version have shifted from the validation "
            "outputs: PSI $value (threshold $threshold).",
            value_format=NUMBER, threshold=Threshold.literal(NUMBER.expect(s.threshold)),
        )
        n = self.eval_minutes(rule)

        def series(klass: float, confidence: float) -> list[tuple[str, str]]:
            return [
                (f"modelmon_prediction_drift{{{self.series_labels(output='class', method='psi')}}}", f"{klass!r}x{n}"),
                (f"modelmon_prediction_drift{{{self.series_labels(output='confidence', method='psi')}}}", f"{confidence!r}x{n}"),
            ]

        rule.cases = [
            Case("class shares shifted", series(2 * s.threshold, 0.0), n,
                 [({"model": "shop", "version": "1"}, {"value": NUMBER.expect(2 * s.threshold)})]),
            Case("class shares stable (confidence shift alone does not count)", series(s.threshold / 2, 10 * s.threshold), n),
        ]
        return rule

    # -- quality -------------------------------------------------------------------------

    def _confusion(self, counter: str, window: str) -> dict[str, str]:
        """PromQL for window counts of confusion cells: correct, total, per-class parts."""
        cells = f"increase({counter}[{window}])"
        by_actual = f'label_replace({cells}, "cls", "$1", "actual", "(.*)")'
        by_predicted = f'label_replace({cells}, "cls", "$1", "predicted", "(.*)")'
        # A cell is on the diagonal when its copy keyed by `actual` meets its copy keyed by
        # `predicted` (all other labels equal): PromQL cannot compare two labels directly.
        diagonal = f"({by_actual} and {by_predicted})"
        return {
            "correct": f"sum by (model, version) {diagonal}",
            "total": f"sum by (model, version) ({cells})",
            "tp": f"sum by (model, version, cls) {diagonal}",
            "row": f"sum by (model, version, cls) ({by_actual})",
            "col": f"sum by (model, version, cls) ({by_predicted})",
        }

    def _baseline(self, metric: str) -> str:
        return f'max by (model, version) (modelmon_baseline_metric{{metric="{metric}"}})'

    def _baseline_threshold(self, metric: str, margin: float) -> Threshold:
        query = _query(f'max(modelmon_baseline_metric{{model=%q, version=%q, metric="{metric}"}})', "model", "version",
                       fmt="humanizePercentage")
        margin_text = PERCENT.expect(margin)
        return Threshold(f"{query} (baseline) - {margin_text}", f"the {metric} baseline - {margin_text}")

    def _step(self, window: str) -> int:
        return 10 if minutes(window) >= 120 else 1

    def _quality_cases(self, rule: AlertRule, counter: str, window: str, margin: float, minimum: int) -> None:
        """Two classes; the firing case's accuracy (and macro F1, the matrix is symmetric)
        sits 10 points under baseline - margin, the healthy case's is perfect."""
        step = self._step(window)
        n = math.ceil(self.eval_minutes(rule, window) / step)
        baseline = 0.95
        steps_in_window = minutes(window) // step
        per_class = 100 * max(1, math.ceil(minimum / (200 * steps_in_window)))
        correct = max(0, round(per_class * (baseline - margin)) - per_class // 10)

        def series(diagonal: int) -> list[tuple[str, str]]:
            out = [(f'modelmon_baseline_metric{{{self.series_labels(metric=m)}}}', f"{baseline!r}x{n}")
                   for m in ("accuracy", "f1_macro")]
            for actual in ("a", "b"):
                for predicted in ("a", "b"):
                    count = diagonal if actual == predicted else per_class - diagonal
                    out.append((f"{counter}{{{self.series_labels(actual=actual, predicted=predicted)}}}", f"0+{count}x{n}"))
            return out

        value = correct / per_class
        rule.cases = [
            Case("quality under the baseline", series(correct), n * step,
                 [({"model": "shop", "version": "1"}, {"value": PERCENT.expect(value),
                   "threshold": f"{PERCENT.expect(baseline)} (baseline) - {PERCENT.expect(margin)}"})], step),
            Case("perfect predictions", series(per_class), n * step, interval=step),
        ]

    def realized_quality(self, s: cfg.RealizedQuality) -> list[AlertRule]:
        parts = self._confusion("modelmon_confusion_total", s.window)
        enough = f"{parts['total']} >= {s.min_labels}"
        rules = []
        if "accuracy" in s.metrics:
            accuracy = f"(\n  {parts['correct']}\n  /\n  {parts['total']}\n)"
            rule = self.rule(
                "realized_quality", "ModelmonAccuracyBelowBaseline", s,
                expr=f"{accuracy}\n< on (model, version) ({self._baseline('accuracy')} - {s.margin!r})\n"
                f"and on (model, version) ({enough})",
                summary="Model $model: accuracy $value on labelled predictions",
                description=f"The accuracy of model $model version $version on the predictions labelled in the last "
                f"{s.window} is $value, under its validation baseline by more than the margin (threshold $threshold).",
                value_format=PERCENT, threshold=self._baseline_threshold("accuracy", s.margin),
            )
            rule.range_seconds = seconds(s.window)
            self._quality_cases(rule, "modelmon_confusion_total", s.window, s.margin, s.min_labels)
            rules.append(rule)
        if "f1_macro" in s.metrics:
            # F1 of class c is 2 TP / (row + col); macro F1 averages it over the classes that
            # occur among the labels or the predictions (as scikit-learn does).
            tp = f"({parts['tp']}\n   or {parts['row']} * 0)"
            f1 = f"avg by (model, version) (\n  2 * {tp}\n  / (({parts['row']}\n   + {parts['col']}) > 0)\n)"
            rule = self.rule(
                "realized_quality", "ModelmonF1BelowBaseline", s,
                expr=f"{f1}\n< on (model, version) ({self._baseline('f1_macro')} - {s.margin!r})\n"
                f"and on (model, version) ({enough})",
                summary="Model $model: macro F1 $value on labelled predictions",
                description=f"The macro F1 of model $model version $version on the predictions labelled in the last "
                f"{s.window} is $value, under its validation baseline by more than the margin (threshold $threshold).",
                value_format=PERCENT, threshold=self._baseline_threshold("f1_macro", s.margin),
            )
            rule.range_seconds = seconds(s.window)
            self._quality_cases(rule, "modelmon_confusion_total", s.window, s.margin, s.min_labels)
            rules.append(rule)
        return rules

    def estimated_accuracy(self, s: cfg.EstimatedAccuracy) -> AlertRule:
        parts = self._confusion("modelmon_expected_confusion_total", s.window)
        rule = self.rule(
            "estimated_accuracy", "ModelmonEstimatedAccuracyBelowBaseline", s,
            expr=f"(\n  {parts['correct']}\n  /\n  {parts['total']}\n)\n"
            f"< on (model, version) ({self._baseline('accuracy')} - {s.margin!r})\n"
            f"and on (model, version) ({parts['total']} >= {s.min_rows})",
            summary="Model $model: estimated accuracy $value",
            description=f"The accuracy of model $model version $version estimated without labels (from its "
            f"calibrated probabilities) over the last {s.window} is $value, under its validation baseline by more "
            "than the margin (threshold $threshold).",
            value_format=PERCENT, threshold=self._baseline_threshold("accuracy", s.margin),
        )
        rule.range_seconds = seconds(s.window)
        self._quality_cases(rule, "modelmon_expected_confusion_total", s.window, s.margin, s.min_rows)
        return rule

    def label_coverage(self, s: cfg.LabelCoverage) -> AlertRule:
        predictions = f"sum by (model, version) (increase(modelmon_predictions_total[{s.window}]))"
        labelled = f'sum by (model, version) (increase(modelmon_feedback_total{{outcome="matched"}}[{s.window}]))'
        expr = f"(\n  {labelled}\n  /\n  {predictions}\n) < {s.threshold!r}\nand on (model, version) ({predictions} >= {s.min_predictions})"
        if s.require_some_labels:
            expr += '\nand on (model, version) (sum by (model, version) (modelmon_feedback_total{outcome="matched"}) > 0)'
        rule = self.rule(
            "label_coverage", "ModelmonLowLabelCoverage", s, expr=expr,
            summary="Model $model: only $value of predictions get a label",
            description=f"Only $value of the predictions of model $model version $version in the last {s.window} "
            "were matched by a ground-truth label (threshold $threshold): live quality is measured on too few rows.",
            value_format=PERCENT, threshold=Threshold.literal(PERCENT.expect(s.threshold)),
        )
        rule.range_seconds = seconds(s.window)
        step = self._step(s.window)
        n = math.ceil(self.eval_minutes(rule, s.window) / step)
        per_step = 100 * max(1, math.ceil(s.min_predictions / (100 * (minutes(s.window) // step))))
        predictions_series = (f"modelmon_predictions_total{{{self.series_labels(**{'class': 'gold'})}}}", f"0+{per_step}x{n}")

        def feedback(share: float) -> tuple[str, str]:
            return (f"modelmon_feedback_total{{{self.series_labels(outcome='matched')}}}", f"0+{per_step * share!r}x{n}")

        low, high = s.threshold / 2, min(1.0, 2 * s.threshold)
        rule.cases = [
            Case("few labels", [predictions_series, feedback(low)], n * step,
                 [({"model": "shop", "version": "1"}, {"value": PERCENT.expect(low)})], step),
            Case("enough labels", [predictions_series, feedback(high)], n * step, interval=step),
        ]
        if s.require_some_labels:
            rule.cases.append(Case("never labelled (no label pipeline)", [predictions_series, feedback(0.0)], n * step, interval=step))
        return rule

    # -- training -------------------------------------------------------------------------

    def training_nan_loss(self, s: cfg.TrainingLossNaN) -> AlertRule:
        metric = "|".join(re.escape(m) for m in s.metrics)
        loss = f'modelmon_training_metric{{metric=~"{metric}"}}'
        rule = self.rule(
            "training_nan_loss", "ModelmonTrainingLossNaN", s,
            expr=f"({loss} != {loss})\nor\n(abs({loss}) == +Inf)",
            summary="Training run $run of $experiment: $split $metric is $value",
            description="The $split $metric of training run $run (experiment $experiment) is $value: the run is "
            "diverging and what it trains from here on is not usable.",
            value_format=NUMBER, threshold=Threshold.literal("NaN or infinite"),
        )
        n = self.eval_minutes(rule) + 3
        labels = _labels(experiment="churn", run="7", split="train", metric=s.metrics[0], instance="trainer:9100", job="training")
        expected = {"experiment": "churn", "run": "7", "split": "train", "metric": s.metrics[0],
                    "instance": "trainer:9100", "job": "training"}
        rule.cases = [
            Case("loss became NaN", [(f"modelmon_training_metric{{{labels}}}", "0.9 0.7 " + " ".join(["NaN"] * n))], n,
                 [(expected, {"value": "NaN"})]),
            Case("loss became infinite", [(f"modelmon_training_metric{{{labels}}}", "0.9 0.7 " + " ".join(["+Inf"] * n))], n,
                 [(expected, {"value": "+Inf"})]),
            Case("loss finite", [(f"modelmon_training_metric{{{labels}}}", f"0.9 0.7 0.5x{n}")], n),
        ]
        return rule

    def training_plateau(self, s: cfg.TrainingPlateau) -> AlertRule:
        loss = f'modelmon_training_metric{{split="{s.split}", metric="{s.metric}"}}'
        # The epoch at which the loss last equalled its running minimum (a new best), found by
        # a subquery; the alert's value is how many epochs have passed since.
        best = (
            f"max by (experiment, run) (max_over_time((modelmon_training_epoch and on (experiment, run) "
            f"({loss} <= min_over_time({loss}[{s.lookback}])))[{s.lookback}:1m]))"
        )
        rule = self.rule(
            "training_plateau", "ModelmonTrainingValidationLossPlateau", s,
            expr=f"max by (experiment, run) (modelmon_training_epoch)\n- on (experiment, run)\n{best}\n>= {s.patience}",
            summary="Training run $run of $experiment: no better $split $metric for $value epochs",
            description=f"The {s.split} {s.metric} of training run $run (experiment $experiment) has not improved "
            f"for $value epochs (patience $threshold): stop the run early or change its hyperparameters.",
            value_format=INTEGER, threshold=Threshold.literal(str(s.patience)),
        )
        rule.range_seconds = 2 * seconds(s.lookback)
        epochs = s.patience + 5
        n = max(self.eval_minutes(rule), epochs + 2)
        run = _labels(experiment="churn", run="7")
        loss_labels = _labels(experiment="churn", run="7", split=s.split, metric=s.metric)
        # One epoch a minute; the best loss at epoch 3, worse ever since.
        worse = " ".join(repr(round(0.5 + 0.01 * i, 4)) for i in range(1, n - 2))
        improving = " ".join(repr(round(1.0 / (i + 1), 6)) for i in range(n + 1))
        epoch_series = (f"modelmon_training_epoch{{{run}}}", f"0+1x{n}")
        rule.cases = [
            Case("validation loss stuck after epoch 3", [epoch_series, (f"modelmon_training_metric{{{loss_labels}}}", f"1 0.8 0.6 0.5 {worse}")],
                 n, [({"experiment": "churn", "run": "7"}, {"value": str(n - 3)})]),
            Case("validation loss still improving", [epoch_series, (f"modelmon_training_metric{{{loss_labels}}}", improving)], n),
        ]
        return rule

    def training_stalled(self, s: cfg.TrainingStalled) -> AlertRule:
        rule = self.rule(
            "training_stalled", "ModelmonTrainingRunStalled", s,
            expr=f"time() - max by (experiment, run) (modelmon_training_last_update_timestamp_seconds) > {s.threshold!r}",
            summary="Training run $run of $experiment has stalled",
            description="Training run $run (experiment $experiment) last reported $value ago (threshold $threshold): "
            "its process hangs, or died with its gauges left on a Pushgateway.",
            value_format=SECONDS, threshold=Threshold.literal(SECONDS.expect(s.threshold)),
        )
        n = math.ceil(s.threshold / 60) + minutes(rule.for_) + 5
        labels = _labels(experiment="churn", run="7")
        rule.cases = [
            Case("no report since the start", [(f"modelmon_training_last_update_timestamp_seconds{{{labels}}}", f"0x{n}")],
                 n, [({"experiment": "churn", "run": "7"}, {"value": SECONDS.expect(n * 60)})]),
            Case("reporting every minute", [(f"modelmon_training_last_update_timestamp_seconds{{{labels}}}", f"0+60x{n}")], n),
        ]
        return rule

    # -- notify-bridge ------------------------------------------------------------------

    def bridge_dropped(self, s: cfg.BridgeDropped) -> AlertRule:
        rule = self.rule(
            "bridge_dropped", "ModelmonNotifyBridgeDropping", s,
            expr=f"sum by (instance, job, channel) (increase(modelmon_bridge_dropped_total[{s.window}])) > 0",
            summary="notify-bridge $instance dropped $value notifications",
            description=f"notify-bridge $instance (job $job) dropped $value deliveries in the last {s.window} "
            "because its delivery queue (bridge.queue_size) was full: people on the channel named by this "
            "alert's channel label were not told about those alerts.",
            value_format=NUMBER, threshold=Threshold.literal("any dropped delivery"),
        )
        rule.range_seconds = seconds(s.window)
        n = self.eval_minutes(rule, s.window)
        labels = _labels(instance="notify-bridge:9096", job="notify-bridge", channel="phones")
        expected = {"instance": "notify-bridge:9096", "job": "notify-bridge", "channel": "phones"}
        per_minute = 5
        rule.cases = [
            Case("deliveries dropped every minute", [(f"modelmon_bridge_dropped_total{{{labels}}}", f"0+{per_minute}x{n}")], n,
                 [(expected, {"value": NUMBER.expect(per_minute * minutes(s.window))})]),
            Case("nothing dropped", [(f"modelmon_bridge_dropped_total{{{labels}}}", f"0x{n}")], n),
        ]
        return rule


def builtin_rules(config: cfg.AlertingConfig) -> list[AlertRule]:
    return Builder(config).build()
