"""``modelmon runs ...``: training runs in the run store."""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from modelmon.console import (
    Column,
    FormatOption,
    OutputFormat,
    Part,
    add_row,
    fail,
    new_table,
    print_listing,
    print_table,
    say,
    text,
)
from modelmon.errors import ModelmonError
from modelmon.store import STORE_URL_ENV, Store, open_store

if TYPE_CHECKING:  # imported in the commands: pandas costs every `modelmon` command a second
    import pandas as pd

    from modelmon.tracking.records import RunRecord

runs_app = typer.Typer(
    help="Training runs: list, show, compare, export, plot.", no_args_is_help=True
)

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", envvar=STORE_URL_ENV, show_envvar=True,
        help="Run store: postgresql+psycopg://... or a SQLite file \\[default: $MODELMON_HOME/modelmon.db].",
    ),
]
MetricOption = Annotated[
    list[str] | None,
    typer.Option("--metric", "-m", help="Metric to show (repeatable) \\[default: loss, accuracy, precision, recall, F1]."),
]
AllOption = Annotated[bool, typer.Option("--all", help="Show every logged metric.")]
RunIds = Annotated[
    list[int], typer.Argument(help="Run ids (see `modelmon runs list`).", show_default=False)
]


class ExportFormat(StrEnum):
    csv = "csv"
    json = "json"


def _fail(exc: ModelmonError) -> NoReturn:
    fail(exc.message)


def _open(store: str | None) -> Store:
    try:
        return open_store(store)
    except ModelmonError as exc:
        _fail(exc)


def _runs(store: Store, run_ids: list[int]) -> list[RunRecord]:
    from modelmon.tracking import records

    try:
        return records.get_runs(store, run_ids)
    except ModelmonError as exc:
        _fail(exc)


def _number(value: float | None) -> Part:
    """A metric value for a table; non-finite ones in red, as they are flagged in the store."""
    if value is None:
        return ""
    return f"{value:.4g}" if math.isfinite(value) else (str(value), "red")


def _seconds(run: RunRecord) -> float:
    return round(((run.ended_at or datetime.now(UTC)) - run.started_at).total_seconds(), 3)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _status(status: str) -> Part:
    return status, {"running": "yellow", "finished": "green", "failed": "red"}.get(status)


def _model(run: RunRecord) -> str | None:
    return f"{run.model_name}:{run.model_version}" if run.model_name else None


def _chosen_metrics(frame: pd.DataFrame, metric: list[str] | None, all_: bool) -> list[str]:
    from modelmon.tracking.summary import headline_metrics

    if all_:
        return sorted(frame["metric"].unique())
    return list(metric) if metric else headline_metrics(frame["metric"].unique())


def _split_label(split: str) -> str:
    return "val" if split == "validation" else split


LIST_COLUMNS = (
    Column("id"),
    Column("experiment"),
    Column("name"),
    Column("status", cell=_status),
    Column("started", cell=lambda v: f"{v.astimezone():%m-%d %H:%M}"),
    Column("duration_seconds", "duration", cell=_duration),
    Column("epochs"),
    Column("val_loss", "val loss", cell=_number),
    Column("val_accuracy", "val accuracy", cell=_number),
    Column("val_f1", "val F1", cell=_number),
    Column("model"),
)


@runs_app.command("list")
def list_runs(
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only runs of this experiment.")
    ] = None,
    output_format: FormatOption = OutputFormat.table,
    store: StoreOption = None,
) -> None:
    """List runs with their status, epochs, final validation metrics and model."""
    from modelmon.tracking import records
    from modelmon.tracking.summary import FAMILIES, final_and_best, headline_metrics

    opened = _open(store)
    runs = records.list_runs(opened, experiment)
    rows: list[dict[str, Any]] = []
    if runs:
        shown = [*FAMILIES["loss"], *FAMILIES["accuracy"], *FAMILIES["f1"]]
        final = final_and_best(records.metric_frame(opened, [r.id for r in runs], "validation", shown))
    for run in runs:
        values = final[final["run_id"] == run.id].set_index("metric")["final"]
        picked = [headline_metrics(values.index, [family]) for family in ("loss", "accuracy", "f1")]
        rows.append({
            "id": run.id, "experiment": run.experiment, "name": run.name, "status": run.status,
            "started": run.started_at, "duration_seconds": _seconds(run), "epochs": run.last_step,
            **{key: float(values[p[0]]) if p else None
               for key, p in zip(("val_loss", "val_accuracy", "val_f1"), picked, strict=True)},
            "model": _model(run),
        })
    where = f" of experiment {experiment!r}" if experiment else ""
    print_listing(LIST_COLUMNS, rows, output_format, title=f"runs in {opened.display_url}",
                  empty=f"no runs{where} in {opened.display_url}")


@runs_app.command("show")
def show_run(
    run_id: Annotated[
        int, typer.Argument(metavar="RUN", help="Run id (see `modelmon runs list`).")
    ],
    metric: MetricOption = None,
    all_: AllOption = False,
    output_format: Annotated[OutputFormat, typer.Option(
        "--format", "-f", case_sensitive=False,
        help="table: the run's facts and its metrics per epoch; csv or json: one row per "
        "epoch, a column per split and metric (the facts are in `runs compare RUN --format json`).",
    )] = OutputFormat.table,
    store: StoreOption = None,
) -> None:
    """Show a run: its params, tags, outcome, and a table of its metrics per epoch."""
    from modelmon.tracking import records
    from modelmon.tracking.summary import ordered_splits

    opened = _open(store)
    (run,) = _runs(opened, [run_id])
    if output_format is OutputFormat.table:
        facts = new_table(Column("fact"), Column("value"), grid=True)
        add_row(facts, "run", f"{run.id}" + (f" ({run.name})" if run.name else ""))
        add_row(facts, "experiment", run.experiment)
        add_row(facts, "status", text(_status(run.status), f": {run.error}" if run.error else ""))
        add_row(facts, "started",
                f"{run.started_at.astimezone():%Y-%m-%d %H:%M:%S}, ran {_duration(_seconds(run))}")
        for label, value in (("git commit", run.git_commit), ("model", _model(run))):
            if value:
                add_row(facts, label, value)
        for label, mapping in (("params", run.params), ("tags", run.tags)):
            if mapping:
                add_row(facts, label,
                        ", ".join(f"{k}={records.param_text(v)}" for k, v in sorted(mapping.items())))
        print_table(facts)
    frame = records.metric_frame(opened, [run.id])
    metrics = [] if frame.empty else _chosen_metrics(frame, metric, all_)
    shown = [m for m in metrics if m in set(frame["metric"])]
    splits = ordered_splits(frame["split"].unique())
    # Splits of each metric, in order; in the table they share a cell ("train / val").
    logged = set(zip(frame["metric"], frame["split"], strict=True))
    per_metric = {m: [s for s in splits if (m, s) in logged] for m in shown}
    by_step: dict[int, dict[str, Any]] = {}
    for step, name, split, value in zip(frame["step"], frame["metric"], frame["split"], frame["value"], strict=True):
        if name in per_metric:
            by_step.setdefault(int(step), {"epoch": int(step)})[f"{split}_{name}"] = float(value)
    rows = [by_step[step] for step in sorted(by_step)]
    columns = [Column("epoch"), *(Column(f"{s}_{m}") for m in shown for s in per_metric[m])]
    table = new_table(Column("epoch"), *(
        Column(m, f"{m}\n{' / '.join(_split_label(s) for s in per_metric[m])}", justify="right")
        for m in shown
    ))
    for row in rows:
        add_row(table, str(row["epoch"]), *(_joined([row.get(f"{s}_{m}") for s in per_metric[m]])
                                            for m in shown))
    empty = ("no metrics logged" if frame.empty else
             f"none of {metrics} was logged; logged: {sorted(frame['metric'].unique())}")
    print_listing(columns, rows, output_format, title="per epoch", table=table, empty=empty)


def _joined(values: list[float | None]) -> Part:
    """Values of one metric in several splits as one cell: "0.2 / 0.3"."""
    parts: list[Part] = []
    for i, value in enumerate(values):
        parts += [" / "] if i else []
        parts.append("—" if value is None else _number(value))
    return text(*parts)


@runs_app.command("compare")
def compare_runs(
    run_ids: RunIds,
    metric: MetricOption = None,
    all_: AllOption = False,
    output_format: Annotated[OutputFormat, typer.Option(
        "--format", "-f", case_sensitive=False,
        help="table: runs side by side; csv or json: one row per run with its params "
        "(param_NAME) and each metric's final value, best value and best epoch "
        "(SPLIT_METRIC, SPLIT_METRIC_best, SPLIT_METRIC_best_epoch).",
    )] = OutputFormat.table,
    store: StoreOption = None,
) -> None:
    """Compare runs side by side: params (differences in bold), then each metric's final
    value and its best (lowest for losses, highest otherwise) with the epoch it was reached."""
    from modelmon.tracking import records
    from modelmon.tracking.summary import final_and_best, ordered_splits

    opened = _open(store)
    runs = _runs(opened, run_ids)
    rows: list[dict[str, Any]] = [
        {"id": r.id, "name": r.name, "experiment": r.experiment, "status": r.status,
         "epochs": r.last_step, "model": _model(r)}
        for r in runs
    ]
    columns = [Column(key) for key in rows[0]]
    table = new_table(Column(""), *(Column(str(r.id), f"{r.id}" + (f" {r.name}" if r.name else ""))
                                    for r in runs))
    add_row(table, "experiment", *(r.experiment for r in runs))
    add_row(table, "status", *(_status(r.status) for r in runs))
    add_row(table, "epochs", *("" if r.last_step is None else str(r.last_step) for r in runs))
    if any(r.model_name for r in runs):
        add_row(table, "model", *(_model(r) for r in runs))
    table.add_section()
    for key in sorted({k for r in runs for k in r.params}):
        columns.append(Column(f"param_{key}"))
        for row, r in zip(rows, runs, strict=True):
            row[f"param_{key}"] = r.params.get(key)
        values = [records.param_text(r.params[key]) if key in r.params else "—" for r in runs]
        add_row(table, f"param {key}", *values, style="bold" if len(set(values)) > 1 else None)
    frame = records.metric_frame(opened, [r.id for r in runs])
    if not frame.empty:
        summary = final_and_best(frame).set_index(["run_id", "split", "metric"])
        metrics = _chosen_metrics(frame, metric, all_)
        table.add_section()
        for split in ordered_splits(frame["split"].unique()):
            for name in metrics:
                found = [_final_best(summary, r.id, split, name) for r in runs]
                if not any(found):
                    continue
                key = f"{split}_{name}"
                columns += [Column(key), Column(f"{key}_best"), Column(f"{key}_best_epoch")]
                for row, final_best in zip(rows, found, strict=True):
                    row[key], row[f"{key}_best"], row[f"{key}_best_epoch"] = final_best or (None, None, None)
                add_row(table, f"{_split_label(split)} {name}", *(_final_best_cell(v) for v in found))
    print_listing(columns, rows, output_format, title="runs compared", table=table)


def _final_best(summary: pd.DataFrame, run_id: int, split: str,
                metric: str) -> tuple[float, float | None, int | None] | None:
    """A run's final value of a metric, its best and the epoch of the best; None if not logged."""
    import pandas as pd

    key = (run_id, split, metric)
    if key not in summary.index:
        return None
    row = summary.xs(key)  # one row of the (run, split, metric) index
    if pd.isna(row["best"]):
        return float(row["final"]), None, None
    return float(row["final"]), float(row["best"]), int(row["best_step"])


def _final_best_cell(values: tuple[float, float | None, int | None] | None) -> Part:
    """"0.7 (best 0.8 @2)", or the final value alone when it is the best."""
    if values is None:
        return ""
    final, best, step = values
    if best is None or best == final:
        return text(_number(final))
    return text(_number(final), " (best ", _number(best), f" @{step})")


@runs_app.command("export")
def export_runs(
    output_format: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="Output format.")
    ] = ExportFormat.csv,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="File to write \\[default: standard output]."),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only runs of this experiment.")
    ] = None,
    run_id: Annotated[
        list[int] | None, typer.Option("--run", help="Only this run (repeatable).")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Export metric values, one row per run, split, metric and epoch, with each run's
    experiment, name and status; non-finite values keep their flag."""
    import pandas as pd

    from modelmon.tracking import records

    opened = _open(store)
    runs = _runs(opened, run_id) if run_id else records.list_runs(opened, experiment)
    if experiment is not None:
        runs = [r for r in runs if r.experiment == experiment]
    frame = records.metric_frame(opened, [r.id for r in runs])
    info = pd.DataFrame(
        [(r.id, r.experiment, r.name, r.status) for r in runs],
        columns=["run_id", "experiment", "run_name", "run_status"],
    )
    frame = info.merge(frame, on="run_id", how="inner")
    frame["logged_at"] = [v.isoformat() for v in frame["logged_at"]]
    if output_format is ExportFormat.csv:
        frame[["run_name", "non_finite"]] = frame[["run_name", "non_finite"]].fillna("")
        text = frame.to_csv(index=False, na_rep="nan")  # only values can be missing now
    else:
        frame["value"] = [v if math.isfinite(v) else None for v in frame["value"]]
        frame = frame.astype(object).where(frame.notna(), None)
        text = json.dumps(frame.to_dict(orient="records"), indent=1) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        say(f"wrote {len(frame)} values of {len(runs)} runs to {out}")


@runs_app.command("plot")
def plot(
    run_ids: RunIds,
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG file to write.")] = Path("curves.png"),
    store: StoreOption = None,
) -> None:
    """Plot loss, accuracy and F1 per epoch of one or more runs, training (dashed) against
    validation (solid), into a PNG."""
    from modelmon.tracking import records
    from modelmon.tracking.plot import plot_runs

    opened = _open(store)
    runs = _runs(opened, run_ids)
    try:
        plot_runs(runs, records.metric_frame(opened, run_ids), out)
    except ModelmonError as exc:
        _fail(exc)
    say(f"wrote {out}")
