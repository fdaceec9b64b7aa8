"""Every metric family the model server exports: the metric contract, written once.

Names, types and labels are public API (docs/metrics.md): the server's registries, the
drift exporter and the compilers that write PromQL take them from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from modelmon.monitoring.methods import method_names


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # without the _total suffix of a counter
    kind: Literal["counter", "gauge", "histogram"]
    labels: tuple[str, ...]
    help: str


MODEL_VERSION = ("model", "version")

# -- request-level, counted per request (``array_metrics.ListCounter`` / ``ListHistogram``)
REQUESTS = Family("modelmon_requests", "counter", (*MODEL_VERSION, "endpoint", "code"), "HTTP requests answered.")
REQUEST_DURATION = Family(
    "modelmon_request_duration_seconds", "histogram", (*MODEL_VERSION, "endpoint"),
    "Whole request, from body read to response.",
)
REQUEST_ERRORS = Family("modelmon_request_errors", "counter", (*MODEL_VERSION, "reason"), "Rejected or failed requests, by reason.")
INFLIGHT = Family("modelmon_inflight_requests", "gauge", ("model",), "Requests in progress.")
MODEL_INFO = Family("modelmon_model_info", "gauge", (*MODEL_VERSION, "flavor"), "Loaded model versions (always 1).")
BASELINE_METRIC = Family("modelmon_baseline_metric", "gauge", (*MODEL_VERSION, "metric"), "Validation metrics recorded at registration.")
FEEDBACK = Family("modelmon_feedback", "counter", (*MODEL_VERSION, "outcome"), "Ground-truth labels received, by outcome.")
LABEL_DELAY = Family("modelmon_label_delay_seconds", "histogram", MODEL_VERSION, "Time from a prediction to its label.")

# -- the series limit (``modelmon serve --max-series``) ----------------------------------
MONITORING_SERIES = Family(
    "modelmon_monitoring_series", "gauge", (),
    "Series of the served versions, counted against the series limit (drift scores at their most).",
)
MONITORING_SERIES_LIMIT = Family(
    "modelmon_monitoring_series_limit", "gauge", (), "The series limit (--max-series); 0: no limit.",
)
MONITORING_REDUCED = Family(
    "modelmon_monitoring_reduced", "gauge", (*MODEL_VERSION, "dropped"),
    "1 for each served version loaded with reduced monitoring, past the series limit; dropped: what it goes without.",
)

#: The request-level families and the series limit's, in exposition order: written with
#: their labels in name order, as prometheus_client wrote them when it held them.
REQUEST_FAMILIES = (
    REQUESTS, REQUEST_DURATION, REQUEST_ERRORS, INFLIGHT, MODEL_INFO, BASELINE_METRIC, FEEDBACK, LABEL_DELAY,
    MONITORING_SERIES, MONITORING_SERIES_LIMIT, MONITORING_REDUCED,
)

# -- array-backed, counted in bulk (``array_metrics``) ----------------------------------
CONFUSION = Family("modelmon_confusion", "counter", (*MODEL_VERSION, "actual", "predicted"), "Labelled predictions, by cell.")
EXPECTED_CONFUSION = Family(
    "modelmon_expected_confusion", "counter", (*MODEL_VERSION, "actual", "predicted"),
    "Expected cells from calibrated probabilities (label-free estimate).",
)
PREDICTIONS = Family("modelmon_predictions", "counter", (*MODEL_VERSION, "class"), "Predicted rows per class.")
QUEUE_DURATION = Family("modelmon_queue_duration_seconds", "histogram", MODEL_VERSION, "Time a request's rows waited for their batch.")
INFERENCE_DURATION = Family("modelmon_inference_duration_seconds", "histogram", MODEL_VERSION, "Model call per batch.")
BATCH_SIZE = Family("modelmon_batch_size", "histogram", MODEL_VERSION, "Rows per model call.")
PREDICTION_CONFIDENCE = Family("modelmon_prediction_confidence", "histogram", MODEL_VERSION, "Top-class probability.")
FEATURE_BIN = Family("modelmon_feature_bin", "counter", (*MODEL_VERSION, "feature", "bin"), "Live rows per reference bin of each feature.")
REFERENCE_BIN_RATIO = Family("modelmon_reference_bin_ratio", "gauge", (*MODEL_VERSION, "feature", "bin"), "The training data's share of each bin.")
FEATURE_MISSING = Family("modelmon_feature_missing", "counter", (*MODEL_VERSION, "feature"), "Missing values per feature.")
FEATURE_UNSEEN = Family(
    "modelmon_feature_unseen", "counter", (*MODEL_VERSION, "feature"),
    "Values never seen in training: a new category, or a number outside the training range.",
)
REFERENCE_CLASS_RATIO = Family(
    "modelmon_reference_class_ratio", "gauge", (*MODEL_VERSION, "class"),
    "Class shares of the model's predictions on the validation data.",
)


# -- regression (``tasks.RegressionCounts``, ``tasks.RegressionLabels``): sums that add up
# across replicas and windows, so every ratio (MAE, RMSE, bias, R², the estimates) is PromQL.
PREDICTION_BIN = Family(
    "modelmon_prediction_bin", "counter", (*MODEL_VERSION, "bin"),
    "A regressor's predictions per bin of its validation predictions (the reference's prediction bins).",
)
REFERENCE_PREDICTION_RATIO = Family(
    "modelmon_reference_prediction_ratio", "gauge", (*MODEL_VERSION, "bin"),
    "A regressor's validation predictions' share of each prediction bin.",
)
PREDICTION_MISSING = Family(
    "modelmon_prediction_missing", "counter", MODEL_VERSION,
    "A regressor's predictions that were not a number (NaN): in no prediction bin and not estimated.",
)
REGRESSION_LABELLED = Family("modelmon_regression_labelled", "counter", MODEL_VERSION, "A regressor's predictions that received their true value.")
REGRESSION_ERROR = Family(
    "modelmon_regression_error", "counter", MODEL_VERSION, "Sum of errors (predicted minus true) of labelled predictions.",
)
REGRESSION_ABSOLUTE_ERROR = Family(
    "modelmon_regression_absolute_error", "counter", MODEL_VERSION, "Sum of absolute errors of labelled predictions.",
)
REGRESSION_SQUARED_ERROR = Family(
    "modelmon_regression_squared_error", "counter", MODEL_VERSION, "Sum of squared errors of labelled predictions.",
)
REGRESSION_TARGET = Family("modelmon_regression_target", "counter", MODEL_VERSION, "Sum of the true values of labelled predictions.")
REGRESSION_TARGET_SQUARED = Family(
    "modelmon_regression_target_squared", "counter", MODEL_VERSION, "Sum of the squared true values of labelled predictions.",
)
REGRESSION_ESTIMATED = Family(
    "modelmon_regression_estimated", "counter", MODEL_VERSION, "Predictions counted by the label-free error estimate.",
)
REGRESSION_EXPECTED_ABSOLUTE_ERROR = Family(
    "modelmon_regression_expected_absolute_error", "counter", MODEL_VERSION,
    "Sum of each prediction's expected absolute error (label-free estimate).",
)
REGRESSION_EXPECTED_SQUARED_ERROR = Family(
    "modelmon_regression_expected_squared_error", "counter", MODEL_VERSION,
    "Sum of each prediction's expected squared error (label-free estimate).",
)
#: The label-side sums, in the order ``tasks.RegressionLabels`` counts them.
REGRESSION_LABEL_FAMILIES = (
    REGRESSION_LABELLED, REGRESSION_ERROR, REGRESSION_ABSOLUTE_ERROR, REGRESSION_SQUARED_ERROR,
    REGRESSION_TARGET, REGRESSION_TARGET_SQUARED,
)

#: The array-backed families, in exposition order.
ARRAY_FAMILIES = (
    CONFUSION, EXPECTED_CONFUSION, PREDICTIONS, QUEUE_DURATION, INFERENCE_DURATION, BATCH_SIZE,
    PREDICTION_CONFIDENCE, FEATURE_BIN, REFERENCE_BIN_RATIO, FEATURE_MISSING, FEATURE_UNSEEN,
    REFERENCE_CLASS_RATIO, PREDICTION_BIN, REFERENCE_PREDICTION_RATIO, PREDICTION_MISSING, *REGRESSION_LABEL_FAMILIES,
    REGRESSION_ESTIMATED, REGRESSION_EXPECTED_ABSOLUTE_ERROR, REGRESSION_EXPECTED_SQUARED_ERROR,
)

# -- drift scores, written from each version's latest report (``drift_exporter``) -------
FEATURE_DRIFT = Family(
    "modelmon_feature_drift", "gauge", (*MODEL_VERSION, "feature", "method"),
    f"Drift score of the latest window (p-values for {' and '.join(method_names(direction='low'))}).",
)
FEATURE_DRIFT_THRESHOLD = Family(
    "modelmon_feature_drift_threshold", "gauge", (*MODEL_VERSION, "feature", "method"),
    "The threshold in force for each drift score.",
)
DRIFT_WINDOW_ROWS = Family("modelmon_drift_window_rows", "gauge", MODEL_VERSION, "Rows in the window the drift scores were computed on.")
DRIFT_SUFFICIENT_DATA = Family(
    "modelmon_drift_sufficient_data", "gauge", MODEL_VERSION, "1 when the window holds enough rows for drift scores, else 0."
)
DATASET_DRIFT_SHARE = Family(
    "modelmon_dataset_drift_share", "gauge", MODEL_VERSION, "Share of monitored features drifted by their verdict score."
)
PREDICTION_DRIFT = Family(
    "modelmon_prediction_drift", "gauge", (*MODEL_VERSION, "output", "method"),
    "Drift of the model's outputs against its validation outputs.",
)

#: The drift report families, in exposition order.
DRIFT_FAMILIES = (FEATURE_DRIFT, FEATURE_DRIFT_THRESHOLD, DRIFT_WINDOW_ROWS, DRIFT_SUFFICIENT_DATA, DATASET_DRIFT_SHARE, PREDICTION_DRIFT)

# -- safe rollouts (``serving/rollout.py``; docs/rollout.md) -----------------------------
ROLLOUT_STATE = Family(
    "modelmon_rollout_state", "gauge", ("model", "primary", "candidate", "mode", "state"),
    "1 for the state of the model's newest rollout (running, promoted, rolled_back, aborted), 0 for the others.",
)
ROLLOUT_SHARE = Family(
    "modelmon_rollout_share", "gauge", ("model",),
    "The candidate's share of the model's unversioned traffic (canary), or of it copied to the candidate (shadow); "
    "1 once promoted, 0 once rolled back or aborted.",
)
ROLLOUT_GATE_BOUND = Family(
    "modelmon_rollout_gate_bound", "gauge", ("model", "gate", "bound"),
    "Always-valid interval (bound: low, high) of the gate's bad share, candidate minus primary, on this replica's "
    "traffic since it saw the rollout: low > 0 rolls back, high <= margin passes the step (the drift gate: of its "
    "prediction drift, and low > margin rolls back).",
)
ROLLOUT_GATE_MARGIN = Family("modelmon_rollout_gate_margin", "gauge", ("model", "gate"), "The gate's margin.")
ROLLOUT_GATE_COUNT = Family(
    "modelmon_rollout_gate_count", "gauge", ("model", "gate", "role"),
    "What the gate's statistic counts (requests or rows) of the candidate and the primary (role).",
)
ROLLOUT_DECISIONS = Family(
    "modelmon_rollout_decisions", "counter", ("model", "action"),
    "Rollout decisions this replica applied: advance, roll_back (promotion is the last advance).",
)
ROLLOUT_SHADOW = Family(
    "modelmon_rollout_shadow", "counter", ("model", "outcome"),
    "Shadow copies of requests, by outcome: answered, failed, timed_out, dropped (queue full), shed (the primary was busy).",
)
ROLLOUT_SHADOW_ROWS = Family(
    "modelmon_rollout_shadow_rows", "counter", ("model", "outcome"),
    "Rows a shadow candidate answered, against the primary's answers: agree or disagree (a classifier's labels), "
    "compared (a regressor's values).",
)
ROLLOUT_SHADOW_DIFFERENCE = Family(
    "modelmon_rollout_shadow_absolute_difference", "counter", ("model",),
    "A regressor's shadow: sum of |candidate - primary| over the compared rows.",
)
ROLLOUT_COMMANDS = Family(
    "modelmon_rollout_commands", "counter", ("action", "code"),
    "Rollout endpoint calls on this server (action: status, start, promote, abort), by HTTP status code.",
)
#: The rollout families, in exposition order (present once the server has seen a rollout).
ROLLOUT_FAMILIES = (
    ROLLOUT_STATE, ROLLOUT_SHARE, ROLLOUT_GATE_BOUND, ROLLOUT_GATE_MARGIN, ROLLOUT_GATE_COUNT,
    ROLLOUT_DECISIONS, ROLLOUT_SHADOW, ROLLOUT_SHADOW_ROWS, ROLLOUT_SHADOW_DIFFERENCE, ROLLOUT_COMMANDS,
)
