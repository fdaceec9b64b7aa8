"""Every query of every panel, run against the live stack (see conftest.py) as Grafana would
run it: template variables resolved by their own queries, built-ins and SQL macros
expanded, PromQL through Prometheus's HTTP API, SQL on SQLite and on PostgreSQL. Each must
return data: a series with a finite value, or a table with a row."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from modelmon.dashboards import catalog
from modelmon.dashboards.catalog import (
    DRIFT_UID,
    QUALITY_UID,
    SERVING_UID,
    TRAINING_UID,
    all_dashboards,
)
from modelmon.dashboards.queries import (
    Source,
    panel_contexts,
    resolve_variables,
    run_query,
    variable_values,
)
from modelmon.dashboards.spec import Dashboard, Panel
from modelmon.dashboards.templating import Expansion, TimeRange
from modelmon.registry import Registry
from tests.dashboards.conftest import (
    REGRESSION_EPOCHS,
    REGRESSION_EXPERIMENT,
    REGRESSOR,
    REGRESSOR_ROWS,
)

pytestmark = pytest.mark.slow
DASHBOARDS = {d.uid: d for d in all_dashboards()}


#: Panels this stack cannot give data: the rollout rows need a rollout, which needs a second
#: version of shop in the session's registry, which other tests read (versions, "Loaded
#: versions"). tests/rollout/test_rollout_panels.py runs the Prometheus ones against a real
#: Prometheus scraping a server with a running shadow rollout and a rolled-back canary;
#: tests/dashboards/test_decisions_panel.py the store's table on SQLite and PostgreSQL.
ROLLOUT_PANELS = {p.title for row in (catalog.rollout(), catalog.rollout_decisions()) for p in row.panels}


def _cases() -> list:
    cases = []
    for dashboard in DASHBOARDS.values():
        sql_dashboard = any(v.source == "sql" for v in dashboard.variables if v.kind == "query")
        for panel in dashboard.panels:
            if dashboard.uid == SERVING_UID and panel.title in ROLLOUT_PANELS:
                continue
            dialects = ("sqlite", "postgresql") if panel.source == "sql" or sql_dashboard else ("sqlite",)
            for dialect in dialects:
                label = dialect if panel.source == "sql" or sql_dashboard else "prometheus"
                cases.append(pytest.param(dashboard.uid, panel.title, dialect, id=f"{dashboard.uid}/{panel.title}/{label}"))
    return cases


def _context(stack, dashboard: Dashboard, dialect: str, model: str = "shop",
             experiment: str | None = None) -> tuple[Source, Expansion]:
    source = Source(prometheus_url=stack.prometheus.url, store_url=stack.store_urls[dialect], scrape_interval=1.0)
    tr = TimeRange(stack.started - timedelta(seconds=10), datetime.now(UTC))
    context = Expansion(tr, min_interval=1.0)
    chosen = {"model": model} if any(v.name == "model" for v in dashboard.variables) else {}
    if experiment is not None:
        chosen["experiment"] = experiment
    resolve_variables(dashboard, source, context, chosen)
    return source, context


def _panel(uid: str, title: str) -> Panel:
    return next(p for p in DASHBOARDS[uid].panels if p.title == title)


def _model_of(uid: str, title: str) -> str:
    """The model a panel is drawn for: the regressor for a regression row, else the classifier."""
    row = next(r for r in DASHBOARDS[uid].rows if any(p.title == title for p in r.panels))
    return REGRESSOR if row.task == "regression" else "shop"


def _experiment_of(uid: str, title: str) -> str | None:
    """The experiment a training panel is drawn for: the regressor's runs for a regression row,
    else the default (the classifier's)."""
    row = next(r for r in DASHBOARDS[uid].rows if any(p.title == title for p in r.panels))
    return REGRESSION_EXPERIMENT if uid == TRAINING_UID and row.task == "regression" else None


@pytest.mark.parametrize("uid, title, dialect", _cases())
def test_every_panel_query_returns_data(stack, uid, title, dialect):
    dashboard = DASHBOARDS[uid]
    panel = _panel(uid, title)
    source, context = _context(stack, dashboard, dialect, _model_of(uid, title), _experiment_of(uid, title))
    runs = panel_contexts(panel, context)
    assert runs, f"{title}: the repeat variable {panel.repeat} has no value"
    for repeat_value, ctx in runs:
        for query in panel.queries:
            result = run_query(query, source, ctx)
            where = f"{uid} / {title}" + (f" [{panel.repeat}={repeat_value}]" if repeat_value else "")
            assert result.has_data, f"{where}: No data from\n{result.text}"


#: Panels of rows for any model whose queries a regressor cannot all answer here: the errors
#: by reason show only reasons that happened (the stack sends the regressor no bad request).
NOT_FOR_REGRESSORS_YET = {"Error ratio by reason"}


def _task_free_cases() -> list:
    """The panels of rows for any model (no task) of the dashboards that choose a model,
    Prometheus ones, the rollout rows left out as above."""
    return [pytest.param(d.uid, p.title, id=f"{d.uid}/{p.title}")
            for d in DASHBOARDS.values() if any(v.name == "model" for v in d.variables)
            for row in d.rows if row.task is None and row.only_if is None
            for p in row.panels if p.source == "prometheus" and p.title not in NOT_FOR_REGRESSORS_YET]


@pytest.mark.parametrize("uid, title", _task_free_cases())
def test_every_query_of_a_panel_for_any_model_returns_data_for_a_regressor(stack, uid, title):
    """A panel that is in no task's row is drawn for a regressor too: each of its queries has
    data for one (none reads a classifier's series, such as modelmon_predictions_total)."""
    panel = _panel(uid, title)
    source, context = _context(stack, DASHBOARDS[uid], "sqlite", REGRESSOR)
    for repeat_value, ctx in panel_contexts(panel, context):
        for query in panel.queries:
            result = run_query(query, source, ctx)
            assert result.has_data, f"{uid} / {title} [{repeat_value}]: No data for {REGRESSOR} from\n{result.text}"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
@pytest.mark.parametrize("uid", list(DASHBOARDS))
def test_every_variable_resolves_from_its_own_query(stack, uid, dialect):
    dashboard = DASHBOARDS[uid]
    source, context = _context(stack, dashboard, dialect)
    for variable in dashboard.variables:
        values = variable_values(variable, source, context)
        if variable.may_be_empty:  # cluster: no cluster label here, and cluster="" selects every series
            assert values == [], uid
            continue
        assert values, f"{uid}: variable {variable.name} has no value"
    if "model" in context.variables:
        assert context.variables["model"].values == ("shop",)
    if "feature" in context.variables:
        assert set(context.variables["feature"].values) == {"amount", "items", "channel", "region"}
    if "run" in context.variables:
        assert len(context.variables["run"].values) == (3 if dialect == "sqlite" else 2)


def test_regression_panels_show_scikit_learn_values(stack):
    """The regression row's realized MAE, RMSE and bias, as the panels query them, equal
    scikit-learn's on the rows the regressor served (every row labelled, all in the window)."""
    truth, predicted = stack.regression
    assert len(truth) == len(predicted) > 0
    expected = {
        "MAE: realized, estimated and baseline": mean_absolute_error(truth, predicted),
        "RMSE: realized, estimated and baseline": np.sqrt(mean_squared_error(truth, predicted)),
        "Residual bias": np.mean(predicted - truth),
    }
    source, context = _context(stack, DASHBOARDS[QUALITY_UID], "sqlite", REGRESSOR)
    for title, value in expected.items():
        realized = run_query(_panel(QUALITY_UID, title).queries[0], source, context)  # the first query: realized
        last = [v for s in realized.series for v in s.values if math.isfinite(v)][-1]
        assert last == pytest.approx(float(value), rel=1e-9), title


@pytest.mark.parametrize("kind", ["stat", "timeseries"])
def test_label_coverage_of_a_regressor_is_its_labelled_share_of_the_rows_it_predicted(stack, kind):
    """The regressor has no modelmon_predictions_total (a classifier's): its label coverage,
    as the panel queries it, counts the rows it predicted (modelmon_batch_size_sum), and the
    stack labelled every one of them."""
    truth, predicted = stack.regression
    assert len(truth) == len(predicted) == REGRESSOR_ROWS
    panel = next(p for p in DASHBOARDS[QUALITY_UID].panels if p.title == "Label coverage" and p.kind == kind)
    source, context = _context(stack, DASHBOARDS[QUALITY_UID], "sqlite", REGRESSOR)
    coverage = run_query(panel.queries[0], source, context)
    values = [v for s in coverage.series for v in s.values if math.isfinite(v)]
    assert values, f"No data for {REGRESSOR} from\n{coverage.text}"
    assert values[-1] == pytest.approx(1.0, rel=1e-9)


def test_predicted_value_shares_are_the_regressors_predictions_in_its_reference_bins(stack):
    """The regressor's predicted value shares, as the drift panel queries them: each bin's
    live share is the share of the values it served that fall in that bin of its registered
    reference (edges from its model card), and the reference share is the card's."""
    _, predicted = stack.regression
    card = Registry(stack.servers[2].log.parent / "regressors").card(REGRESSOR)
    reference = card.reference_profile.predicted_values
    assert reference is not None and len(reference.edges) > 0
    counts = np.bincount(np.searchsorted(np.asarray(reference.edges), predicted, side="right"), minlength=len(reference.bin_labels))
    panel = _panel(DRIFT_UID, "Predicted value shares against the validation data")
    source, context = _context(stack, DASHBOARDS[DRIFT_UID], "sqlite", _model_of(DRIFT_UID, panel.title))
    live, shares = (run_query(q, source, context).table for q in panel.queries)
    assert live is not None and shares is not None
    bin_at = live.columns.index("bin")
    assert {row[bin_at]: row[-1] for row in live.rows} == pytest.approx(
        dict(zip(reference.bin_labels, counts / len(predicted), strict=True)), abs=1e-9)
    assert {row[bin_at]: row[-1] for row in shares.rows} == pytest.approx(
        dict(zip(reference.bin_labels, reference.shares, strict=True)), abs=1e-9)


REGRESSION_CURVES = {
    "MAE": mean_absolute_error,
    "RMSE": lambda y, p: np.sqrt(mean_squared_error(y, p)),
    "R²": r2_score,
    "Mean error (bias)": lambda y, p: np.mean(p - y),
    "Regressor loss": lambda y, p: mean_squared_error(y, p) / 2,
}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_regression_learning_curves_show_scikit_learn_values(stack, dialect):
    """Each regression learning curve, as its panel queries it, holds one point per run, split
    and epoch, equal to scikit-learn's metric on what the model predicted at that epoch (the
    loss: half the mean squared error, what the runs passed)."""
    predicted = stack.regression_runs[dialect]
    source, context = _context(stack, DASHBOARDS[TRAINING_UID], dialect, experiment=REGRESSION_EXPERIMENT)
    for title, metric in REGRESSION_CURVES.items():
        table = run_query(_panel(TRAINING_UID, title).queries[0], source, context).table
        assert table is not None and table.columns == ["step", "value", "series"], title
        got = {(series.rsplit(" ", 1)[0], series.rsplit(" ", 1)[1], int(step)): float(value) for step, value, series in table.rows}
        assert len(got) == len(table.rows) == len(predicted), title  # no point twice, none missing
        for key, (y, p) in predicted.items():
            assert got[key] == pytest.approx(float(metric(y, p)), rel=1e-9, abs=1e-12), (title, key)


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_regressor_runs_compared_shows_final_and_best_validation_values(stack, dialect):
    """The runs-compared table of regressors: each run's last epoch's validation MAE, RMSE, R²
    and loss, its lowest MAE and RMSE and highest R² over the epochs, as scikit-learn gives them."""
    predicted = stack.regression_runs[dialect]
    source, context = _context(stack, DASHBOARDS[TRAINING_UID], dialect, experiment=REGRESSION_EXPERIMENT)
    table = run_query(_panel(TRAINING_UID, "Regressor runs compared").queries[0], source, context).table
    assert table is not None
    rows = {row[table.columns.index("run_name")]: dict(zip(table.columns, row, strict=True)) for row in table.rows}
    assert sorted(rows) == sorted({name for name, _, _ in predicted})
    for name, row in rows.items():
        per_epoch = {m: [float(f(*predicted[(name, "validation", e)])) for e in range(1, REGRESSION_EPOCHS + 1)]
                     for m, f in (("mae", REGRESSION_CURVES["MAE"]), ("rmse", REGRESSION_CURVES["RMSE"]),
                                  ("r2", REGRESSION_CURVES["R²"]), ("loss", REGRESSION_CURVES["Regressor loss"]))}
        expected = {**{m: values[-1] for m, values in per_epoch.items()},
                    "best_mae": min(per_epoch["mae"]), "best_rmse": min(per_epoch["rmse"]), "best_r2": max(per_epoch["r2"]),
                    "epochs": REGRESSION_EPOCHS}
        for column, value in expected.items():
            assert float(row[column]) == pytest.approx(value, rel=1e-9), (name, column)


def test_regression_alerts_compute_scikit_learn_values_on_the_live_counters(stack):
    """The built-in MAE and RMSE alerts' left-hand sides, run on the regressor's live
    counters, are scikit-learn's MAE and RMSE on the rows served (the alerts stay quiet here:
    400 labels are under their 1000-label floor)."""
    from modelmon.alerting.builtins import builtin_rules
    from modelmon.alerting.config import AlertingConfig

    truth, predicted = stack.regression
    expected = {"ModelmonMAEAboveBaseline": mean_absolute_error(truth, predicted),
                "ModelmonRMSEAboveBaseline": np.sqrt(mean_squared_error(truth, predicted))}
    rules = {r.name: r for r in builtin_rules(AlertingConfig())}
    for name, value in expected.items():
        ratio = rules[name].expr.split("\n> on")[0]
        answer = stack.prometheus.query(ratio)
        assert [a["metric"]["model"] for a in answer] == [REGRESSOR], name
        assert float(answer[0]["value"][1]) == pytest.approx(float(value), rel=1e-9), name
        assert stack.prometheus.query(rules[name].expr) == [], name


def test_instance_variable_selects_replicas(stack):
    """$instance (issue 23, item 8): All shows both replicas of shop, one chosen shows it alone."""
    dashboard = DASHBOARDS[SERVING_UID]
    panel = _panel(SERVING_UID, "CPU per replica")
    source, context = _context(stack, dashboard, "sqlite")
    replicas = context.variables["instance"].values
    assert len(replicas) == 2 and context.variables["instance"].all

    def shown(ctx) -> set[str]:
        return {s.labels["instance"] for s in run_query(panel.queries[0], source, ctx).series}

    assert shown(context) == set(replicas)
    one = Expansion(context.time_range, min_interval=1.0)
    resolve_variables(dashboard, source, one, {"model": "shop", "instance": [replicas[0]]})
    assert shown(one) == {replicas[0]}
