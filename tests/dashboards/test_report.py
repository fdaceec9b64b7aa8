"""``modelmon report`` on the live stack: every panel drawn from the same queries as the
dashboards, into one self-contained HTML file with embedded PNG charts."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelmon.dashboards import catalog
from modelmon.dashboards.catalog import QUALITY_UID, TRAINING_UID, all_dashboards
from modelmon.dashboards.report import write_report
from tests.dashboards.conftest import REGRESSION_EXPERIMENT, REGRESSOR

pytestmark = pytest.mark.slow
PNG = re.compile(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'")


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in PNG.findall(html)]


def _check_report(html: str, title: str = "modelmon report") -> list[bytes]:
    # The document's title is the one asked for, not the last panel's.
    assert f"<title>{title}</title>" in html and f"<h1>{title}</h1>" in html
    # Self-contained: no scripts, no style sheets or images from elsewhere.
    assert "<script" not in html and "<link" not in html
    assert not re.search(r"(src|href)=['\"]https?:", html)
    assert "No data" not in html and "Error:" not in html
    images = _images(html)
    # A chart for every panel that is not a stat or a table; the bins panel once per feature.
    charts = sum(p.kind not in ("stat", "table") for p in _classifier_panels()) + 3
    assert len(images) == charts
    assert all(image.startswith(b"\x89PNG\r\n\x1a\n") for image in images)
    for title in ("Loss", "Fleet PSI per feature against the threshold", "Accuracy", "Request latency (p50, p95, p99)",
                  "Live against reference shares: amount", "Confusion matrix", "Runs compared", "Alert history"):
        assert f"<h4>{title}</h4>" in html, title
    return images


def _classifier_panels() -> list:
    """Every panel a classifier's report draws: all but the regression rows', and the rollout
    row's (no rollout here: the report leaves that row out)."""
    return [p for d in all_dashboards() for row in d.rows if row.task != "regression" and row.only_if is None for p in row.panels]


def _regression_panels(uid: str = QUALITY_UID) -> list:
    return [p for d in all_dashboards() if d.uid == uid for row in d.rows if row.task == "regression" for p in row.panels]


def test_report_draws_every_panel_from_postgresql(stack, tmp_path):
    seconds = (datetime.now(UTC) - stack.started).total_seconds() + 10
    out = tmp_path / "report.html"
    summary = write_report(out, stack.prometheus.url, stack.store_urls["postgresql"], range_seconds=seconds, scrape_interval=1.0,
                           model="shop")
    assert summary.notes == []
    assert summary.empty == [], [f"{p.dashboard} / {p.title}: {p.error or 'No data'}" for p in summary.empty]
    # Every panel of every dashboard but the regression rows, the repeated one once per feature (4 features).
    assert len(summary.panels) == len(_classifier_panels()) + 3
    _check_report(out.read_text())


def test_report_of_a_regressor_draws_its_regression_panels(stack, tmp_path):
    """A regressor's report has the regression rows and the rows for any model (its labels:
    coverage, delay, outcomes), with data, and not the classifier's quality rows (which
    would be empty)."""
    seconds = (datetime.now(UTC) - stack.started).total_seconds() + 10
    summary = write_report(tmp_path / "price.html", stack.prometheus.url, None, range_seconds=seconds, scrape_interval=1.0,
                           model=REGRESSOR)
    quality = [p for p in summary.panels if p.dashboard == "modelmon / Model quality"]
    task_free = [p for row in catalog.quality().rows if row.task is None for p in row.panels]
    assert {p.title for p in task_free} == {"Label coverage", "Label delay (p50, p95)", "Labels received by outcome"}
    assert sorted(p.title for p in quality) == sorted(p.title for p in [*_regression_panels(), *task_free])
    assert all(p.has_data for p in quality), [p.title for p in quality if not p.has_data]


def test_report_of_a_regressor_draws_drift_panels_with_data_and_no_classifier_panels(stack, tmp_path):
    """The drift dashboard of a regressor: every panel it draws has data (missing and unseen
    values as shares of the rows it predicted, its predicted values against the validation
    predictions), and none of the classifier's prediction panels (classes, confidence), which
    a regressor has no series for, is drawn empty."""
    seconds = (datetime.now(UTC) - stack.started).total_seconds() + 10
    summary = write_report(tmp_path / "price.html", stack.prometheus.url, None, range_seconds=seconds, scrape_interval=1.0,
                           model=REGRESSOR)
    drift = [p for p in summary.panels if p.dashboard == "modelmon / Data drift and quality"]
    assert [p.title for p in drift if not p.has_data] == []
    titles = {p.title for p in drift}
    classifier = {p.title for row in catalog.drift().rows if row.task == "classification" for p in row.panels}
    assert classifier and not titles & classifier, titles & classifier
    # The regressor's own prediction panel, and the task-free ones, are drawn.
    regressor = {p.title for row in catalog.drift().rows if row.task == "regression" for p in row.panels}
    assert regressor and regressor <= titles, regressor - titles
    assert {"Missing values", "Unseen values", "Prediction drift", "Prediction drift (PSI)"} <= titles


def test_report_command_on_sqlite(stack, tmp_path):
    seconds = int((datetime.now(UTC) - stack.started).total_seconds() + 10)
    out = tmp_path / "r.html"
    result = subprocess.run(
        [sys.executable, "-m", "modelmon.cli", "report", "--out", str(out), "--prometheus", stack.prometheus.url,
         "--store", stack.store_urls["sqlite"], "--range", f"{seconds}s", "--scrape-interval", "1s", "--model", "shop"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"wrote .*r\.html: \d+ panels with data, 0 without", " ".join(result.stderr.split())), result.stderr
    html = out.read_text()
    images = _check_report(html)
    keep = os.environ.get("MODELMON_KEEP_REPORT")  # a directory: keep the report and its charts to look at
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        (Path(keep) / "report.html").write_text(html)
        for i, image in enumerate(images):
            (Path(keep) / f"chart-{i:02d}.png").write_bytes(image)


def test_report_with_only_a_store_draws_the_training_runs(stack, tmp_path):
    summary = write_report(tmp_path / "r.html", None, stack.store_urls["sqlite"], range_seconds=3600, scrape_interval=1.0)
    skipped = [note.split(":")[0] for note in summary.notes]
    assert skipped == ["modelmon / Serving", "modelmon / Data drift and quality", "modelmon / Model quality", "modelmon / Alerts"]
    assert all("--prometheus" in note for note in summary.notes)
    training = next(d for d in all_dashboards() if d.uid == TRAINING_UID)
    # The default experiment's runs are a classifier's: the regressors' learning curves are left out.
    drawn = [p for row in training.rows if row.task != "regression" for p in row.panels]
    assert len(summary.panels) == sum(p.source == "sql" for p in drawn) and summary.empty == []
    html = (tmp_path / "r.html").read_text()
    assert html.count("Not drawn: its data source was not given.") == 3  # the live training panels


def test_report_of_regressor_runs_draws_their_learning_curves(stack, tmp_path):
    """Runs of a regressor: the report draws the MAE, RMSE, R², bias and loss curves and the
    regressors' runs table, all with data, and leaves out the classifier's curves (which
    would be "No data")."""
    summary = write_report(tmp_path / "r.html", None, stack.store_urls["postgresql"], range_seconds=3600,
                           experiment=REGRESSION_EXPERIMENT)
    training = next(d for d in all_dashboards() if d.uid == TRAINING_UID)
    drawn = {p.title for p in summary.panels if p.dashboard == training.title}
    regressor = {p.title for p in _regression_panels(TRAINING_UID)}
    classifier = {p.title for row in training.rows if row.task == "classification" for p in row.panels}
    assert regressor <= drawn and not drawn & classifier, drawn
    assert summary.empty == [], [p.title for p in summary.empty]
    html = (tmp_path / "r.html").read_text()
    assert f"experiment = {REGRESSION_EXPERIMENT}" in html
    assert "<h4>Accuracy</h4>" not in html and "<h4>R²</h4>" in html


def test_report_needs_a_source(tmp_path):
    from modelmon.errors import ModelmonError

    with pytest.raises(ModelmonError, match="--prometheus URL, --store URL"):
        write_report(tmp_path / "r.html")


def test_report_leaves_out_a_regressor_loss_its_runs_did_not_log(tmp_path):
    """Runs of fit_epochs on a scikit-learn regressor log MAE, RMSE, R² and the bias but no loss:
    the report leaves the regressor's loss panel out instead of showing it empty, and draws
    the other curves from the run's values."""
    from sklearn.linear_model import SGDRegressor

    import modelmon
    from modelmon.tracking.sklearn import fit_epochs
    from tests.dashboards.conftest import _price_data

    store = str(tmp_path / "store.db")
    train, validation = _price_data(200, 7), _price_data(100, 8)
    features = ["x0", "x1", "x2"]
    with modelmon.start_run("sk-regressor", params={"alpha": 1e-4}, store=store) as run:
        fit_epochs(SGDRegressor(random_state=0), train[features], train.price, run=run, epochs=3,
                   validation=(validation[features], validation.price))
    summary = write_report(tmp_path / "r.html", None, store, range_seconds=3600)
    drawn = {p.title for p in summary.panels}
    assert {"MAE", "RMSE", "R²", "Mean error (bias)", "Regressor runs compared"} <= drawn
    assert "Regressor loss" not in drawn and "Loss" not in drawn
    assert summary.empty == [], [p.title for p in summary.empty]
