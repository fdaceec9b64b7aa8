"""``modelmon runs ...``: training runs in the run store."""

from __future__ import annotations

import json
import math
import sys
from datetime import UTC, datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from modelmon.errors import ModelmonError
from modelmon.store import STORE_URL_ENV, Store, open_store

if TYPE_CHECKING:  # imported in the commands: pandas costs every `modelmon` command a second
    import pandas as pd

    from modelmon.tracking.records import RunRecord

runs_app = typer.Typer(
    help="Training runs: list, show, compare, export, plot.", no_args_is_help=True
)
console = Console(stderr=True)

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


class ExportFormat(str, Enum):
    csv = "csv"
    json = "json"


def _fail(exc: ModelmonError) -> NoReturn:
    console.print(f"[red]error:[/red] {exc.message}")
    raise typer.Exit(code=2)


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


def _number(value: float) -> str:
    """A metric value for a table; non-finite ones in red, as they are flagged in the store."""
    return f"{value:.4g}" if math.isfinite(value) else f"[red]{value}[/red]"


def _duration(run: RunRecord) -> str:
    seconds = ((run.ended_at or datetime.now(UTC)) - run.started_at).total_seconds()
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _status(status: str) -> str:
    colour = {"running": "yellow", "finished": "green", "failed": "red"}[status]
    return f"[{colour}]{status}[/{colour}]"


def _model(run: RunRecord) -> str:
    return f"{run.model_name}:{run.model_version}" if run.model_name else ""


def _chosen_metrics(frame: pd.DataFrame, metric: list[str] | None, all_: bool) -> list[str]:
    from modelmon.tracking.summary import headline_metrics

    if all_:
        return sorted(frame["metric"].unique())
    return list(metric) if metric else headline_metrics(frame["metric"].unique())


def _split_label(split: str) -> str:
    return "val" if split == "validation" else split


@runs_app.command("list")
def list_runs(
    experiment: Annotated[
        str | None, typer.Option("--experiment", "-e", help="Only runs of this experiment.")
    ] = None,
    store: StoreOption = None,
) -> None:
    """List runs with their status, epochs, final validation metrics and model."""
    from modelmon.tracking import records
    from modelmon.tracking.summary import FAMILIES, final_and_best, headline_metrics

    opened = _open(store)
    runs = records.list_runs(opened, experiment)
    if not runs:
        where = f" of experiment {experiment!r}" if experiment else ""
        console.print(f"no runs{where} in {opened.display_url}")
        return
    shown = [*FAMILIES["loss"], *FAMILIES["accuracy"], *FAMILIES["f1"]]
    final = final_and_best(records.metric_frame(opened, [r.id for r in runs], "validation", shown))
    table = Table("id", "experiment", "name", "status", "started", "duration", "epochs",
                  "val loss", "val accuracy", "val F1", "model", title=f"runs in {opened.display_url}")
    for run in runs:
        values = final[final["run_id"] == run.id].set_index("metric")["final"]
        picked = [headline_metrics(values.index, [family]) for family in ("loss", "accuracy", "f1")]
        cells = [_number(values[p[0]]) if p else "" for p in picked]
        table.add_row(
            str(run.id), run.experiment, run.name or "", _status(run.status),
            f"{run.started_at.astimezone():%m-%d %H:%M}", _duration(run),
            "" if run.last_step is None else str(run.last_step), *cells, _model(run),
        )
    Console().print(table)


@runs_app.command("show")
def show_run(
    run_id: Annotated[
        int, typer.Argument(metavar="RUN", help="Run id (see `modelmon runs list`).")
    ],
    metric: MetricOption = None,
    all_: AllOption = False,
    store: StoreOption = None,
) -> None:
    """Show a run: its params, tags, outcome, and a table of its metrics per epoch."""
    from modelmon.tracking import records
    from modelmon.tracking.summary import ordered_splits

    opened = _open(store)
    (run,) = _runs(opened, [run_id])
    out = Console()
    facts = Table.grid(padding=(0, 2))
    facts.add_row("run", f"{run.id}" + (f" ({run.name})" if run.name else ""))
    facts.add_row("experiment", run.experiment)
    facts.add_row("status", _status(run.status) + (f": {run.error}" if run.error else ""))
    facts.add_row(
        "started", f"{run.started_at.astimezone():%Y-%m-%d %H:%M:%S}, ran {_duration(run)}"
    )
    for label, value in (("git commit", run.git_commit), ("model", _model(run))):
        if value:
            facts.add_row(label, value)
    for label, mapping in (("params", run.params), ("tags", run.tags)):
        if mapping:
            facts.add_row(
                label, ", ".join(f"{k}={records.param_text(v)}" for k, v in sorted(mapping.items()))
            )
    out.print(facts)
    frame = records.metric_frame(opened, [run.id])
    if frame.empty:
        out.print("no metrics logged")
        return
    metrics = _chosen_metrics(frame, metric, all_)
    splits = ordered_splits(frame["split"].unique())
    frame["cell"] = [_number(v) for v in frame["value"]]
    wide = frame.pivot(index="step", columns=["metric", "split"], values="cell").fillna("—")
    shown = [m for m in metrics if m in wide.columns.get_level_values("metric")]
    if not shown:
        out.print(f"none of {metrics} was logged; logged: {sorted(frame['metric'].unique())}")
        return
    # One column per metric, its splits side by side in each cell ("train / val").
    per_metric = {m: [s for s in splits if (m, s) in wide.columns] for m in shown}
    table = Table("epoch", title="per epoch")
    for m in shown:
        table.add_column(
            f"{m}\n{' / '.join(_split_label(s) for s in per_metric[m])}", justify="right"
        )
    for step, row in wide.iterrows():
        table.add_row(str(step), *(" / ".join(row[(m, s)] for s in per_metric[m]) for m in shown))
    out.print(table)


@runs_app.command("compare")
def compare_runs(
    run_ids: RunIds,
    metric: MetricOption = None,
    all_: AllOption = False,
    store: StoreOption = None,
) -> None:
    """Compare runs side by side: params (differences in bold), then each metric's final
    value and its best (lowest for losses, highest otherwise) with the epoch it was reached."""
    from modelmon.tracking import records
    from modelmon.tracking.summary import final_and_best, ordered_splits

    opened = _open(store)
    runs = _runs(opened, run_ids)
    table = Table(
        "", *(f"{r.id}" + (f" {r.name}" if r.name else "") for r in runs), title="runs compared"
    )
    table.add_row("experiment", *(r.experiment for r in runs))
    table.add_row("status", *(_status(r.status) for r in runs))
    table.add_row("epochs", *("" if r.last_step is None else str(r.last_step) for r in runs))
    if any(r.model_name for r in runs):
        table.add_row("model", *(_model(r) for r in runs))
    table.add_section()
    for key in sorted({k for r in runs for k in r.params}):
        values = [records.param_text(r.params[key]) if key in r.params else "—" for r in runs]
        style = "bold" if len(set(values)) > 1 else None
        table.add_row(f"param {key}", *values, style=style)
    frame = records.metric_frame(opened, [r.id for r in runs])
    if not frame.empty:
        summary = final_and_best(frame).set_index(["run_id", "split", "metric"])
        metrics = _chosen_metrics(frame, metric, all_)
        table.add_section()
        for split in ordered_splits(frame["split"].unique()):
            for name in metrics:
                cells = [_final_best(summary, r.id, split, name) for r in runs]
                if any(cells):
                    table.add_row(f"{_split_label(split)} {name}", *cells)
    Console().print(table)


def _final_best(summary: pd.DataFrame, run_id: int, split: str, metric: str) -> str:
    import pandas as pd

    key = (run_id, split, metric)
    if key not in summary.index:
        return ""
    row = summary.loc[key]
    text = _number(row["final"])
    if not pd.isna(row["best"]) and row["best"] != row["final"]:
        text += f" (best {_number(row['best'])} @{int(row['best_step'])})"
    return text


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
        console.print(f"wrote {len(frame)} values of {len(runs)} runs to {out}")


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
    console.print(f"wrote {out}")
