"""The built-in alert rules, written on the raw metrics of the contract (docs/metrics.md), each
with the promtool test cases that prove it fires on a violating series and stays quiet on a
healthy one.

Every rule reads only the exporter's own series (never a recording rule another component
might rename), so the rule file works on any Prometheus that scrapes modelmon. Test inputs
are derived from the configured thresholds, so the generated tests prove the rules as
configured, not only the defaults.

Rules aggregate ``by (cluster, namespace, job, model, version)`` (``FLEET``): a model of the
same name in staging and in production, or in two clusters, is two alerts, never one pooled
ratio. Labels a setup does not have are empty in ``by`` and cost nothing.

Severities follow the monitoring-mixins guide: ``critical`` only for user impact that needs
action now (a model version completely down, inference failing server-side, every target
of the job gone from service discovery); causes (drift, quality, coverage), single replicas
and training runs are ``warning`` or ``info``; the Watchdog is ``none``.
"""

from __future__ import annotations

import math
import re

import numpy as np

from modelmon.alerting import config as cfg
from modelmon.alerting.model import INTEGER, NUMBER, PERCENT, SECONDS, AlertRule, Case, Threshold
from modelmon.monitoring import drift_stats
from modelmon.monitoring.methods import PSI, default_thresholds, get_method, method_names
from modelmon.monitoring.metrics import LATENCY_BUCKETS
from modelmon.rules import drift as drift_rules

#: Labels every test series carries, as a scrape would add them.
INSTANCE = "replica-1:8080"
#: Test scores of a drifted and of a steady feature, by the method's direction: on either
#: side of every default threshold of the method table (monitoring/methods.py).
DRIFTED_SCORE = {"high": 0.5, "low": 0.001}
STEADY_SCORE = {"high": 0.01, "low": 0.5}
#: Inference over V2 REST, V2 gRPC and the records endpoint.
INFERENCE_ENDPOINTS = "infer|grpc_infer|predict"
#: What one alert is about: a version of a model in one deployment (job, namespace, cluster).
FLEET = "cluster, namespace, job, model, version"
FLEET_LABELS = ["cluster", "namespace", "job", "model", "version"]

#: The built-in alert names, by their key under ``builtins:`` in modelmon.yaml.
NAMES = {
    "model_down": ["ModelmonModelDown"],
    "target_down": ["ModelmonTargetDown"],
    "job_absent": ["ModelmonJobAbsent"],
    "watchdog": ["ModelmonWatchdog"],
    "error_ratio": ["ModelmonHighErrorRatio"],
    "client_errors": ["ModelmonHighClientErrorRatio"],
    "latency_p99": ["ModelmonHighLatencyP99"],
    "predictions_stopped": ["ModelmonPredictionsStopped"],
    "feature_drift": ["ModelmonFeatureDrift"],
    "fleet_drift": ["ModelmonFleetFeatureDrift"],
    "dataset_drift": ["ModelmonDatasetDrift"],
    "prediction_drift": ["ModelmonPredictionDrift"],
    "realized_quality": ["ModelmonAccuracyBelowBaseline", "ModelmonF1BelowBaseline"],
    "estimated_accuracy": ["ModelmonEstimatedAccuracyBelowBaseline"],
    "realized_error": ["ModelmonMAEAboveBaseline", "ModelmonRMSEAboveBaseline"],
    "estimated_error": ["ModelmonEstimatedMAEAboveBaseline", "ModelmonEstimatedRMSEAboveBaseline"],
    "label_coverage": ["ModelmonLowLabelCoverage"],
    "no_labels": ["ModelmonNoLabels"],
    "training_nan_loss": ["ModelmonTrainingLossNaN"],
    "training_plateau": ["ModelmonTrainingValidationLossPlateau"],
    "training_stalled": ["ModelmonTrainingRunStalled"],
    "bridge_dropped": ["ModelmonNotifyBridgeDropping"],
    "bridge_failed": ["ModelmonNotifyBridgeFailing"],
    "prediction_log_dropping": ["ModelmonPredictionLogDropping"],
    "rollout_rolled_back": ["ModelmonRolloutRolledBack"],
    "stream_consumer_stalled": ["ModelmonStreamConsumerStalled"],
    "stream_spool_growing": ["ModelmonStreamSpoolGrowing"],
    "stream_events_dropped": ["ModelmonStreamEventsDropped"],
}
#: The alert that inhibits: every replica that served a model version is down.
MODEL_DOWN = "ModelmonModelDown"
#: Serving symptoms held back while their own model version (same FLEET labels) is
#: completely down. Drift, quality and label alerts are never inhibited: they are about the
#: data, which a crash does not explain. One crashed replica (ModelmonTargetDown) inhibits
#: nothing.
SERVING_SYMPTOMS = ["ModelmonHighErrorRatio", "ModelmonHighClientErrorRatio", "ModelmonHighLatencyP99",
                    "ModelmonPredictionsStopped"]
WATCHDOG = "ModelmonWatchdog"
DEFAULTS = {  # key: (severity, for)
    "model_down": ("critical", "5m"),
    "target_down": ("warning", "10m"),
    "job_absent": ("critical", "15m"),
    "watchdog": ("none", "0s"),
    "error_ratio": ("critical", "2m"),
    "client_errors": ("warning", "15m"),
    "latency_p99": ("warning", "10m"),
    "predictions_stopped": ("warning", "5m"),
    "feature_drift": ("warning", "15m"),
    "fleet_drift": ("warning", "15m"),
    "dataset_drift": ("warning", "15m"),
    "prediction_drift": ("warning", "15m"),
    "realized_quality": ("warning", "30m"),
    "estimated_accuracy": ("warning", "30m"),
    "realized_error": ("warning", "30m"),
    "estimated_error": ("warning", "30m"),
    "label_coverage": ("info", "1h"),
    "no_labels": ("warning", "30m"),
    "training_nan_loss": ("warning", "0s"),
    "training_plateau": ("info", "0s"),
    "training_stalled": ("warning", "5m"),
    "bridge_dropped": ("warning", "0s"),
    "bridge_failed": ("warning", "0s"),
    "prediction_log_dropping": ("warning", "0s"),
    "rollout_rolled_back": ("warning", "0s"),
    "stream_consumer_stalled": ("warning", "5m"),
    "stream_spool_growing": ("warning", "5m"),
    "stream_events_dropped": ("warning", "0s"),
}


#: Which Grafana dashboard (uid) shows each built-in rule's data.
DASHBOARDS = {
    "modelmon-serving": {"model_down", "target_down", "job_absent", "error_ratio", "client_errors", "latency_p99",
                         "predictions_stopped", "prediction_log_dropping", "rollout_rolled_back"},
    "modelmon-drift": {"feature_drift", "fleet_drift", "dataset_drift", "prediction_drift"},
    "modelmon-quality": {"realized_quality", "estimated_accuracy", "realized_error", "estimated_error", "label_coverage",
                         "no_labels"},
    "modelmon-training": {"training_nan_loss", "training_plateau", "training_stalled"},
}


#: The panel of that dashboard that shows each alert's condition (its Grafana rule's
#: ``__panelId__``): the fixed ids of dashboards/catalog.py: PANEL_IDS, which this layer cannot
#: import (tests/alerting/test_grafana.py checks each names a panel querying the alert's
#: metric). No panel shows the Watchdog, notify-bridge's or the message queues' metrics.
PANELS = {
    "ModelmonModelDown": 110, "ModelmonTargetDown": 111, "ModelmonJobAbsent": 111,
    "ModelmonHighErrorRatio": 101, "ModelmonHighClientErrorRatio": 103, "ModelmonHighLatencyP99": 102,
    "ModelmonPredictionsStopped": 104, "ModelmonPredictionLogDropping": 105, "ModelmonRolloutRolledBack": 120,
    "ModelmonFeatureDrift": 201, "ModelmonFleetFeatureDrift": 202, "ModelmonDatasetDrift": 203, "ModelmonPredictionDrift": 204,
    "ModelmonAccuracyBelowBaseline": 301, "ModelmonF1BelowBaseline": 302, "ModelmonEstimatedAccuracyBelowBaseline": 303,
    "ModelmonMAEAboveBaseline": 304, "ModelmonEstimatedMAEAboveBaseline": 304,
    "ModelmonRMSEAboveBaseline": 305, "ModelmonEstimatedRMSEAboveBaseline": 305,
    "ModelmonLowLabelCoverage": 306, "ModelmonNoLabels": 307,
    "ModelmonTrainingLossNaN": 401, "ModelmonTrainingValidationLossPlateau": 401, "ModelmonTrainingRunStalled": 402,
}
#: Rules about a scrape job, not a model: their dashboard link selects the job.
JOB_RULES = {"target_down", "job_absent"}
#: Rules about a model, not one version (a rollout has two): their link selects the model.
MODEL_RULES = {"rollout_rolled_back"}


def dashboard_uid(key: str) -> str:
    return next((uid for uid, keys in DASHBOARDS.items() if key in keys), "modelmon-alerts")


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


def _query(promql_format: str, *labels: str, fmt: str = 'printf "%.4g"', show: str = "value") -> str:
    """A Prometheus template that runs ``promql_format`` (printf-formatted with the alert's
    labels) and prints ``show`` of its first sample (its value, or ``label "name"``) through
    ``fmt``; empty when the query returns nothing."""
    args = " ".join(f"$labels.{label}" for label in labels)
    return f"{{{{ with printf `{promql_format}` {args} | query }}}}{{{{ . | first | {show} | {fmt} }}}}{{{{ end }}}}"


class Builder:
    """Builds the enabled built-in rules of one configuration."""

    def __init__(self, config: cfg.AlertingConfig) -> None:
        self.config = config
        self.job = config.prometheus.job
        self.base = {"model": "shop", "version": "1", "instance": INSTANCE, "job": self.job}
        #: The labels of an alert on the test series (FLEET labels the series have).
        self.fleet = {"job": self.job, "model": "shop", "version": "1"}

    def series_labels(self, **extra: str) -> str:
        return _labels(**self.base, **extra)

    def rule(self, key: str, name: str, settings: cfg._RuleCommon, **fields) -> AlertRule:
        severity, for_ = DEFAULTS[key]
        for_ = self.config.builtins.override_for or settings.for_ or for_
        return AlertRule(
            name=name, for_=for_, severity=settings.severity or severity, labels=dict(settings.labels),
            channels=list(settings.channels), runbook_url=f"{self.config.runbook_base_url}#{anchor(name)}",
            dashboard_url=self.dashboard_url(key), dashboard_uid=dashboard_uid(key), panel_id=PANELS.get(name), **fields,
        )

    def dashboard_url(self, key: str) -> str:
        """The dashboard that shows what the alert fires on (the uids of modelmon.dashboards,
        which this layer cannot import), on the alert's model and version."""
        if not self.config.grafana.url:
            return ""
        uid = dashboard_uid(key)
        base = f"{self.config.grafana.url.rstrip('/')}/d/{uid}"
        if uid == "modelmon-training":
            return base + "?var-experiment=$experiment&var-run=$run"
        if uid == "modelmon-alerts":
            return base
        if key in JOB_RULES:
            return base + "?var-job=$job"
        if key in MODEL_RULES:
            return base + "?var-model=$model"
        return base + "?var-model=$model&var-version=$version"

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

    def model_down(self, s: cfg.ModelDown) -> AlertRule:
        """Every replica that served a version within ``lookback`` is down. A down target
        exports nothing, so its model and version come from its last modelmon_model_info."""
        job = _quote(self.job)
        expr = (
            f"max by ({FLEET}) (\n  up{{job={job}}}\n  * on (instance, job) group_right ()\n"
            f"  max by (cluster, namespace, instance, job, model, version) "
            f"(last_over_time(modelmon_model_info{{job={job}}}[{s.lookback}]))\n) == 0"
        )
        rule = self.rule(
            "model_down", MODEL_DOWN, s, expr=expr,
            summary="Model $model version $version is down: no replica answers",
            description="Every model server that served model $model version $version (job $job) in the last "
            f"{s.lookback} is down or unreachable: nothing answers its requests. Its serving alerts are held "
            "back while this fires (up = $value).",
            value_format=NUMBER, threshold=Threshold.literal("every replica's up == 0"),
        )
        rule.range_seconds = seconds(s.lookback)
        n = self.eval_minutes(rule)

        def replica(name: str, version: str, up: str) -> list[tuple[str, str]]:
            target = _labels(instance=name, job=self.job)
            info = _labels(model="shop", version=version, flavor="onnx", instance=name, job=self.job)
            served = f"1 1 _x{n}" if up.startswith("1 1 0") else f"1x{n}"
            return [(f"up{{{target}}}", up), (f"modelmon_model_info{{{info}}}", served)]

        down, running = f"1 1 0x{n}", f"1x{n}"
        rule.cases = [
            Case("both replicas of version 1 down, version 2 up",
                 replica("r1:8080", "1", down) + replica("r2:8080", "1", down) + replica("r3:8080", "2", running), n,
                 [(self.fleet, {"value": "0"})]),
            Case("one replica of two down", replica("r1:8080", "1", down) + replica("r2:8080", "1", running), n),
        ]
        return rule

    def target_down(self, s: cfg.TargetDown) -> AlertRule:
        """kube-prometheus' TargetDown: more than a share of the job's targets down."""
        job = _quote(self.job)
        by = "cluster, namespace, job"
        expr = f"(\n  count by ({by}) (up{{job={job}}} == 0)\n  /\n  count by ({by}) (up{{job={job}}})\n) > {s.share!r}"
        rule = self.rule(
            "target_down", "ModelmonTargetDown", s, expr=expr,
            summary="$value of the model servers of job $job are down",
            description="Prometheus cannot scrape $value of the targets of job $job (threshold $threshold). Each "
            "down replica takes its share of traffic off the others; ModelmonModelDown pages when a model version "
            "has no replica left.",
            value_format=PERCENT, threshold=Threshold.literal(PERCENT.expect(s.share)),
        )
        n = self.eval_minutes(rule)

        def targets(total: int, down: int) -> list[tuple[str, str]]:
            return [(f"up{{{_labels(instance=f'r{i}:8080', job=self.job)}}}", f"1 1 0x{n}" if i < down else f"1x{n}")
                    for i in range(total)]

        down_share = min(1.0, 2 * s.share)
        total = 20
        many = max(1, math.ceil(down_share * total))
        rule.cases = [
            Case(f"{many} of {total} targets down", targets(total, many), n,
                 [({"job": self.job}, {"value": PERCENT.expect(many / total)})]),
        ]
        few = math.floor(s.share * total)  # few / total <= share: not more than the threshold
        if few >= 1:
            rule.cases.append(Case(f"{few} of {total} targets down (not more than {PERCENT.expect(s.share)})", targets(total, few), n))
        rule.cases.append(Case("every target up", targets(total, 0), n))
        return rule

    def job_absent(self, s: cfg.JobAbsent) -> AlertRule:
        """The scrape job gone from service discovery: no up series at all, so no other
        serving alert can fire."""
        job = _quote(self.job)
        rule = self.rule(
            "job_absent", "ModelmonJobAbsent", s, expr=f"absent(up{{job={job}}})",
            summary="No model server of job $job is discovered",
            description="Prometheus has no target for job $job: it dropped out of service discovery (or the "
            "deployment is gone). Every other model server alert is silent while this fires ($value).",
            value_format=NUMBER, threshold=Threshold.literal("no up series"),
        )
        n = self.eval_minutes(rule)
        rule.cases = [
            Case("no target of the job", [(f"up{{{_labels(instance='x:9090', job='prometheus')}}}", f"1x{n}")], n,
                 [({"job": self.job}, {"value": "1"})]),
            Case("a target of the job", [(f"up{{{_labels(instance=INSTANCE, job=self.job)}}}", f"0x{n}")], n),
        ]
        return rule

    def watchdog(self, s: cfg.Watchdog) -> AlertRule:
        rule = self.rule(
            "watchdog", WATCHDOG, s, expr="vector(1)",
            summary="Alerting pipeline heartbeat (always firing)",
            description="This alert always fires ($value), so that a dead man's switch (routing.watchdog) notices "
            "when Prometheus, Alertmanager or the path between them stops.",
            value_format=NUMBER, threshold=Threshold.literal("always"),
        )
        rule.cases = [Case("always", [(f"up{{{_labels(instance=INSTANCE, job=self.job)}}}", "1x5")], 3, [({}, {"value": "1"})])]
        return rule

    def _inference(self, window: str, codes: str | None = None) -> str:
        """Inference requests per second by FLEET; ``codes``: a regex on the HTTP status."""
        code = f', code=~"{codes}"' if codes else ""
        return (f'sum by ({FLEET}) (rate(modelmon_requests_total{{model!="_unknown_", '
                f'endpoint=~"{INFERENCE_ENDPOINTS}"{code}}}[{window}]))')

    def error_ratio(self, s: cfg.ErrorRatio) -> AlertRule:
        """Server-side failures (5xx) of inference only, over a short and a long window
        (both must be above the threshold: the SRE workbook's multiwindow alert), with a
        traffic floor. /feedback errors and client mistakes (4xx) do not count."""
        long_seconds = seconds(s.long_window)
        expr = (
            f"(\n  {self._inference(s.window, '5..')}\n  /\n  {self._inference(s.window)}\n) > {s.threshold!r}\n"
            f"and on ({FLEET}) (\n  {self._inference(s.long_window, '5..')}\n  /\n  {self._inference(s.long_window)}\n)"
            f" > {s.threshold!r}\n"
            f"and on ({FLEET}) ({self._inference(s.long_window)} * {long_seconds!r} >= {s.min_requests})"
        )
        rule = self.rule(
            "error_ratio", "ModelmonHighErrorRatio", s, expr=expr,
            summary="Model $model version $version fails $value of its inference requests",
            description=f"$value of the inference requests to model $model version $version failed server-side "
            f"(5xx) over the last {s.window}, and more than $threshold over the last {s.long_window} (at least "
            f"{s.min_requests} requests). modelmon_request_errors_total by reason says why (inference_error, "
            "internal_error, not_ready).",
            value_format=PERCENT, threshold=Threshold.literal(PERCENT.expect(s.threshold)),
        )
        rule.range_seconds = long_seconds
        n = self.eval_minutes(rule, s.window, s.long_window)
        ratio = min(1.0, 2 * s.threshold)
        # Requests per minute: enough that the long window holds at least min_requests.
        per_minute = max(100, math.ceil(2 * s.min_requests / minutes(s.long_window)))

        def series(code: str, values: str, endpoint: str = "predict", reason: str = "inference_error") -> list[tuple[str, str]]:
            """The requests answered with ``code``; an error also counts its reason, as the server does."""
            out = [(f"modelmon_requests_total{{{self.series_labels(endpoint=endpoint, code=code)}}}", values)]
            if code != "200":
                out.append((f"modelmon_request_errors_total{{{self.series_labels(reason=reason)}}}", values))
            return out

        def steady(share: float, rate: float = per_minute) -> list[tuple[str, str]]:
            return series("200", f"0+{rate * (1 - share)!r}x{n}") + series("500", f"0+{rate * share!r}x{n}")

        short = minutes(s.window)
        half = f"0+{per_minute / 2!r}x{n}"
        rule.cases = [
            Case("server errors above the threshold in both windows", steady(ratio), n,
                 [(self.fleet, {"value": PERCENT.expect(ratio)})]),
            Case("client errors and /feedback errors do not count",
                 series("200", half) + series("400", half, reason="missing_feature")
                 + series("503", half, endpoint="feedback", reason="store_unavailable"), n),
            Case("a burst shorter than the long window",
                 series("200", f"0+{per_minute!r}x{n}") + series("500", f"0x{n - short - 1} 0+{per_minute * ratio!r}x{short}"), n),
            Case(f"under the traffic floor ({s.min_requests} requests in {s.long_window})",
                 steady(0.5, rate=s.min_requests / (2 * minutes(s.long_window))), n),
        ]
        return rule

    def client_errors(self, s: cfg.ClientErrorRatio) -> AlertRule:
        expr = (
            f"(\n  {self._inference(s.window, '4..')}\n  /\n  {self._inference(s.window)}\n) > {s.threshold!r}\n"
            f"and on ({FLEET}) ({self._inference(s.window)} * {seconds(s.window)!r} >= {s.min_requests})"
        )
        rule = self.rule(
            "client_errors", "ModelmonHighClientErrorRatio", s, expr=expr,
            summary="Model $model version $version rejects $value of its inference requests",
            description=f"$value of the inference requests to model $model version $version over the last {s.window} "
            "were rejected as the client's mistake (4xx: missing or unknown features, wrong types, bad tokens; "
            "threshold $threshold). A client or its feature pipeline changed: "
            "modelmon_request_errors_total by reason says how.",
            value_format=PERCENT, threshold=Threshold.literal(PERCENT.expect(s.threshold)),
        )
        rule.range_seconds = seconds(s.window)
        n = self.eval_minutes(rule, s.window)
        per_minute = max(100, math.ceil(2 * s.min_requests / minutes(s.window)))

        def steady(share: float) -> list[tuple[str, str]]:
            return [
                (f"modelmon_requests_total{{{self.series_labels(endpoint='infer', code='200')}}}", f"0+{per_minute * (1 - share)!r}x{n}"),
                (f"modelmon_requests_total{{{self.series_labels(endpoint='infer', code='400')}}}", f"0+{per_minute * share!r}x{n}"),
            ]

        bad, good = (1 + s.threshold) / 2, s.threshold / 2
        rule.cases = [
            Case("many requests rejected", steady(bad), n, [(self.fleet, {"value": PERCENT.expect(bad)})]),
            Case("few requests rejected", steady(good), n),
        ]
        return rule

    def latency_p99(self, s: cfg.LatencyP99) -> AlertRule:
        q = s.quantile
        expr = (
            f"histogram_quantile({q!r}, sum by ({FLEET}, le) (rate(modelmon_request_duration_seconds_bucket"
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
                                   [(self.fleet, {"value": SECONDS.expect(p)})]))
        if LATENCY_BUCKETS[0] * q <= s.threshold:
            rule.cases.append(Case("every request under 0.1 ms", histogram(1), n))
        return rule

    def predictions_stopped(self, s: cfg.PredictionsStopped) -> AlertRule:
        """A loaded model that predicted before and now predicts nothing: traffic stopped
        reaching it (a load balancer, a client, a queue), while its server looks healthy.
        Rows predicted are the batch size histogram's sum: every model call's rows, of a
        classifier or a regressor (``modelmon_predictions_total`` is a classifier's only, so
        a regressor's traffic could stop unseen)."""
        predictions = "modelmon_batch_size_sum"
        expr = (
            f"sum by ({FLEET}) (increase({predictions}[{s.window}])) == 0\n"
            f"and on ({FLEET}) sum by ({FLEET}) (increase({predictions}[{s.lookback}] offset {s.window})) >= {s.min_predictions}\n"
            f"and on ({FLEET}) max by ({FLEET}) (modelmon_model_info)"
        )
        rule = self.rule(
            "predictions_stopped", "ModelmonPredictionsStopped", s, expr=expr,
            summary="Model $model version $version has made no prediction for " + s.window,
            description=f"Model $model version $version is loaded but made no prediction in the last {s.window}, "
            f"after at least {s.min_predictions} in the {s.lookback} before ($value predictions now).",
            value_format=NUMBER, threshold=Threshold.literal(f"0 predictions in {s.window}"),
        )
        rule.range_seconds = seconds(s.lookback) + seconds(s.window)
        step = self._step(s.lookback)
        n = math.ceil(self.eval_minutes(rule, s.window, s.lookback) / step)
        per_step = max(100, math.ceil(2 * s.min_predictions * step / minutes(s.lookback)))
        flat = math.ceil((minutes(s.window) + minutes(rule.for_)) / step) + 2
        info = (f"modelmon_model_info{{{self.series_labels(flavor='onnx')}}}", f"1x{n}")
        series = f"modelmon_batch_size_sum{{{self.series_labels()}}}"
        rule.cases = [
            Case("traffic stopped", [info, (series, f"0+{per_step}x{n - flat} {per_step * (n - flat)}x{flat - 1}")], n * step,
                 [(self.fleet, {"value": "0"})], step),
            Case("steady traffic", [info, (series, f"0+{per_step}x{n}")], n * step, interval=step),
        ]
        return rule

    # -- drift -------------------------------------------------------------------------

    def feature_drift(self, s: cfg.FeatureDrift) -> AlertRule:
        """A feature's per-replica verdict score crosses its threshold. One alert per model
        version and feature whatever the method: with ``methods: auto`` the server scores a
        window by p-value tests up to ``pvalue_max_rows`` rows and by PSI beyond, and a
        ``method`` label would end one alert and start another (its ``for`` restarting) when
        a window passes that size. The method that decided is an annotation instead.

        The expression is one part per method, in order, joined by ``or``: the first part
        that fires for a feature gives the value. The ``method`` and ``threshold``
        annotations run the same parts keeping ``method``, on the alert's own labels."""
        by = f"{FLEET}, feature"
        # The alert's labels as matchers of an annotation query (Go printf, explicit indexes).
        where = "cluster=%[1]q, namespace=%[2]q, job=%[3]q, model=%[4]q, version=%[5]q, feature=%[6]q"
        args = "$labels.cluster $labels.namespace $labels.job $labels.model $labels.version $labels.feature"
        rows = "modelmon_drift_window_rows"
        order: list[tuple[tuple[str, ...], str | None]]
        if s.methods == "auto":  # the server's verdict: PSI past pvalue_max_rows, p-value tests up to it
            order = [((PSI.name,), f"> {s.pvalue_max_rows}"), (method_names(direction="low"), f"<= {s.pvalue_max_rows}")]
        else:
            order = [((m,), None) for m in s.methods]

        def parts(keep: str, matchers: str = "") -> str:
            out = []
            for methods, gate in order:
                regex = "|".join(methods)
                high = get_method(methods[0]).direction == "high"
                score = f'modelmon_feature_drift{{method=~"{regex}"{", " + matchers if matchers else ""}}}'
                condition = f'{score} {">=" if high else "<"} modelmon_feature_drift_threshold{{method=~"{regex}"}}'
                if gate:
                    condition = f"({condition})\n  and ignoring (feature, method) ({rows} {gate})"
                out.append(f"{'max' if high else 'min'} by ({keep}) (\n  {condition}\n)")
            return f"\nor on ({by})\n".join(out)

        expr = parts(by)
        deciding = f"{{{{ with printf `{parts(by + ', method', where)}` {args} | query }}}}"
        method = Threshold(
            f'{deciding}{{{{ . | first | label "method" }}}}{{{{ end }}}}',
            f"PSI past {s.pvalue_max_rows} rows, else ks or chi2_pvalue" if s.methods == "auto" else f"first of {', '.join(s.methods)}",
        )
        threshold = Threshold(
            f"{deciding}{{{{ with printf `min(modelmon_feature_drift_threshold{{{where}, method=%[7]q}})` {args} "
            '(. | first | label "method") | query }}{{ . | first | value | printf "%.4g" }}{{ end }}{{ end }}',
            "modelmon_feature_drift_threshold",
        )
        rule = self.rule(
            "feature_drift", "ModelmonFeatureDrift", s, expr=expr,
            summary="Feature $feature of model $model has drifted",
            description="Feature $feature of model $model version $version has drifted from its training data: "
            "$method = $value against a threshold of $threshold (p-values drift below it, the other scores at "
            "or above it).",
            value_format=NUMBER, threshold=threshold, extra={"method": method},
        )
        n = self.eval_minutes(rule)
        # The server's default thresholds, as it exports them (modelmon_feature_drift_threshold).
        thresholds = default_thresholds()

        def scores(rows: int | str, values: dict[tuple[str, str], float], length: int = n) -> list[tuple[str, str]]:
            """``rows``: the window's rows throughout, or their series' values."""
            rows_values = rows if isinstance(rows, str) else f"{rows}x{length}"
            out = [(f"modelmon_drift_window_rows{{{self.series_labels()}}}", rows_values)]
            for (feature, method), value in values.items():
                labels = self.series_labels(feature=feature, method=method)
                out.append((f"modelmon_feature_drift{{{labels}}}", f"{value!r}x{length}"))
                out.append((f"modelmon_feature_drift_threshold{{{labels}}}", f"{thresholds[method]!r}x{length}"))
            return out

        def alert(feature: str, method: str, value: float, threshold: float) -> tuple[dict[str, str], dict[str, str]]:
            return ({**self.fleet, "feature": feature},
                    {"value": NUMBER.expect(value), "threshold": NUMBER.expect(threshold), "method": method})

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
            # One drift episode while the window grows past pvalue_max_rows: ks decides, then
            # PSI. The alert has fired before the switch and is checked less than `for` after
            # it: an alert that ended at the switch and started again would still be pending.
            wait = minutes(rule.for_)
            switch = wait + 3
            at = switch + max(1, wait // 2)
            growing = f"{small}x{switch - 1} {large}x{at + 2 - switch}"
            rule.cases.append(Case(
                f"the window passes {s.pvalue_max_rows} rows mid-episode: still one alert, still firing",
                scores(growing, {("amount", "ks"): 0.001, ("amount", "psi"): 0.5}, at + 2), at,
                [alert("amount", "psi", 0.5, thresholds["psi"])]))
        else:
            bad = {m: DRIFTED_SCORE[get_method(m).direction] for m in s.methods}
            good = {m: STEADY_SCORE[get_method(m).direction] for m in s.methods}
            rule.cases = [
                # One alert for the feature: the first method listed gives its value.
                Case("every method drifted", scores(small, {("amount", m): bad[m] for m in s.methods}), n,
                     [alert("amount", s.methods[0], bad[s.methods[0]], thresholds[s.methods[0]])]),
                Case("no method drifted", scores(small, {("amount", m): good[m] for m in s.methods}), n),
            ]
        return rule

    def fleet_drift(self, s: cfg.FleetDrift) -> AlertRule:
        """The fleet PSI of a feature (the drift recording rules: every replica's bin counts
        pooled over the window), gated on the window's pooled rows. One score per feature
        and version whatever the number of replicas, and one method whatever the rows: no
        per-replica multiple testing, no ks/psi switch. The one built-in rule that reads a
        recording rule: it is exported with it (modelmon-drift.rules.yml)."""
        w = s.window or self.config.prometheus.recording_windows[0]
        by = "cluster, namespace, job, model, version, feature"
        expr = (f"{drift_rules.name('psi', w)} >= {s.threshold!r}\n"
                f"and on ({by}) {drift_rules.name('rows', w)} >= {s.min_rows}")
        rule = self.rule(
            "fleet_drift", "ModelmonFleetFeatureDrift", s, expr=expr,
            summary="Feature $feature of model $model has drifted across the fleet",
            description=f"Feature $feature of model $model version $version has drifted from its training data over "
            f"the last {w}, all replicas pooled: PSI $value against a threshold of $threshold (at least {s.min_rows} rows).",
            value_format=NUMBER, threshold=Threshold.literal(NUMBER.expect(s.threshold)),
        )
        rule.range_seconds = seconds(w)
        n = self.eval_minutes(rule, w)
        reference = [0.25, 0.25, 0.25, 0.25]
        per_minute = {"r1:8080": [10, 0, 0, 0], "r2:8080": [5, 5, 0, 0]}  # pooled: [0.75, 0.25, 0, 0]
        rows = 20 * minutes(w)

        def series(scale: float, shares: dict[str, list[int]]) -> list[tuple[str, str]]:
            out = []
            for instance, counts in shares.items():
                labels = dict(self.base, instance=instance, feature="amount")
                for i, count in enumerate(counts):
                    out.append((f"modelmon_feature_bin_total{{{_labels(**labels, bin=f'b{i}')}}}", f"0+{count * scale!r}x{n}"))
                    out.append((f"modelmon_reference_bin_ratio{{{_labels(**labels, bin=f'b{i}')}}}", f"{reference[i]!r}x{n}"))
            return out

        pooled = [sum(c[i] for c in per_minute.values()) for i in range(4)]
        psi = drift_stats.psi(np.array(reference), np.array(pooled, float))
        enough = max(1.0, 2 * s.min_rows / rows)
        rule.cases = [
            Case("drifted, enough rows", series(enough, per_minute), n,
                 [({**self.fleet, "feature": "amount"}, {"value": NUMBER.expect(psi)})]),
            Case("drifted, too few rows", series(s.min_rows / (2 * rows), per_minute), n),
            Case("steady", series(enough, {"r1:8080": [5, 5, 5, 5], "r2:8080": [1, 1, 1, 1]}), n),
        ]
        return rule

    def dataset_drift(self, s: cfg.DatasetDrift) -> AlertRule:
        rule = self.rule(
            "dataset_drift", "ModelmonDatasetDrift", s,
            expr=f"max by ({FLEET}) (modelmon_dataset_drift_share) >= {s.threshold!r}",
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
                 [(self.fleet, {"value": PERCENT.expect(bad)})]),
            Case("few features drifted", [(series, f"{good!r}x{n}")], n),
        ]
        return rule

    def prediction_drift(self, s: cfg.PredictionDrift) -> AlertRule:
        """A classifier's predicted classes (``output="class"``) or a regressor's predicted
        values (``output="value"``, PSI over the validation predictions' quantile bins);
        a model exports one or the other, never both."""
        rule = self.rule(
            "prediction_drift", "ModelmonPredictionDrift", s,
            expr=f'max by ({FLEET}) (modelmon_prediction_drift{{output=~"class|value", method="psi"}}) >= {s.threshold!r}',
            summary="Model $model predicts in different proportions",
            description="The predictions of model $model version $version (a classifier's classes, a regressor's "
            "values) have shifted from the validation outputs: PSI $value (threshold $threshold).",
            value_format=NUMBER, threshold=Threshold.literal(NUMBER.expect(s.threshold)),
        )
        n = self.eval_minutes(rule)

        def series(klass: float, confidence: float) -> list[tuple[str, str]]:
            return [
                (f"modelmon_prediction_drift{{{self.series_labels(output='class', method='psi')}}}", f"{klass!r}x{n}"),
                (f"modelmon_prediction_drift{{{self.series_labels(output='confidence', method='psi')}}}", f"{confidence!r}x{n}"),
            ]

        def regressor(value: float, js: float) -> list[tuple[str, str]]:
            return [
                (f"modelmon_prediction_drift{{{self.series_labels(output='value', method='psi')}}}", f"{value!r}x{n}"),
                (f"modelmon_prediction_drift{{{self.series_labels(output='value', method='js')}}}", f"{js!r}x{n}"),
            ]

        rule.cases = [
            Case("class shares shifted", series(2 * s.threshold, 0.0), n,
                 [(self.fleet, {"value": NUMBER.expect(2 * s.threshold)})]),
            Case("class shares stable (confidence shift alone does not count)", series(s.threshold / 2, 10 * s.threshold), n),
            Case("a regressor's predicted values shifted", regressor(3 * s.threshold, 0.0), n,
                 [(self.fleet, {"value": NUMBER.expect(3 * s.threshold)})]),
            Case("a regressor's predicted values stable (js is not the alert's method)",
                 regressor(s.threshold / 2, 10 * s.threshold), n),
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
            "correct": f"sum by ({FLEET}) {diagonal}",
            "total": f"sum by ({FLEET}) ({cells})",
            "tp": f"sum by ({FLEET}, cls) {diagonal}",
            "row": f"sum by ({FLEET}, cls) ({by_actual})",
            "col": f"sum by ({FLEET}, cls) ({by_predicted})",
        }

    def _baseline(self, metric: str) -> str:
        return f'max by ({FLEET}) (modelmon_baseline_metric{{metric="{metric}"}})'

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
                 [(self.fleet, {"value": PERCENT.expect(value),
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
                expr=f"{accuracy}\n< on ({FLEET}) ({self._baseline('accuracy')} - {s.margin!r})\n"
                f"and on ({FLEET}) ({enough})",
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
            f1 = f"avg by ({FLEET}) (\n  2 * {tp}\n  / (({parts['row']}\n   + {parts['col']}) > 0)\n)"
            rule = self.rule(
                "realized_quality", "ModelmonF1BelowBaseline", s,
                expr=f"{f1}\n< on ({FLEET}) ({self._baseline('f1_macro')} - {s.margin!r})\n"
                f"and on ({FLEET}) ({enough})",
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
            f"< on ({FLEET}) ({self._baseline('accuracy')} - {s.margin!r})\n"
            f"and on ({FLEET}) ({parts['total']} >= {s.min_rows})",
            summary="Model $model: estimated accuracy $value",
            description=f"The accuracy of model $model version $version estimated without labels (from its "
            f"calibrated probabilities) over the last {s.window} is $value, under its validation baseline by more "
            "than the margin (threshold $threshold).",
            value_format=PERCENT, threshold=self._baseline_threshold("accuracy", s.margin),
        )
        rule.range_seconds = seconds(s.window)
        self._quality_cases(rule, "modelmon_expected_confusion_total", s.window, s.margin, s.min_rows)
        return rule

    # -- regression quality -----------------------------------------------------------------

    def _error_rules(self, key: str, s: cfg.RealizedError | cfg.EstimatedError, prefix: str,
                     counters: tuple[str, str, str], floor: int, what: str) -> list[AlertRule]:
        """MAE and RMSE (``counters``: the rows, absolute and squared error sums of the
        contract) over the window, above the validation baseline by the relative margin,
        when the window has at least ``floor`` rows: sums of every replica, so the ratio is
        the fleet's (the same as rules.regression's recording rules)."""
        rows, absolute, squared = (f"sum by ({FLEET}) (increase({c}_total[{s.window}]))" for c in counters)
        values = {"mae": f"(\n  {absolute}\n  /\n  {rows}\n)", "rmse": f"sqrt(\n  {squared}\n  /\n  {rows}\n)"}
        rules = []
        for metric in s.metrics:
            label = metric.upper()
            baseline = f'max by ({FLEET}) (modelmon_baseline_metric{{metric="{metric}"}})'
            query = _query(f'max(modelmon_baseline_metric{{model=%q, version=%q, metric="{metric}"}})', "model", "version")
            rule = self.rule(
                key, f"Modelmon{prefix}{label}AboveBaseline", s,
                expr=f"{values[metric]}\n> on ({FLEET}) ({baseline} * {1 + s.margin!r})\nand on ({FLEET}) ({rows} >= {floor})",
                summary=f"Model $model: {what} {label} $value",
                description=f"The {what} {label} of model $model version $version over the last {s.window} is $value, "
                f"above its validation baseline by more than the margin (threshold $threshold).",
                value_format=NUMBER,
                threshold=Threshold(f"{query} (baseline) + {PERCENT.expect(s.margin)}",
                                    f"the {metric} baseline + {PERCENT.expect(s.margin)}"),
            )
            rule.range_seconds = seconds(s.window)
            self._error_cases(rule, metric, counters, s.window, s.margin, floor)
            rules.append(rule)
        return rules

    def _error_cases(self, rule: AlertRule, metric: str, counters: tuple[str, str, str], window: str,
                     margin: float, floor: int) -> None:
        """Baselines MAE 2 and RMSE 2.5: the firing case's errors are 1.5 times the threshold,
        the healthy case's at the baseline, the floor case's as bad but on too few rows."""
        step = self._step(window)
        n = math.ceil(self.eval_minutes(rule, window) / step)
        steps_in_window = minutes(window) // step
        baseline = {"mae": 2.0, "rmse": 2.5}
        enough = max(1, math.ceil(2 * floor / steps_in_window))  # rows a step: twice the floor a window
        few = floor / (2 * steps_in_window)

        def series(factor: float, per_step: float) -> list[tuple[str, str]]:
            """Errors ``factor`` times the baselines, ``per_step`` rows a step."""
            mae, rmse = baseline["mae"] * factor, baseline["rmse"] * factor
            out = [(f"modelmon_baseline_metric{{{self.series_labels(metric=m)}}}", f"{v!r}x{n}") for m, v in baseline.items()]
            for counter, value in zip(counters, (1.0, mae, rmse**2), strict=True):
                out.append((f"{counter}_total{{{self.series_labels()}}}", f"0+{per_step * value!r}x{n}"))
            return out

        bad = 1.5 * (1 + margin)
        threshold = f"{NUMBER.expect(baseline[metric])} (baseline) + {PERCENT.expect(margin)}"
        rule.cases = [
            Case("errors above the baseline", series(bad, enough), n * step,
                 [(self.fleet, {"value": NUMBER.expect(baseline[metric] * bad), "threshold": threshold})], step),
            Case("errors at the baseline", series(1.0, enough), n * step, interval=step),
            Case("errors above the baseline on too few rows", series(bad, few), n * step, interval=step),
        ]

    def realized_error(self, s: cfg.RealizedError) -> list[AlertRule]:
        counters = ("modelmon_regression_labelled", "modelmon_regression_absolute_error", "modelmon_regression_squared_error")
        return self._error_rules("realized_error", s, "", counters, s.min_labels, "realized")

    def estimated_error(self, s: cfg.EstimatedError) -> list[AlertRule]:
        """The label-free estimate: a version without an estimator counts no estimated row,
        so the floor keeps it quiet."""
        counters = ("modelmon_regression_estimated", "modelmon_regression_expected_absolute_error",
                    "modelmon_regression_expected_squared_error")
        return self._error_rules("estimated_error", s, "Estimated", counters, s.min_rows, "estimated")

    def _had_labels(self, lookback: str) -> str:
        """Models that received a label within ``lookback``: the matched counter's largest
        pooled value over the lookback, not its current value, which a restart sets to 0."""
        matched = 'modelmon_feedback_total{outcome="matched"}'
        return f"max_over_time((sum by ({FLEET}) ({matched}))[{lookback}:1h]) > 0"

    def _label_feed(self, n: int, per_step: int, share: float, restart: int | None = None) -> list[tuple[str, str]]:
        """Predictions at ``per_step`` a step, ``share`` of them labelled; with ``restart``,
        the replica restarts at that step (both counters back to 0) and no label comes after."""
        predictions = f"modelmon_batch_size_sum{{{self.series_labels()}}}"
        feedback = f"modelmon_feedback_total{{{self.series_labels(outcome='matched')}}}"
        if restart is None:
            return [(predictions, f"0+{per_step}x{n}"), (feedback, f"0+{per_step * share!r}x{n}")]
        return [(predictions, f"0+{per_step}x{restart - 1} 0+{per_step}x{n - restart}"),
                (feedback, f"0+{per_step * share!r}x{restart - 1} 0x{n - restart}")]

    def label_coverage(self, s: cfg.LabelCoverage) -> AlertRule:
        """Labels matched as a share of the rows predicted. Rows predicted are the batch size
        histogram's sum: every model call's rows, of a classifier or a regressor
        (``modelmon_predictions_total`` is a classifier's only, so a regressor's coverage
        had no data)."""
        predictions = f"sum by ({FLEET}) (increase(modelmon_batch_size_sum[{s.window}]))"
        labelled = f'sum by ({FLEET}) (increase(modelmon_feedback_total{{outcome="matched"}}[{s.window}]))'
        expr = f"(\n  {labelled}\n  /\n  {predictions}\n) < {s.threshold!r}\nand on ({FLEET}) ({predictions} >= {s.min_predictions})"
        if s.require_some_labels:
            expr += f"\nand on ({FLEET}) ({self._had_labels(s.labels_lookback)})"
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
        low, high = s.threshold / 2, min(1.0, 2 * s.threshold)
        rule.cases = [
            Case("few labels", self._label_feed(n, per_step, low), n * step,
                 [(self.fleet, {"value": PERCENT.expect(low)})], step),
            Case("enough labels", self._label_feed(n, per_step, high), n * step, interval=step),
        ]
        if s.require_some_labels:
            rule.cases.append(Case("never labelled (no label pipeline)", self._label_feed(n, per_step, 0.0), n * step, interval=step))
            # Labels at twice the threshold for a window, then a restart with the label feed
            # dead: the guard must remember the labels from before the restart.
            restart = math.ceil(minutes(s.window) / step) + 2
            long_n = restart + n
            rule.cases.append(Case("restart with the label feed dead", self._label_feed(long_n, per_step, high, restart),
                                   long_n * step, [(self.fleet, {"value": PERCENT.expect(0.0)})], step))
        return rule

    def no_labels(self, s: cfg.NoLabels) -> AlertRule:
        """No label at all for ``window``: detects a dead label feed in hours, where the
        coverage ratio over a day takes most of that day to fall under its threshold. Rows
        predicted of either task, as ``label_coverage`` counts them."""
        labelled = f'sum by ({FLEET}) (increase(modelmon_feedback_total{{outcome="matched"}}[{s.window}]))'
        predictions = f"sum by ({FLEET}) (increase(modelmon_batch_size_sum[{s.window}]))"
        rule = self.rule(
            "no_labels", "ModelmonNoLabels", s,
            expr=f"{labelled} == 0\nand on ({FLEET}) {predictions} >= {s.min_predictions}\n"
            f"and on ({FLEET}) ({self._had_labels(s.labels_lookback)})",
            summary=f"Model $model version $version: no label for {s.window}",
            description=f"Model $model version $version made predictions but received no matched label in the last "
            f"{s.window} ($value), though it had labels within {s.labels_lookback}: the label feed has stopped.",
            value_format=NUMBER, threshold=Threshold.literal(f"0 labels in {s.window}"),
        )
        rule.range_seconds = seconds(s.window)
        step = self._step(s.window)
        window_steps = math.ceil(minutes(s.window) / step)
        per_step = 100 * max(1, math.ceil(s.min_predictions / (100 * window_steps)))
        restart = window_steps + 2
        n = restart + math.ceil(self.eval_minutes(rule, s.window) / step)
        rule.cases = [
            Case("restart with the label feed dead", self._label_feed(n, per_step, 0.5, restart), n * step,
                 [(self.fleet, {"value": "0"})], step),
            Case("labels flowing", self._label_feed(n, per_step, 0.5), n * step, interval=step),
            Case("never labelled (no label pipeline)", self._label_feed(n, per_step, 0.0), n * step, interval=step),
        ]
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

    def _counter_increased(self, key: str, name: str, s: cfg.BridgeFailed | cfg.PredictionLogDropping, metric: str,
                           by: str, labels: dict[str, str], **text: str) -> AlertRule:
        """Fires for ``window`` after ``metric`` (a counter) increased."""
        rule = self.rule(key, name, s, expr=f"sum by ({by}) (increase({metric}[{s.window}])) > 0",
                         value_format=NUMBER, threshold=Threshold.literal("any"), **text)
        rule.range_seconds = seconds(s.window)
        n = self.eval_minutes(rule, s.window)
        series = metric.split("{")[0] + "{" + _labels(**labels) + (", " + metric.split("{")[1][:-1] if "{" in metric else "") + "}"
        expected = {k: v for k, v in labels.items() if k in by.split(", ")}
        rule.cases = [
            Case("the counter increased every minute", [(series, f"0+5x{n}")], n,
                 [(expected, {"value": NUMBER.expect(5 * minutes(s.window))})]),
            Case("the counter stayed", [(series, f"0x{n}")], n),
        ]
        return rule

    def bridge_failed(self, s: cfg.BridgeFailed) -> AlertRule:
        return self._counter_increased(
            "bridge_failed", "ModelmonNotifyBridgeFailing", s, 'modelmon_bridge_notifications_total{outcome="failed"}',
            "instance, job, channel", {"instance": "notify-bridge:9096", "job": "notify-bridge", "channel": "phones"},
            summary="notify-bridge $instance failed to deliver $value notifications",
            description=f"notify-bridge $instance (job $job) gave up on $value messages to the channel named by its channel label in the last "
            f"{s.window}, after every retry failed: the channel's service refuses them or is unreachable "
            "(modelmon_bridge_delivery_attempts_total, and the bridge's log, say why).",
        )

    def prediction_log_dropping(self, s: cfg.PredictionLogDropping) -> AlertRule:
        return self._counter_increased(
            "prediction_log_dropping", "ModelmonPredictionLogDropping", s,
            'modelmon_prediction_log_rows_total{outcome="dropped"}', "cluster, namespace, job, instance",
            {"instance": INSTANCE, "job": self.job},
            summary="Model server $instance dropped $value prediction log rows",
            description=f"The prediction log of $instance (job $job) dropped $value rows in the last {s.window}: the store "
            "was unreachable and the spool full, so those predictions cannot be labelled or audited.",
        )


    # -- rollouts (docs/rollout.md) -----------------------------------------------------

    def rollout_rolled_back(self, s: cfg.RolloutRolledBack) -> AlertRule:
        """A rollout's gates rolled its candidate back (docs/rollout.md): the system worked, so
        a warning that resolves ``window`` after the decision, not a page.

        Only the replica that decided counts the decision. Its counter is exported from the
        moment the replica sees the rollout, at 0; a candidate that fails within its first
        requests can be rolled back before Prometheus has scraped that 0, so the series is
        born at 1, which ``increase`` cannot see (no earlier sample). The second part catches
        that: a roll_back series above 0 that did not exist ``window`` ago."""
        by = "cluster, namespace, job, model"
        counter = 'modelmon_rollout_decisions_total{action="roll_back"}'
        expr = (f"sum by ({by}) (increase({counter}[{s.window}])) > 0\nor\n"
                f"sum by ({by}) ({counter} unless {counter} offset {s.window}) > 0")
        where = 'cluster=%[1]q, namespace=%[2]q, job=%[3]q, model=%[4]q, state="rolled_back"'
        candidate = Threshold(
            _query(f"max by (candidate) (modelmon_rollout_state{{{where}}} == 1)", "cluster", "namespace", "job", "model",
                   show='label "candidate"', fmt='printf "version %s"'),
            # Grafana's alert templates cannot query: name where to read it.
            "see `modelmon rollout status {{ $labels.model }}`",
        )
        rule = self.rule(
            "rollout_rolled_back", "ModelmonRolloutRolledBack", s, expr=expr,
            summary="The rollout of model $model rolled back its candidate ($candidate)",
            description=f"A gate of the rollout of model $model (job $job) failed and the candidate ("
            f"$candidate) was rolled back: $value rollback decision(s) in the last {s.window}. The primary serves "
            "all traffic again. `modelmon rollout status $model` shows the decision's evidence: the failed gate "
            "and its interval against its margin.",
            value_format=INTEGER, threshold=Threshold.literal("any rollback"), extra={"candidate": candidate},
        )
        rule.range_seconds = seconds(s.window)
        n = self.eval_minutes(rule, s.window)
        expected = {"job": self.job, "model": "shop"}

        def replica(instance: str, roll_back: str, advance: str = "") -> list[tuple[str, str]]:
            common = _labels(model="shop", instance=instance, job=self.job)
            out = [(f'modelmon_rollout_decisions_total{{{common}, action="roll_back"}}', roll_back),
                   (f'modelmon_rollout_decisions_total{{{common}, action="advance"}}', advance or f"0x{n}")]
            for state, value in (("running", "0"), ("rolled_back", "1")):
                labels = _labels(model="shop", primary="1", candidate="2", mode="canary", state=state,
                                 instance=instance, job=self.job)
                out.append((f"modelmon_rollout_state{{{labels}}}", f"{value}x{n}"))
            return out

        recent = f"0x{n - 5} 1x5"  # the decision 4 minutes before the evaluation
        rule.cases = [
            Case("one of two replicas rolled back within the window",
                 replica("r1:8080", recent) + replica("r2:8080", f"0x{n}"), n,
                 [(expected, {"value": INTEGER.expect(1), "candidate": "version 2"})]),
            Case("rolled back before the replica's first scrape (the series is born at 1)",
                 replica("r1:8080", f"_x{n - 5} 1x5"), n, [(expected, {"value": INTEGER.expect(1), "candidate": "version 2"})]),
            Case("steps advanced, nothing rolled back", replica("r1:8080", f"0x{n}", f"0 0 1 1 2x{n - 4}"), n),
            Case("rolled back longer ago than the window", replica("r1:8080", f"0 1x{n}"), n),
            Case("a replica born at 1 longer ago than the window", replica("r1:8080", f"_ 1x{n}"), n),
        ]
        return rule

    # -- message queues (modelmon.streams) ----------------------------------------------

    def stream_consumer_stalled(self, s: cfg.StreamConsumerStalled) -> AlertRule:
        by = "cluster, namespace, job, instance, broker"
        rule = self.rule(
            "stream_consumer_stalled", "ModelmonStreamConsumerStalled", s,
            expr=f"(max by ({by}) (modelmon_stream_consumer_lag_messages) > 0 and on ({by}) "
            f"sum by ({by}) (increase(modelmon_stream_messages_total[{s.window}])) == 0) "
            f'or max by ({by}) (modelmon_stream_connected{{role="labels"}}) == 0',
            summary="The label consumer of $instance is stalled ($value messages wait)",
            description=f"The broker label consumer of $instance (job $job; the broker in the alert's broker label) consumed nothing in the last "
            f"{s.window} while the broker reports $value messages waiting for it; a value of 0 means it has no "
            "broker connection (its lag is unknown). Labels wait in the broker; nothing is lost.",
            value_format=INTEGER, threshold=Threshold.literal("any message waiting, none consumed"),
        )
        rule.range_seconds = seconds(s.window)
        n = self.eval_minutes(rule, s.window)
        labels = _labels(instance=INSTANCE, job=self.job, broker="rabbit")
        expected = {"instance": INSTANCE, "job": self.job, "broker": "rabbit"}

        def consumer(lag: str, consumed: str, connected: str) -> list[tuple[str, str]]:
            return [
                (f"modelmon_stream_consumer_lag_messages{{{labels}}}", lag),
                (f'modelmon_stream_messages_total{{{labels}, outcome="committed"}}', consumed),
                (f'modelmon_stream_connected{{{labels}, role="labels"}}', connected),
            ]

        rule.cases = [
            Case("messages wait, none consumed", consumer(f"50x{n}", f"0x{n}", f"1x{n}"), n,
                 [(expected, {"value": INTEGER.expect(50)})]),
            Case("no broker connection", consumer(f"0x{n}", f"0x{n}", f"0x{n}"), n, [(expected, {"value": INTEGER.expect(0)})]),
            Case("messages wait and are consumed", consumer(f"50x{n}", f"0+10x{n}", f"1x{n}"), n),
            Case("nothing to consume", consumer(f"0x{n}", f"0x{n}", f"1x{n}"), n),
        ]
        return rule

    def stream_spool_growing(self, s: cfg.StreamSpoolGrowing) -> AlertRule:
        by = "cluster, namespace, job, instance, broker"
        rule = self.rule(
            "stream_spool_growing", "ModelmonStreamSpoolGrowing", s,
            expr=f"max by ({by}) (modelmon_stream_spool_bytes) and on ({by}) "
            f"(max by ({by}) (min_over_time(modelmon_stream_spool_bytes[{s.window}])) > 0) and on ({by}) "
            f"(max by ({by}) (deriv(modelmon_stream_spool_bytes[{s.window}])) > 0)",
            summary="Prediction events of $instance pile up on disk ($value bytes)",
            description=f"The broker (the alert's broker label) has not taken the prediction events of $instance (job $job) "
            f"for {s.window} and their spool grows: $value bytes wait on disk. Past the spool's bound "
            "(--events-spool-mb) the newest events are dropped (ModelmonStreamEventsDropped).",
            value_format=NUMBER, threshold=Threshold.literal(f"events waiting {s.window}, and more coming"),
        )
        rule.range_seconds = seconds(s.window)
        n = self.eval_minutes(rule, s.window)
        labels = _labels(instance=INSTANCE, job=self.job, broker="nats")
        expected = {"instance": INSTANCE, "job": self.job, "broker": "nats"}
        series = f"modelmon_stream_spool_bytes{{{labels}}}"
        rule.cases = [
            Case("the broker is down: the spool grows", [(series, f"1000+1000x{n}")], n,
                 [(expected, {"value": NUMBER.expect(1000 + 1000 * n)})]),
            Case("the broker came back: the spool drains", [(series, f"{1000 * (n + 1)}-1000x{n}")], n),
            Case("nothing waits", [(series, f"0x{n}")], n),
        ]
        return rule

    def stream_events_dropped(self, s: cfg.StreamEventsDropped) -> AlertRule:
        by = "cluster, namespace, job, instance, broker"
        rule = self.rule(
            "stream_events_dropped", "ModelmonStreamEventsDropped", s,
            expr=f'sum by ({by}) (increase(modelmon_stream_events_total{{outcome="dropped"}}[{s.window}])) > 0',
            summary="$instance dropped $value prediction events",
            description=f"The prediction event spool of $instance (job $job) was full: $value events for the "
            f"broker (the alert's broker label) were dropped in the last {s.window}. The predictions are in the "
            "store; their events will never reach the broker.",
            value_format=NUMBER, threshold=Threshold.literal("any dropped event"),
        )
        rule.range_seconds = seconds(s.window)
        n = self.eval_minutes(rule, s.window)
        labels = _labels(instance=INSTANCE, job=self.job, broker="redis", outcome="dropped")
        expected = {"instance": INSTANCE, "job": self.job, "broker": "redis"}
        rule.cases = [
            Case("events dropped every minute", [(f"modelmon_stream_events_total{{{labels}}}", f"0+5x{n}")], n,
                 [(expected, {"value": NUMBER.expect(5 * minutes(s.window))})]),
            Case("nothing dropped", [(f"modelmon_stream_events_total{{{labels}}}", f"0x{n}")], n),
        ]
        return rule


def builtin_rules(config: cfg.AlertingConfig) -> list[AlertRule]:
    return Builder(config).build()
