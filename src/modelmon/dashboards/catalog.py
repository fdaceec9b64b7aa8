"""The five dashboards: serving, drift and data quality, model quality, training, alerts.

Every query reads the metric catalogue (docs/metrics.md), the recording rules of
``modelmon rules export`` (``level:modelmon_<counter>:<operation><window>``) or the store's SQL views
(``labelled_predictions``, ``training_metrics``, ``training_final_metrics``,
``training_runs``). The ``$window`` variable names the recording-rule window the rules were
exported with (``--window``, default 1h).
"""

from __future__ import annotations

from dataclasses import replace

from modelmon.dashboards.spec import (
    Dashboard,
    Panel,
    Prom,
    Row,
    SeriesStyle,
    Sql,
    Threshold,
    Variable,
)
from modelmon.monitoring.methods import JS, METHODS, PSI, method_names

SERVING_UID = "modelmon-serving"
DRIFT_UID = "modelmon-drift"
QUALITY_UID = "modelmon-quality"
TRAINING_UID = "modelmon-training"
ALERTS_UID = "modelmon-alerts"

#: Selects the chosen model and versions in every Prometheus query.
SEL = 'cluster="$cluster", job=~"$job", model="$model", version=~"$version", instance=~"$instance"'
#: The same for the recording rules, which sum the replicas (no instance label).
RULES = 'cluster="$cluster", job=~"$job", model="$model", version=~"$version"'
#: The chosen scrape jobs and model: a model of the same name in another job (staging,
#: another team's Prometheus job) is left out unless its job is chosen too.
MODEL = 'cluster="$cluster", job=~"$job", model="$model", instance=~"$instance"'
#: Inference over V2 REST, V2 gRPC and the records endpoint.
PREDICTION_ENDPOINTS = 'endpoint=~"infer|grpc_infer|predict"'

#: Fixed ids of the panels that show an alert's condition, by dashboard uid and panel title:
#: the Grafana alert rules link to them (``__panelId__``), by the same numbers in
#: alerting/builtins.py: PANELS (the two packages do not import each other; a test checks
#: that every one names a panel here that queries the alert's metric).
PANEL_IDS: dict[str, dict[str, int]] = {
    SERVING_UID: {"Server error ratio (5xx)": 101, "p99 request latency": 102, "Responses by status code": 103,
                  "Model calls and rows per second": 104, "Prediction log rows": 105, "Loaded versions": 110,
                  "Targets down": 111, "Rollout decisions": 120},
    DRIFT_UID: {"Per-replica drift score ($method) against its threshold": 201,
                "Fleet PSI per feature against the threshold": 202, "Features drifted": 203, "Prediction drift": 204},
    QUALITY_UID: {"Realized accuracy against baseline": 301, "Macro F1": 302, "Estimated accuracy (CBPE) against baseline": 303,
                  "MAE: realized, estimated and baseline": 304, "RMSE: realized, estimated and baseline": 305,
                  "Label coverage": 306, "Labels received by outcome": 307},
    TRAINING_UID: {"Live $metric": 401, "Time since the last report": 402},
}


def _with_ids(dashboard: Dashboard) -> Dashboard:
    """The dashboard with the fixed ids of PANEL_IDS set on its panels (the stat, where a
    title is both a stat and a time series)."""
    ids = dict(PANEL_IDS.get(dashboard.uid, {}))
    rows = []
    for row in dashboard.rows:
        panels = []
        for panel in row.panels:
            if panel.title in ids and (panel.kind == "stat" or not any(
                    p.title == panel.title and p.kind == "stat" for p in dashboard.panels)):
                panels.append(replace(panel, id=ids.pop(panel.title)))
            else:
                panels.append(panel)
        rows.append(replace(row, panels=tuple(panels)))
    if ids:
        raise ValueError(f"dashboard {dashboard.uid} has no panel {', '.join(ids)}")
    return replace(dashboard, rows=tuple(rows))


#: Drift methods' default thresholds (monitoring/methods.py), as panel text and colours.
PSI_DRIFT = PSI.default_threshold
JS_DRIFT = JS.default_threshold
#: Green under the PSI threshold, red at and above it.
GOOD_RED = (Threshold(None, "green"), Threshold(PSI_DRIFT, "red"))


def _model_variables(feature: bool = False, window: bool = False) -> tuple[Variable, ...]:
    # As kubernetes-mixin: cluster single-valued and hidden (grafana export --multi-cluster
    # shows it); without a cluster label it is empty and cluster="" matches every series.
    # job and instance as dashboard-linter's template rules want them: multi, All = .+.
    variables = [
        Variable("cluster", "Cluster", "The cluster (the cluster label Prometheus adds, as in kube-prometheus); hidden with one cluster.",
                 "query", query="label_values(modelmon_model_info, cluster)", hidden=True, may_be_empty=True),
        Variable("job", "Job", "Prometheus scrape jobs of the model servers (several deployments of modelmon: staging, production).",
                 "query", query='label_values(modelmon_model_info{cluster="$cluster"}, job)', multi=True, include_all=True,
                 all_value=".+", default="All"),
        Variable("model", "Model", "A served model (from modelmon_model_info).", "query",
                 query='label_values(modelmon_model_info{cluster="$cluster", job=~"$job"}, model)'),
        # No custom All value: the SQL panels read $version too (VERSION_SQL).
        Variable("version", "Version", "Model versions to show.", "query",
                 query='label_values(modelmon_model_info{cluster="$cluster", job=~"$job", model="$model"}, version)',
                 multi=True, include_all=True, default="All"),
        Variable("instance", "Instance", "Replicas (scrape targets) serving the model; panels from the recording rules sum every replica.",
                 "query", query='label_values(modelmon_model_info{cluster="$cluster", job=~"$job", model="$model", version=~"$version"}, instance)',
                 multi=True, include_all=True, all_value=".+", default="All"),
    ]
    if feature:
        variables.append(
            Variable("feature", "Feature", "Input features to show (from the reference profile).", "query",
                     query='label_values(modelmon_reference_bin_ratio{cluster="$cluster", job=~"$job", model="$model"}, feature)',
                     multi=True, include_all=True, all_value=".*", default="All")
        )
    if window:
        variables.append(_window_variable())
    return tuple(variables)


def _window_variable() -> Variable:
    return Variable(
        "window", "Rules window",
        "The window the recording rules were exported with (modelmon rules export --window): only recorded "
        "windows are offered, since any other would show empty panels.",
        "custom", options=("1h",), default="1h",
    )


def _quantiles(metric: str, extra: str = "", what: str = "") -> tuple[Prom, ...]:
    selector = f"{SEL}{', ' + extra if extra else ''}"
    return tuple(
        Prom(
            f"histogram_quantile({q}, sum by (version, le) (rate({metric}_bucket{{{selector}}}[$__rate_interval])))",
            legend=f"p{int(q * 100)} v{{{{version}}}}{what}",
        )
        for q in (0.5, 0.95, 0.99)
    )


# -- 1. Serving ------------------------------------------------------------------------------


def serving() -> Dashboard:
    requests = f"modelmon_requests_total{{{SEL}}}"
    errors = f"modelmon_request_errors_total{{{SEL}}}"
    inference = f"modelmon_requests_total{{{SEL}, {PREDICTION_ENDPOINTS}}}"
    overview = Row("Overview", (
        # The inference endpoints only, as ModelmonHighErrorRatio: readiness probes and
        # metadata requests would dilute the ratio (3.3% shown while the alert paged at 10%).
        Panel("stat", "Inference requests per second", "Requests answered on the inference endpoints (infer, predict), all versions selected; probes and metadata left out.",
              "reqps", (Prom(f"sum(rate({inference}[$__rate_interval]))"),), width=6, height=5),
        Panel("stat", "Server error ratio (5xx)", "Inference requests answered 5xx as a share of all inference requests: the numerator and denominator of ModelmonHighErrorRatio (red at its default 5%). Client mistakes (4xx) are on the panels below.",
              "percentunit", (Prom(f'sum(rate(modelmon_requests_total{{{SEL}, {PREDICTION_ENDPOINTS}, code=~"5.."}}[$__rate_interval])) / sum(rate({inference}[$__rate_interval]))'),),
              width=6, height=5, thresholds=(Threshold(None, "green"), Threshold(0.01, "orange"), Threshold(0.05, "red"))),
        Panel("stat", "p99 request latency", "99th percentile of the whole request (body read to response) on the inference endpoints.",
              "s", (Prom(f"histogram_quantile(0.99, sum by (le) (rate(modelmon_request_duration_seconds_bucket{{{SEL}, {PREDICTION_ENDPOINTS}}}[$__rate_interval])))"),),
              width=6, height=5, thresholds=(Threshold(None, "green"), Threshold(0.5, "red"))),
        Panel("stat", "In flight", "Requests in progress now (all versions of the model).", "short",
              (Prom(f"sum(modelmon_inflight_requests{{{MODEL}}})"),), width=6, height=5),
    ))
    traffic = Row("Traffic and errors", (
        Panel("timeseries", "Requests per second by version and endpoint", "modelmon_requests_total per version and endpoint (infer = V2, predict = records).",
              "reqps", (Prom(f"sum by (version, endpoint) (rate({requests}[$__rate_interval]))", "v{{version}} {{endpoint}}"),), width=8),
        Panel("timeseries", "Responses by status code", "Requests per second by HTTP status.", "reqps",
              (Prom(f"sum by (code) (rate({requests}[$__rate_interval]))", "{{code}}"),), width=8),
        Panel("timeseries", "Error ratio by reason", "Errors per second of each reason as a share of all requests; reasons with no errors are left out.",
              "percentunit", (Prom(f"(sum by (reason) (rate({errors}[$__rate_interval])) / on () group_left () sum(rate({requests}[$__rate_interval]))) > 0",
                                   "{{reason}}"),), width=8),
    ))
    latency = Row("Latency", (
        Panel("timeseries", "Request latency (p50, p95, p99)", "Whole request on the inference endpoints, body read to response, per version.",
              "s", _quantiles("modelmon_request_duration_seconds", PREDICTION_ENDPOINTS), width=8),
        Panel("timeseries", "Queue wait (p50, p95, p99)", "Time a request's rows waited for their batch, per version.",
              "s", _quantiles("modelmon_queue_duration_seconds"), width=8),
        Panel("timeseries", "Inference per batch (p50, p95, p99)", "Model call per batch, per version.",
              "s", _quantiles("modelmon_inference_duration_seconds"), width=8),
    ))
    batching = Row("Batching and load", (
        Panel("timeseries", "Batch size", "Rows per model call: the mean and the 95th percentile, per version.", "short", (
            Prom(f"sum by (version) (rate(modelmon_batch_size_sum{{{SEL}}}[$__rate_interval])) / sum by (version) (rate(modelmon_batch_size_count{{{SEL}}}[$__rate_interval]))",
                 "mean v{{version}}"),
            Prom(f"histogram_quantile(0.95, sum by (version, le) (rate(modelmon_batch_size_bucket{{{SEL}}}[$__rate_interval])))", "p95 v{{version}}"),
        ), width=8),
        Panel("timeseries", "Model calls and rows per second", "Model calls (batches) and predicted rows per second, per version.", "ops", (
            Prom(f"sum by (version) (rate(modelmon_inference_duration_seconds_count{{{SEL}}}[$__rate_interval]))", "calls v{{version}}"),
            # Rows of either task (a regressor has no modelmon_predictions_total), as
            # ModelmonPredictionsStopped, which links here, counts them.
            Prom(f"sum by (version) (rate(modelmon_batch_size_sum{{{SEL}}}[$__rate_interval]))", "rows v{{version}}"),
        ), width=8),
        Panel("timeseries", "In-flight requests", "Requests in progress, summed over replicas.", "short",
              (Prom(f"sum(modelmon_inflight_requests{{{MODEL}}})", "in flight"),), width=8),
        Panel("table", "Loaded versions", "Model versions loaded by each replica, with the runtime that serves them (modelmon_model_info).",
              "none", (Prom(f"modelmon_model_info{{{MODEL}}}", instant=True, format="table"),), width=24, height=6,
              transformations=({"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}}},)),
    ))
    # Process metrics have no model label: the replicas are those that serve $model.
    serves = f"on (instance, job) group_left () max by (instance, job) (modelmon_model_info{{{MODEL}}})"
    # up has no model label: every target of the chosen jobs.
    up = 'up{cluster="$cluster", job=~"$job"}'
    replicas = Row("Replicas: saturation and the prediction log", (
        Panel("timeseries", "Targets down", "Share of each chosen job's scrape targets that Prometheus cannot scrape (up == 0), every model of the job: "
              "ModelmonTargetDown fires above 10% for 10 minutes; a job with no target left shows nothing here and fires ModelmonJobAbsent.",
              "percentunit", (Prom(f"(count by (job) ({up} == 0) or count by (job) ({up}) * 0) / count by (job) ({up})", "{{job}}"),),
              width=24, min=0, max=1, thresholds=(Threshold(None, "green"), Threshold(0.1, "red")), show_thresholds=True),
        Panel("timeseries", "CPU per replica", "CPU seconds per second of each server process serving the model (1 = one core busy), from process_cpu_seconds_total.",
              "short", (Prom(f"rate(process_cpu_seconds_total[$__rate_interval]) * {serves}", "{{instance}}"),), width=6, min=0),
        Panel("timeseries", "Memory per replica", "Resident memory of each server process serving the model (process_resident_memory_bytes).",
              "bytes", (Prom(f"process_resident_memory_bytes * {serves}", "{{instance}}"),), width=6, min=0),
        Panel("timeseries", "Open files per replica", "Open file descriptors as a share of the process's limit (process_open_fds / process_max_fds): at 100% the server cannot accept connections.",
              "percentunit", (Prom(f"process_open_fds / process_max_fds * {serves}", "{{instance}}"),), width=6, min=0,
              thresholds=(Threshold(None, "green"), Threshold(0.8, "red"))),
        Panel("timeseries", "Uptime per replica", "Time since each server process started (time() - process_start_time_seconds): a drop is a restart.",
              "s", (Prom(f"(time() - process_start_time_seconds) * {serves}", "{{instance}}"),), width=6, min=0),
        Panel("timeseries", "Prediction log rows", "Rows of the prediction log per second by outcome (written, spooled, replayed, dropped), servers of the model: dropped rows fire ModelmonPredictionLogDropping.",
              "short", (Prom(f"sum by (outcome) (rate(modelmon_prediction_log_rows_total[$__rate_interval]) * {serves})", "{{outcome}}"),), width=12, min=0),
        Panel("timeseries", "Prediction log spool", "Journal segments waiting for the store, per replica (modelmon_prediction_log_spool_files): growing while the store is unreachable.",
              "short", (Prom(f"modelmon_prediction_log_spool_files * {serves}", "{{instance}}"),), width=12, min=0),
    ))
    # Every model of the chosen jobs, whatever $model: the overview across models.
    every = f'cluster="$cluster", job=~"$job", model!="_unknown_", {PREDICTION_ENDPOINTS}'
    fleet = Row("Every model", (
        Panel("timeseries", "Inference requests per second, every model", "Inference requests per model and version, for every model of the chosen jobs (not only $model).",
              "reqps", (Prom(f"sum by (model, version) (rate(modelmon_requests_total{{{every}}}[$__rate_interval]))", "{{model}} v{{version}}"),),
              width=12, min=0),
        Panel("timeseries", "Server error ratio, every model", "5xx inference answers as a share of inference requests, per model and version (what ModelmonHighErrorRatio fires on), every model of the chosen jobs.",
              "percentunit", (Prom(f'sum by (model, version) (rate(modelmon_requests_total{{{every}, code=~"5.."}}[$__rate_interval]))'
                                   f" / sum by (model, version) (rate(modelmon_requests_total{{{every}}}[$__rate_interval]))", "{{model}} v{{version}}"),),
              width=12, min=0, thresholds=(Threshold(None, "green"), Threshold(0.05, "red"))),
    ))
    return _with_ids(Dashboard(
        SERVING_UID, "modelmon / Serving",
        "Throughput, errors, latency and batching of a served model, per version; the replicas' saturation and prediction log; "
        "its rollouts.",
        _model_variables(), (overview, traffic, latency, batching, replicas, fleet, rollout(), rollout_decisions()),
    ))


#: A model that has had a rollout: its servers export modelmon_rollout_state (docs/metrics.md,
#: Rollouts); a server that never saw one exports no rollout series at all.
HAD_ROLLOUT = Prom(f"count(modelmon_rollout_state{{{MODEL}}})", instant=True)


#: Each gate's fail line, the level its interval's low bound must exceed to roll the candidate
#: back (serving/rollout_gates.py): 0 for the bad-share gates, the margin for drift.
GATE_FAILS_ABOVE = (f'max by (gate) (modelmon_rollout_gate_margin{{{MODEL}, gate="drift"}})'
                    f' or 0 * max by (gate) (modelmon_rollout_gate_margin{{{MODEL}, gate!="drift"}})')


def rollout() -> Row:
    """The model's rollout (docs/rollout.md): its state, the candidate's share, each gate's
    interval against its margin, the decisions, and a shadow's agreement with the primary.
    The gate statistics are each replica's own (each evaluates the traffic it served), so
    they are drawn per instance, never pooled."""
    state = f"modelmon_rollout_state{{{MODEL}}}"
    shadow_rows = f"modelmon_rollout_shadow_rows_total{{{MODEL}"
    return Row("Rollout", (
        Panel("table", "Rollout state", "The model's newest rollout as each replica sees it (modelmon_rollout_state == 1): primary and "
              "candidate versions, mode (canary or shadow) and state (running, promoted, rolled_back, aborted). "
              "`modelmon rollout status MODEL` shows its decisions and their evidence.",
              "none", (Prom(f"max by (instance, primary, candidate, mode, state) ({state} == 1)", instant=True, format="table"),),
              width=12, height=6,
              transformations=({"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True}}},)),
        Panel("timeseries", "Candidate share", "The candidate's share of the model's unversioned traffic (canary), or of it copied to the "
              "candidate (shadow), per replica (modelmon_rollout_share): each step raises it; 1 once promoted, 0 once rolled back.",
              "percentunit", (Prom(f"max by (instance) (modelmon_rollout_share{{{MODEL}}})", "{{instance}}"),),
              width=12, height=6, min=0, max=1),
        # No panel-wide threshold: a red line at 0 said "fails above" for the drift gate too,
        # which fails only above its margin (docs/rollout.md). Each gate's own lines instead.
        Panel("timeseries", "Gate intervals against their margins", "Each gate's always-valid interval of the candidate's bad share "
              "minus the primary's, per replica (modelmon_rollout_gate_bound), against its own two lines: a low bound above the "
              "gate's red line ('fails above') rolls the candidate back, a high bound at or below its green line (its margin) "
              "passes the step. The red line is 0 for every gate but drift; the drift gate's interval is of its prediction drift, "
              "candidate minus primary, and its red line is its margin: a small excess of drift is not a defect. Drawn while a "
              "rollout runs.",
              "percentunit", (
                  Prom(f"max by (instance, gate, bound) (modelmon_rollout_gate_bound{{{MODEL}}})", "{{gate}} {{bound}} {{instance}}"),
                  Prom(f"max by (gate) (modelmon_rollout_gate_margin{{{MODEL}}})", "{{gate}} margin"),
                  Prom(GATE_FAILS_ABOVE, "{{gate}} fails above"),
              ), width=12, styles=(SeriesStyle(".* fails above", "red"), SeriesStyle(".* margin", "green"))),
        Panel("timeseries", "Rollout decisions", "Decisions each replica applied since it started, by action "
              "(modelmon_rollout_decisions_total): advance (the last one promotes) and roll_back, which fires ModelmonRolloutRolledBack.",
              "short", (Prom(f"sum by (action) (modelmon_rollout_decisions_total{{{MODEL}}})", "{{action}}"),), width=12, min=0),
        Panel("timeseries", "Shadow agreement", "A shadow candidate's answers against the primary's on the same rows: the share of a "
              "classifier's rows where they predict the same label (modelmon_rollout_shadow_rows_total, agree over agree and disagree).",
              "percentunit", (Prom(f'sum(rate({shadow_rows}, outcome="agree"}}[$__rate_interval])) / '
                                   f'sum(rate({shadow_rows}, outcome=~"agree|disagree"}}[$__rate_interval]))', "agreement"),),
              width=12, min=0, max=1),
        Panel("timeseries", "Shadow copies by outcome", "Copies of requests sent to a shadow candidate per second, by outcome "
              "(modelmon_rollout_shadow_total): answered, failed, timed_out, dropped when its queue was full, and shed while the "
              "primary was busy.",
              "ops", (Prom(f"sum by (outcome) (rate(modelmon_rollout_shadow_total{{{MODEL}}}[$__rate_interval]))", "{{outcome}}"),),
              width=12, min=0),
    ), only_if=HAD_ROLLOUT)


#: The store's rollout decisions (tables rollouts and rollout_decisions, docs/rollout.md): a
#: decision's shares are the plan's steps (a JSON list, in percent) at its step before and
#: after, 100 once promoted and 0 once rolled back or aborted; a replica writes its id into
#: the evidence, an operator's command does not.
DECISIONS_TITLE = "Rollout decisions and their evidence"
_DECISIONS = """SELECT d.decided_at, r.id AS rollout, r.candidate_version AS candidate, d.action,
       CASE WHEN d.action = 'start' THEN 0 ELSE {before} END AS share_before_percent,
       CASE d.state WHEN 'promoted' THEN 100 WHEN 'rolled_back' THEN 0 WHEN 'aborted' THEN 0 ELSE {after} END AS share_after_percent,
       CASE WHEN {replica} IS NULL THEN 'operator (' || d.decided_by || ')' ELSE 'replica ' || d.decided_by END AS decided_by,
       {failed} AS failed_gates, {evidence} AS evidence
FROM rollout_decisions d
JOIN rollouts r ON r.id = d.rollout_id
WHERE r.model = '$model' AND $__timeFilter(d.decided_at)
ORDER BY d.decided_at DESC, d.id DESC
LIMIT 100"""
DECISIONS_PG = _DECISIONS.format(
    before="CAST(r.steps ->> d.from_step AS double precision)", after="CAST(r.steps ->> d.to_step AS double precision)",
    replica="d.evidence ->> 'replica'", failed="d.evidence ->> 'failed'", evidence="CAST(d.evidence AS text)")
DECISIONS_SQLITE = _DECISIONS.format(
    before="json_extract(r.steps, '$[' || d.from_step || ']')", after="json_extract(r.steps, '$[' || d.to_step || ']')",
    replica="json_extract(d.evidence, '$.replica')", failed="json_extract(d.evidence, '$.failed')", evidence="d.evidence")


def rollout_decisions() -> Row:
    """The decisions of the model's rollouts from the store, in Grafana; the report draws the
    same decisions with their evidence in words (dashboards/decisions.py) in its place."""
    return Row("Rollout decisions (store)", (
        Panel("table", DECISIONS_TITLE, "Every decision on the model's rollouts in the time range, newest first, from the store "
              "(rollout_decisions): the action, the candidate's share before and after (percent), who decided (a replica on its "
              "gates' evidence, or an operator through the CLI or HTTP), the gates that failed (a roll_back's), and the evidence "
              "as stored: each gate's interval (low, high) and margin. `modelmon rollout status MODEL` shows the newest rollout's.",
              "none", (Sql(DECISIONS_PG, DECISIONS_SQLITE),), width=24, height=8),
    ), only_if=HAD_ROLLOUT)


# -- 2. Drift and data quality ----------------------------------------------------------------


def _shares_against_reference(category: str, counts: str, reference_ratio: str) -> tuple[Prom, Prom]:
    """A bar chart's two instant tables over the dashboard's range: the share of each
    ``category`` of the counter ``counts``, and the reference's share of it (the gauge
    ``reference_ratio``), each version's weighted by its rows, as the live shares pool them."""
    rows = f"increase({counts}[$__range])"
    return (
        Prom(f"sum by ({category}) ({rows}) / scalar(sum({rows}))", "live", instant=True, format="table"),
        Prom(f"sum by ({category}) (max by (model, version, {category}) ({reference_ratio})"
             f" * on (model, version) group_left () sum by (model, version) ({rows}))"
             f" / scalar(sum({rows}))", "reference", instant=True, format="table"),
    )


def _live_against_reference(category: str) -> tuple[dict, ...]:
    """A bar chart's live and reference shares (its queries A and B, instant tables) joined on
    their ``category`` column, one bar of each per category."""
    return (
        {"id": "joinByField", "options": {"byField": category, "mode": "outer"}},
        {"id": "organize", "options": {"excludeByName": {"Time": True, "Time 1": True, "Time 2": True},
                                       "renameByName": {"Value #A": "live", "Value #B": "reference"}}},
    )


def drift() -> Dashboard:
    feature_sel = f'{SEL}, feature=~"$feature"'
    rules_feature = f'{RULES}, feature=~"$feature"'
    # Rows predicted, of either task: the batch size histogram's sum counts each model call's
    # rows in the same count as the feature and prediction series (batch_accounting.py); a
    # regressor has no modelmon_predictions_total.
    rows_per_second = f"sum by (model, version) (rate(modelmon_batch_size_sum{{{SEL}}}[$__rate_interval]))"
    overview = Row("Overview", (
        Panel("stat", "Features drifted", "Share of monitored features whose verdict is drift (modelmon_dataset_drift_share); the dataset has drifted at 50%.",
              "percentunit", (Prom(f"max(modelmon_dataset_drift_share{{{SEL}}})"),), width=6, height=5, min=0, max=1,
              thresholds=(Threshold(None, "green"), Threshold(0.25, "orange"), Threshold(0.5, "red"))),
        Panel("stat", "Rows in the drift window", "Rows each replica scored its drift on (modelmon_drift_window_rows), summed.",
              "short", (Prom(f"sum(modelmon_drift_window_rows{{{SEL}}})"),), width=6, height=5),
        Panel("stat", "Worst fleet PSI", "The highest population stability index over features, for the whole fleet (recording rule model_version_feature:modelmon_feature_bin:psi$window); "
              f"{PSI_DRIFT:g} is drift.",
              "none", (Prom(f"max(model_version_feature:modelmon_feature_bin:psi$window{{{RULES}}})"),), width=6, height=5, decimals=3, thresholds=GOOD_RED),
        # Of either task: a classifier's predicted classes, a regressor's predicted values
        # (a model exports one of the two outputs).
        Panel("stat", "Prediction drift (PSI)", "PSI of the predicted classes (a classifier) or of the predicted values (a regressor) "
              "against the model's predictions on the validation data.",
              "none", (Prom(f'max(modelmon_prediction_drift{{{SEL}, output=~"class|value", method="psi"}})'),), width=6, height=5, decimals=3,
              thresholds=GOOD_RED),
    ))
    scores = Row("Drift per feature", (
        Panel("timeseries", "Fleet PSI per feature against the threshold", "Population stability index of each feature over the window, pooled over all replicas (recording rule model_version_feature:modelmon_feature_bin:psi$window). "
              f"The red line is the drift threshold, {PSI_DRIFT:g}.",
              "none", (Prom(f"model_version_feature:modelmon_feature_bin:psi$window{{{rules_feature}}}", "{{feature}} v{{version}}"),), width=12,
              thresholds=GOOD_RED, show_thresholds=True),
        Panel("timeseries", "Fleet Jensen-Shannon distance per feature", "Jensen-Shannon distance (base 2) of each feature over the window, pooled over all replicas (model_version_feature:modelmon_feature_bin:js$window). "
              f"The red line is the threshold, {JS_DRIFT:g}.",
              "none", (Prom(f"model_version_feature:modelmon_feature_bin:js$window{{{rules_feature}}}", "{{feature}} v{{version}}"),), width=12,
              thresholds=(Threshold(None, "green"), Threshold(JS_DRIFT, "red")), show_thresholds=True),
        Panel("timeseries", "Per-replica drift score ($method) against its threshold", "Each replica's own score of its latest window (modelmon_feature_drift) and the threshold in force (modelmon_feature_drift_threshold). "
              f"For p-values ({', '.join(method_names(direction='low'))}) drift is below the threshold; for the others above it.",
              "none", (
                  Prom(f'modelmon_feature_drift{{{feature_sel}, method="$method"}}', "{{feature}} @ {{instance}}"),
                  Prom(f'max by (feature) (modelmon_feature_drift_threshold{{{feature_sel}, method="$method"}})', "threshold {{feature}}"),
              ), width=12),
        Panel("bargauge", "Features drifting most now", "The ten features with the highest fleet PSI over the window, now.",
              "none", (Prom(f"sort_desc(topk(10, max by (feature) (model_version_feature:modelmon_feature_bin:psi$window{{{RULES}}})))", "{{feature}}", instant=True),),
              width=12, decimals=3, min=0,
              # orange from half the threshold: a moderate shift
              thresholds=(Threshold(None, "green"), Threshold(PSI_DRIFT / 2, "orange"), Threshold(PSI_DRIFT, "red"))),
    ))
    window_rows = f'model_version_feature_bin:modelmon_feature_bin:increase$window{{{RULES}, feature="$feature"}}'
    feature_rows = f'model_version_feature:modelmon_feature_bin:increase$window{{{RULES}, feature="$feature"}}'
    bins = Row("Distribution per feature", (
        Panel("barchart", "Live against reference shares: $feature", "Share of each bin of the feature over the window (all replicas and selected versions pooled) beside the training data's share of the same bin, each version's weighted by its rows. Versions trained on different data have different bin edges: select one version to compare them.",
              "percentunit", (
                  Prom(f"sum by (bin) ({window_rows}) / scalar(sum({window_rows}))", "live", instant=True, format="table"),
                  # Each version's reference weighted by its rows in the window, as the live
                  # shares pool them (an average would weigh a version with 3 rows like one with 3,000).
                  Prom(f'sum by (bin) (max by (model, version, bin) (modelmon_reference_bin_ratio{{{SEL}, feature="$feature"}})'
                       f" * on (model, version) group_left () sum by (model, version) ({feature_rows})) / scalar(sum({feature_rows}))",
                       "reference", instant=True, format="table"),
              ), width=12, x_field="bin", repeat="feature", transformations=_live_against_reference("bin")),
    ))
    quality = Row("Data quality", (
        Panel("timeseries", "Missing values", "Missing values of each feature as a share of the rows predicted.", "percentunit",
              (Prom(f"sum by (model, version, feature) (rate(modelmon_feature_missing_total{{{feature_sel}}}[$__rate_interval])) / on (model, version) group_left () {rows_per_second}",
                    "{{feature}} v{{version}}"),), width=12, min=0),
        Panel("timeseries", "Unseen values", "Values never seen in training (a new category, or a number outside the training range) as a share of the rows predicted.",
              "percentunit", (Prom(f"sum by (model, version, feature) (rate(modelmon_feature_unseen_total{{{feature_sel}}}[$__rate_interval])) / on (model, version) group_left () {rows_per_second}",
                                   "{{feature}} v{{version}}"),), width=12, min=0),
        Panel("timeseries", "Replicas with enough rows to score", "Replicas whose drift window holds enough rows to score (modelmon_drift_sufficient_data), per version: the others export no drift score, so per-replica drift alerts cannot fire there.",
              "short", (Prom(f"sum by (version) (modelmon_drift_sufficient_data{{{SEL}}})", "v{{version}}"),), width=24, min=0),
    ))
    predictions = f"modelmon_predictions_total{{{SEL}}}"
    outputs = Row("Predictions", (
        Panel("timeseries", "Prediction drift", "Drift of the model's outputs against its validation outputs (modelmon_prediction_drift), "
              f"per replica: a classifier's predicted classes and confidence, a regressor's predicted values; ModelmonPredictionDrift fires at PSI {PSI_DRIFT:g}.",
              "none", (Prom(f"max by (output, method) (modelmon_prediction_drift{{{SEL}}})", "{{output}} {{method}}"),), width=24,
              thresholds=GOOD_RED),
    ))
    classes = Row("Predictions of classifiers: classes and confidence", (
        Panel("barchart", "Predicted class shares against the validation data", "Share of each predicted class over the dashboard's time range beside its share on the validation data (modelmon_reference_class_ratio).",
              "percentunit", _shares_against_reference("class", predictions, f"modelmon_reference_class_ratio{{{SEL}}}"),
              width=12, x_field="class", transformations=_live_against_reference("class")),
        Panel("timeseries", "Predicted class shares over time", "Share of each predicted class among the rows predicted.", "percentunit",
              (Prom(f"sum by (class) (rate({predictions}[$__rate_interval])) / scalar(sum(rate({predictions}[$__rate_interval])))", "{{class}}"),),
              width=12, min=0, max=1),
        Panel("heatmap", "Confidence distribution", "Rows per second per top-class probability bucket over time (modelmon_prediction_confidence): a rate, since increase() over $__rate_interval windows, which overlap, counts each row in several cells.", "short",
              (Prom(f"sum by (le) (rate(modelmon_prediction_confidence_bucket{{{SEL}}}[$__rate_interval]))", "{{le}}", format="heatmap"),),
              width=24),
    ), task="classification")
    # A regressor's predictions per bin of its validation predictions (docs/metrics.md,
    # Regression): its shares beside the validation shares, as the classes' above.
    values = f"modelmon_prediction_bin_total{{{SEL}}}"
    regression_values = Row("Predictions of regressors: predicted values", (
        Panel("barchart", "Predicted value shares against the validation data", "Share of each bin of the predicted values over the dashboard's "
              "time range (modelmon_prediction_bin_total) beside the validation predictions' share of the same bin "
              "(modelmon_reference_prediction_ratio), each version's weighted by its rows; NaN predictions are in no bin. "
              "Versions have different bin edges: select one version to compare them.",
              "percentunit", _shares_against_reference("bin", values, f"modelmon_reference_prediction_ratio{{{SEL}}}"),
              width=24, x_field="bin", transformations=_live_against_reference("bin")),
    ), task="regression")
    variables = (
        *_model_variables(feature=True),
        Variable("method", "Method", "Drift method of the per-replica panel.", "custom",
                 options=tuple(METHODS), default=PSI.name),
        _window_variable(),
    )
    return _with_ids(Dashboard(
        DRIFT_UID, "modelmon / Data drift and quality",
        "Live inputs and predictions against the training data: drift per feature, bin shares, missing and unseen values.",
        variables, (overview, scores, bins, quality, outputs, classes, regression_values),
    ))


# -- 3. Model quality -------------------------------------------------------------------------


def _realized_vs_baseline(rule: str, baseline: str, estimated: str | None) -> tuple[Prom, ...]:
    queries = [
        Prom(f"model_version:modelmon_confusion:{rule}$window{{{RULES}}}", "realized v{{version}}"),
        Prom(f'max by (version) (modelmon_baseline_metric{{{SEL}, metric="{baseline}"}})', "validation baseline v{{version}}"),
    ]
    if estimated:
        queries.append(Prom(f"model_version:modelmon_expected_confusion:{estimated}$window{{{RULES}}}", "estimated (CBPE) v{{version}}"))
    return tuple(queries)


#: The chosen versions in SQL: Grafana's SQL data sources write a multi-value variable as
#: quoted values ('1','2'), All included, since $version has no custom "All" value (which
#: Grafana would write as it is: IN (.*)).
VERSION_SQL = "version IN ($version)"
LABELLED_PG = f"""SELECT $__timeGroupAlias(predicted_at, $__interval), 'v' || version AS metric, avg(correct) AS value
FROM labelled_predictions
WHERE model = '$model' AND {VERSION_SQL} AND $__timeFilter(predicted_at)
GROUP BY 1, 2
ORDER BY 1"""
LABELLED_SQLITE = f"""SELECT $__unixEpochGroupSeconds(ts_ms, $__interval_ms) / 1000 AS time, 'v' || version AS metric, avg(correct) AS value
FROM (SELECT CAST(strftime('%s', predicted_at) AS INTEGER) * 1000 AS ts_ms, version, correct
      FROM labelled_predictions
      WHERE model = '$model' AND {VERSION_SQL} AND $__timeFilter(predicted_at)) AS lp
GROUP BY 1, 2
ORDER BY 1"""
LABELLED_TABLE = f"""SELECT version, count(*) AS labelled, sum(correct) AS correct, avg(correct) AS accuracy,
       min(predicted_at) AS first_prediction, max(labelled_at) AS last_label
FROM labelled_predictions
WHERE model = '$model' AND {VERSION_SQL} AND $__timeFilter(predicted_at)
GROUP BY version
ORDER BY version"""
#: ModelmonAccuracyBelowBaseline's default margin (alerting/config.py: RealizedQuality.margin):
#: the accuracy stats are red below the baseline minus this.
ACCURACY_MARGIN = 0.05
#: Each version's validation accuracy, one per version (every replica exports it).
BASELINE_ACCURACY = f'max by (cluster, namespace, job, model, version) (modelmon_baseline_metric{{{SEL}, metric="accuracy"}})'
BELOW_BASELINE = (Threshold(None, "red"), Threshold(-ACCURACY_MARGIN, "orange"), Threshold(-ACCURACY_MARGIN / 2, "green"))


def quality() -> Dashboard:
    overview = Row("Overview", (
        # Against the baseline, since the alert's level is the baseline minus a margin: a
        # stat of the accuracy itself could not be coloured by it.
        Panel("stat", "Realized accuracy against baseline", "Accuracy on the predictions labelled in the window, all replicas (model_version:modelmon_confusion:accuracy$window), "
              f"minus the validation baseline: red below -{ACCURACY_MARGIN:g}, where ModelmonAccuracyBelowBaseline fires (its default margin; the alert reads a 6h window with at least 1000 labels), orange from half of it.",
              "percentunit", (Prom(f"model_version:modelmon_confusion:accuracy$window{{{RULES}}} - on (cluster, namespace, job, model, version) {BASELINE_ACCURACY}", "v{{version}}"),),
              width=8, height=5, decimals=3, thresholds=BELOW_BASELINE),
        Panel("stat", "Validation baseline accuracy", "Accuracy on the validation data at registration (modelmon_baseline_metric).",
              "percentunit", (Prom(f'max by (version) (modelmon_baseline_metric{{{SEL}, metric="accuracy"}})', "v{{version}}"),),
              width=8, height=5, decimals=3),
        Panel("stat", "Estimated accuracy (CBPE) against baseline", "Accuracy estimated from calibrated probabilities, before labels arrive (model_version:modelmon_expected_confusion:accuracy$window), "
              f"minus the validation baseline: red below -{ACCURACY_MARGIN:g}, where ModelmonEstimatedAccuracyBelowBaseline fires (its default margin; the alert reads a 1h window with at least 100 rows), orange from half of it.",
              "percentunit", (Prom(f"model_version:modelmon_expected_confusion:accuracy$window{{{RULES}}} - on (cluster, namespace, job, model, version) {BASELINE_ACCURACY}", "v{{version}}"),),
              width=8, height=5, decimals=3, thresholds=BELOW_BASELINE),
    ), task="classification")
    realized = Row("Realized quality against the validation baseline", (
        Panel("timeseries", "Accuracy", "Realized accuracy from labels and the CBPE estimate, over the window, against the validation baseline.",
              "percentunit", _realized_vs_baseline("accuracy", "accuracy", "accuracy"), width=12),
        Panel("timeseries", "Macro F1", "Realized macro-averaged F1 (scikit-learn's definition) and its estimate against the validation baseline.",
              "percentunit", _realized_vs_baseline("f1_macro", "f1_macro", "f1_macro"), width=12),
        Panel("timeseries", "Macro precision and recall", "Realized precision and recall averaged over the classes in the window, against the baseline's macro averages.",
              "percentunit", (
                  Prom(f"avg by (version) (model_version_class:modelmon_confusion:precision$window{{{RULES}}})", "precision v{{version}}"),
                  Prom(f"avg by (version) (model_version_class:modelmon_confusion:recall$window{{{RULES}}})", "recall v{{version}}"),
                  Prom(f'max by (version) (modelmon_baseline_metric{{{SEL}, metric="precision_macro"}})', "baseline precision v{{version}}"),
                  Prom(f'max by (version) (modelmon_baseline_metric{{{SEL}, metric="recall_macro"}})', "baseline recall v{{version}}"),
              ), width=12),
        Panel("timeseries", "F1 per class", "Realized F1 of each class over the window (model_version_class:modelmon_confusion:f1_$window).", "percentunit",
              (Prom(f"model_version_class:modelmon_confusion:f1_$window{{{RULES}}}", "{{class}} v{{version}}"),), width=12),
    ), task="classification")
    estimated = Row("Estimated against realized", (
        Panel("timeseries", "Estimate minus realized", "CBPE estimate minus the realized value, for accuracy and macro F1: how far the label-free estimate is off where labels exist.",
              "percentunit", (
                  Prom(f"model_version:modelmon_expected_confusion:accuracy$window{{{RULES}}} - on (cluster, namespace, job, model, version) model_version:modelmon_confusion:accuracy$window{{{RULES}}}", "accuracy v{{version}}"),
                  Prom(f"model_version:modelmon_expected_confusion:f1_macro$window{{{RULES}}} - on (cluster, namespace, job, model, version) model_version:modelmon_confusion:f1_macro$window{{{RULES}}}", "macro F1 v{{version}}"),
              ), width=12),
        Panel("timeseries", "Estimated precision and recall per class", "Per-class precision and recall from the expected confusion cells (CBPE).", "percentunit", (
            Prom(f"model_version_class:modelmon_expected_confusion:precision$window{{{RULES}}}", "precision {{class}} v{{version}}"),
            Prom(f"model_version_class:modelmon_expected_confusion:recall$window{{{RULES}}}", "recall {{class}} v{{version}}"),
        ), width=12),
    ), task="classification")
    # The label feed of any model: coverage counts the rows predicted of either task
    # (modelmon_batch_size_sum), as ModelmonLowLabelCoverage and ModelmonNoLabels, which link
    # here, do; the delay and the outcomes are the feedback endpoint's, whatever the task.
    label_feed = Row("Labels", (
        Panel("stat", "Label coverage", "Labels matched as a share of the rows predicted in the window (model_version:modelmon_feedback_matched:ratio_predictions$window); red under ModelmonLowLabelCoverage's default 10%.",
              "percentunit", (Prom(f"model_version:modelmon_feedback_matched:ratio_predictions$window{{{RULES}}}", "v{{version}}"),), width=4, decimals=3,
              thresholds=(Threshold(None, "red"), Threshold(0.1, "green"))),
        Panel("timeseries", "Label coverage", "Labels matched as a share of the rows predicted in the window.", "percentunit",
              (Prom(f"model_version:modelmon_feedback_matched:ratio_predictions$window{{{RULES}}}", "v{{version}}"),), width=6, min=0),
        Panel("timeseries", "Label delay (p50, p95)", "Time from a prediction to its ground-truth label (modelmon_label_delay_seconds).", "s", tuple(
            Prom(f"histogram_quantile({q}, sum by (le) (rate(modelmon_label_delay_seconds_bucket{{{SEL}}}[$__rate_interval])))", f"p{int(q * 100)}")
            for q in (0.5, 0.95)
        ), width=7),
        Panel("timeseries", "Labels received by outcome", "Labels per second: matched to a prediction, duplicates, unknown prediction ids.", "ops",
              (Prom(f"sum by (outcome) (rate(modelmon_feedback_total{{{SEL}}}[$__rate_interval]))", "{{outcome}}"),), width=7),
    ))
    labels = Row("Confusion matrix and labelled predictions", (
        Panel("table", "Confusion matrix", "Labelled predictions in the window by actual class (rows) and predicted class (columns), all replicas.",
              "short", (Prom(f"sum by (actual, predicted) (model_version_actual_predicted:modelmon_confusion:increase$window{{{RULES}}})", instant=True, format="table"),),
              width=8, transformations=({"id": "groupingToMatrix", "options": {"columnField": "predicted", "rowField": "actual", "valueField": "Value"}},)),
        Panel("timeseries", "Realized accuracy by prediction time", "From the prediction log (SQL view labelled_predictions): accuracy of the labelled predictions, dated by when they were made, not when the label came.",
              "percentunit", (Sql(LABELLED_PG, LABELLED_SQLITE, format="time_series"),), width=16, min=0, max=1),
        Panel("table", "Labelled predictions per version", "From the prediction log: labelled predictions made in the time range, per version, with their accuracy.",
              "none", (Sql(LABELLED_TABLE, LABELLED_TABLE),), width=24, height=6),
    ), task="classification")
    return _with_ids(Dashboard(
        QUALITY_UID, "modelmon / Model quality",
        "Live quality from ground-truth labels and CBPE estimates (a regressor's MAE, RMSE and their label-free "
        "estimate), against the validation baseline.",
        _model_variables(window=True), (overview, label_feed, realized, estimated, labels, regression()),
    ))


def _error_vs_baseline(metric: str, realized: str, estimated: str) -> tuple[Prom, ...]:
    return (
        Prom(f"model_version:modelmon_regression_{realized}$window{{{RULES}}}", "realized v{{version}}"),
        Prom(f"model_version:modelmon_regression_{estimated}$window{{{RULES}}}", "estimated v{{version}}"),
        Prom(f'max by (version) (modelmon_baseline_metric{{{SEL}, metric="{metric}"}})', "validation baseline v{{version}}"),
    )


def regression() -> Row:
    """A regressor's quality (the recording rules of rules.regression), empty for classifiers."""
    return Row("Regression: error against the validation baseline", (
        Panel("timeseries", "MAE: realized, estimated and baseline", "Mean absolute error over the window, all replicas: from "
              "true values (model_version:modelmon_regression_absolute_error:mean$window), estimated without labels "
              "(model_version:modelmon_regression_expected_absolute_error:mean$window), and on the validation data. "
              "ModelmonMAEAboveBaseline fires 20% above the baseline.",
              "short", _error_vs_baseline("mae", "absolute_error:mean", "expected_absolute_error:mean"), width=12, min=0),
        Panel("timeseries", "RMSE: realized, estimated and baseline", "Root mean squared error over the window, all replicas: from "
              "true values, estimated without labels, and on the validation data. Above the MAE's rise: a few large errors.",
              "short", _error_vs_baseline("rmse", "squared_error:rootmean", "expected_squared_error:rootmean"), width=12, min=0),
        Panel("timeseries", "Residual bias", "Mean error, predicted minus true, over the window (model_version:modelmon_regression_error:mean$window): "
              "positive, the model over-predicts; near the MAE, it errs in one direction (the target's level moved).",
              "short", (
                  Prom(f"model_version:modelmon_regression_error:mean$window{{{RULES}}}", "bias v{{version}}"),
                  Prom(f'max by (version) (modelmon_baseline_metric{{{SEL}, metric="mean_error"}})', "validation bias v{{version}}"),
              ), width=12),
        Panel("timeseries", "Prediction drift (values)", "Drift of the predicted values against the validation predictions, on their quantile bins "
              f'(modelmon_prediction_drift{{output="value"}}), per replica; ModelmonPredictionDrift fires at PSI {PSI_DRIFT:g}.',
              "none", (Prom(f'max by (method, instance) (modelmon_prediction_drift{{{SEL}, output="value"}})', "{{method}} @ {{instance}}"),),
              width=12, thresholds=GOOD_RED, show_thresholds=True),
    ), task="regression")


# -- 4. Training ------------------------------------------------------------------------------

RUN_FILTER = "experiment = '$experiment' AND run_id IN (${run:singlequote})"


def _metric_name(base: str) -> str:
    """The stored name of a precision/recall/F1 metric under the chosen averaging."""
    return f"CASE WHEN '$average' = 'binary' THEN '{base}' ELSE '{base}_' || '$average' END"


def _curve(metric_sql: str) -> Sql:
    text = f"""SELECT step, value, COALESCE(run_name, 'run ' || run_id) || ' ' || split AS series
FROM training_metrics
WHERE {RUN_FILTER} AND metric = {metric_sql}
ORDER BY series, step"""
    return Sql(text, text)


CURVE_TRANSFORMS = ({"id": "partitionByValues", "options": {"fields": ["series"], "keepFields": False}},)

RUNS_TABLE = """SELECT run_id, run_name, status, started_at, ended_at, last_step AS epochs, model_name, model_version, git_commit, error
FROM training_runs
WHERE experiment = '$experiment'
ORDER BY started_at DESC"""
def runs_compared(columns: list[tuple[str, str, str]]) -> str:
    """One row per chosen run: each ``(column, metric, value)`` is the run's final validation
    ``final_value``, or its best ``min_value`` / ``max_value``, of ``metric``."""
    picked = "".join(f"       MAX(CASE WHEN metric = '{metric}' THEN {value} END) AS {column},\n" for column, metric, value in columns)
    return f"""SELECT run_id, run_name, run_status AS status,
{picked}       MAX(steps) AS epochs
FROM training_final_metrics
WHERE experiment = '$experiment' AND split = 'validation' AND run_id IN (${{run:singlequote}})
GROUP BY run_id, run_name, run_status
ORDER BY run_id"""


RUNS_COMPARED = runs_compared([
    ("loss", "loss", "final_value"), ("accuracy", "accuracy", "final_value"), ("f1_macro", "f1_macro", "final_value"),
    ("best_f1_macro", "f1_macro", "max_value"), ("best_loss", "loss", "min_value"),
])
PARAMS = """SELECT COALESCE(r.run_name, 'run ' || r.run_id) AS run, p.key AS param, p.value AS value
FROM training_runs r
JOIN run_params p ON p.run_id = r.run_id
WHERE r.experiment = '$experiment' AND r.run_id IN (${run:singlequote})
ORDER BY r.run_id, p.key"""
OVER_TIME_PG = """SELECT logged_at AS time, COALESCE(run_name, 'run ' || run_id) || ' ' || split AS metric, value
FROM training_metrics
WHERE experiment = '$experiment' AND run_id IN (${run:singlequote}) AND metric = '$metric' AND $__timeFilter(logged_at)
ORDER BY 1"""
OVER_TIME_SQLITE = """SELECT CAST(strftime('%s', logged_at) AS INTEGER) AS time, COALESCE(run_name, 'run ' || run_id) || ' ' || split AS metric, value
FROM training_metrics
WHERE experiment = '$experiment' AND run_id IN (${run:singlequote}) AND metric = '$metric' AND $__timeFilter(logged_at)
ORDER BY 1"""


#: The final validation values of a regressor's runs, and the best each reached (lowest MAE and
#: RMSE, highest R²): a classifier's runs have none of these metrics, so it has its own table.
REGRESSION_RUNS_COMPARED = runs_compared([
    ("mae", "mae", "final_value"), ("rmse", "rmse", "final_value"), ("r2", "r2", "final_value"), ("loss", "loss", "final_value"),
    ("best_mae", "mae", "min_value"), ("best_rmse", "rmse", "min_value"), ("best_r2", "r2", "max_value"),
])

#: The tasks of the chosen runs, from the metrics they logged: every classifier's run logs
#: ``accuracy`` (log_classification), every regressor's ``mae`` (log_regression). The report
#: draws a task's learning-curve row only for runs of that task (both for a mixed choice).
TRAINING_TASKS = """SELECT DISTINCT CASE WHEN metric = 'accuracy' THEN 'classification' ELSE 'regression' END AS task
FROM training_metrics
WHERE experiment = '$experiment' AND run_id IN (${run:singlequote}) AND metric IN ('accuracy', 'mae')"""


RUN_METRICS = """SELECT DISTINCT metric FROM training_metrics
WHERE experiment = '$experiment' AND run_id IN (${run:singlequote})
ORDER BY metric"""


def _curves(title: str, task: str, panels: tuple[tuple[str, str, str, str, int], ...], compared: Panel) -> Row:
    return Row(title, (*(
        Panel("xychart", panel_title, f"{what} per epoch of the chosen runs, for the training and the validation split (SQL view training_metrics).",
              unit, (_curve(metric_sql),), width=width, x_field="step", transformations=CURVE_TRANSFORMS,
              optional=metric_sql == "'loss'" and task == "regression")
        for panel_title, what, unit, metric_sql, width in panels
    ), compared), task=task)


def training() -> Dashboard:
    classifier = _curves("Learning curves of classifiers (per epoch, training against validation)", "classification", (
        ("Loss", "The model's loss", "none", "'loss'", 12),
        ("Accuracy", "Accuracy", "percentunit", "'accuracy'", 12),
        ("Precision ($average)", "Precision", "percentunit", _metric_name("precision"), 8),
        ("Recall ($average)", "Recall", "percentunit", _metric_name("recall"), 8),
        ("F1 ($average)", "F1", "percentunit", _metric_name("f1"), 8),
    ), Panel("table", "Runs compared", "Final validation metrics of the chosen runs, and the best value each reached (SQL view training_final_metrics).",
             "none", (Sql(RUNS_COMPARED, RUNS_COMPARED),), width=24, height=7, decimals=4))
    regressor = _curves("Learning curves of regressors (per epoch, training against validation)", "regression", (
        ("MAE", "Mean absolute error", "none", "'mae'", 8),
        ("RMSE", "Root mean squared error", "none", "'rmse'", 8),
        ("R²", "R² (coefficient of determination)", "none", "'r2'", 8),
        ("Mean error (bias)", "Mean error, predicted minus true (the bias)", "none", "'mean_error'", 12),
        # Only a run that passes its own training loss has it (log_regression(loss=...); the
        # Keras callback); fit_epochs' scikit-learn runs do not.
        ("Regressor loss", "The model's own training loss", "none", "'loss'", 12),
    ), Panel("table", "Regressor runs compared", "Final validation MAE, RMSE, R² and loss of the chosen runs, and the best value each "
             "reached: lowest MAE and RMSE, highest R² (SQL view training_final_metrics).",
             "none", (Sql(REGRESSION_RUNS_COMPARED, REGRESSION_RUNS_COMPARED),), width=24, height=7, decimals=4))
    runs = Row("Runs", (
        Panel("table", "Parameters", "Hyperparameters of the chosen runs, one column per parameter (table run_params).", "none",
              (Sql(PARAMS, PARAMS),), width=12, height=7,
              transformations=({"id": "groupingToMatrix", "options": {"columnField": "param", "rowField": "run", "valueField": "value"}},)),
        Panel("table", "Runs of the experiment", "Every run of the experiment, newest first, with the model version it produced (SQL view training_runs).",
              "none", (Sql(RUNS_TABLE, RUNS_TABLE),), width=12, height=7),
        Panel("timeseries", "$metric over time", "The chosen metric of the chosen runs by the time it was logged, both splits.", "none",
              (Sql(OVER_TIME_PG, OVER_TIME_SQLITE, format="time_series"),), width=24),
    ))
    live = Row("Live runs (Prometheus)", (
        Panel("timeseries", "Live $metric", "The latest value of the metric in runs that are active now (modelmon_training_metric), both splits.",
              "none", (Prom('modelmon_training_metric{experiment="$experiment", metric="$metric"}', "run {{run}} {{split}}"),), width=8),
        Panel("timeseries", "Epoch reached", "Highest epoch (step) each active run has logged (modelmon_training_epoch).", "short",
              (Prom('modelmon_training_epoch{experiment="$experiment"}', "run {{run}}"),), width=8),
        Panel("timeseries", "Time since the last report", "Seconds since each active run last logged; a run that stalls keeps climbing.", "s",
              (Prom('time() - modelmon_training_last_update_timestamp_seconds{experiment="$experiment"}', "run {{run}}"),), width=8),
    ))
    variables = (
        Variable("experiment", "Experiment", "An experiment in the run store.", "query", source="sql",
                 query=Sql("SELECT DISTINCT experiment FROM training_runs ORDER BY experiment",
                           "SELECT DISTINCT experiment FROM training_runs ORDER BY experiment")),
        Variable("run", "Runs", "Runs of the experiment to show.", "query", source="sql",
                 query=Sql("SELECT run_id AS __value, COALESCE(run_name, 'run ' || run_id) AS __text FROM training_runs WHERE experiment = '$experiment' ORDER BY run_id",
                           "SELECT run_id FROM training_runs WHERE experiment = '$experiment' ORDER BY run_id"),
                 multi=True, include_all=True, default="All"),
        Variable("average", "Averaging", "Precision, recall and F1: macro or weighted average over classes, or the positive class of a binary problem.",
                 "custom", options=("macro", "weighted", "binary"), default="macro"),
        # The metrics the chosen runs logged, so a regressor's runs offer mae, rmse, r2 (and
        # loss only if they logged one); loss by default when they have it, else the first.
        Variable("metric", "Metric", "The metric of the over-time and live panels, among those the chosen runs logged.", "query",
                 source="sql", query=Sql(RUN_METRICS, RUN_METRICS), default="loss"),
    )
    return _with_ids(Dashboard(
        TRAINING_UID, "modelmon / Training",
        "Training runs from the run store: learning curves, runs compared, parameters; and active runs live from Prometheus.",
        # A 7-day range of SQLite queries: refreshed every 5 minutes, not every 30 s.
        variables, (classifier, regressor, runs, live), time_from="now-7d", refresh="5m",
    ))


# -- 5. Alerts --------------------------------------------------------------------------------


#: The alerts the Alerts dashboard counts: modelmon's by default (not every alert of a shared
#: Prometheus), never a heartbeat (severity none: ModelmonWatchdog, kube-prometheus' Watchdog
#: and InfoInhibitor), which would keep the board red.
ALERTS_SEL = 'alertname=~"$alerts", severity!="none"'


def alerts() -> Dashboard:
    firing, pending = f'ALERTS{{{ALERTS_SEL}, alertstate="firing"}}', f'ALERTS{{{ALERTS_SEL}, alertstate="pending"}}'
    variables = (
        Variable("alerts", "Alerts", "Which alert names to show (a regex): modelmon's, or every alert of this Prometheus. "
                 "Custom rules with other names: pick .* or name them Modelmon...", "custom",
                 options=("Modelmon.*", ".*"), default="Modelmon.*"),
    )
    overview = Row("Now", (
        Panel("stat", "Firing", "Alerts firing now (Prometheus's ALERTS series), heartbeats (severity none) left out.", "short",
              (Prom(f"count({firing}) or vector(0)"),), width=6, height=5,
              thresholds=(Threshold(None, "green"), Threshold(1, "red"))),
        Panel("stat", "Pending", "Alerts whose condition holds but not yet for their 'for' duration.", "short",
              (Prom(f"count({pending}) or vector(0)"),), width=6, height=5,
              thresholds=(Threshold(None, "green"), Threshold(1, "orange"))),
        Panel("table", "Firing alerts", "Every alert firing now, with its labels.", "none",
              (Prom(firing, instant=True, format="table"),), width=12, height=5,
              transformations=({"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}}},)),
        Panel("table", "Pending alerts", "Alerts pending now, with their labels.", "none",
              (Prom(pending, instant=True, format="table"),), width=24, height=5,
              transformations=({"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True, "__name__": True}}},)),
    ))
    history = Row("History", (
        Panel("state-timeline", "Alert history", "State of each alert over the time range, per model and version (each is its own alert): pending, then firing.", "none",
              (Prom(f"max by (alertname, model, version) (({firing} * 2) or {pending})", "{{alertname}} {{model}} {{version}}"),),
              width=24, height=9, states=((1, "pending", "orange"), (2, "firing", "red"))),
        Panel("timeseries", "Firing alerts by severity", "Number of alerts firing, by their severity label.", "short",
              (Prom(f"count by (severity) ({firing})", "{{severity}}"),), width=24),
    ))
    return Dashboard(
        ALERTS_UID, "modelmon / Alerts",
        "Alerts of the Prometheus rules (modelmon alerts export): firing and pending now, and their history.",
        variables, (overview, history),
    )


def all_dashboards() -> list[Dashboard]:
    return [serving(), drift(), quality(), training(), alerts()]
