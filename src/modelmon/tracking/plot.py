"""Learning curves of one or more runs as a PNG: loss, accuracy and F1 per epoch.

One panel per metric family, one colour per run, a dashed line for the training split and
a solid one for validation, which is how over-fitting shows (the lines part). Drawn with
matplotlib's object API, so it needs no display and touches no global pyplot state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from modelmon.tracking.errors import TrackingError
from modelmon.tracking.records import RunRecord
from modelmon.tracking.summary import headline_metrics

if TYPE_CHECKING:
    from matplotlib.lines import Line2D

PANELS = ("loss", "accuracy", "f1")
TITLES = {"loss": "Loss", "accuracy": "Accuracy", "f1": "F1"}
SPLIT_STYLES = {"train": "--", "validation": "-"}


def plot_runs(runs: list[RunRecord], frame: pd.DataFrame, out: Path) -> Path:
    """Draw ``runs``' curves from ``frame`` (a ``metric_frame``) into ``out``."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ModuleNotFoundError:
        raise TrackingError("plotting needs matplotlib: pip install 'modelmon[plot]'") from None
    figure = Figure(figsize=(5 * len(PANELS), 4.6), layout="constrained")
    axes = figure.subplots(1, len(PANELS))
    palette = [f"C{i}" for i in range(10)]
    legend: dict[str, Line2D] = {}  # one legend for the figure: label -> line
    for panel, ax in zip(PANELS, axes, strict=True):
        ax.set_title(TITLES[panel])
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        names = []
        for i, run in enumerate(runs):
            values = frame[(frame["run_id"] == run.id) & frame["split"].isin(SPLIT_STYLES)]
            metric = next(iter(headline_metrics(values["metric"], [panel])), None)
            if metric is None:
                continue
            names.append(metric)
            for split, style in SPLIT_STYLES.items():
                curve = values[(values["metric"] == metric) & (values["split"] == split)]
                if curve.empty:
                    continue
                curve = curve.sort_values("step")
                label = f"{run.label} {split}"
                (line,) = ax.plot(curve["step"], curve["value"], style, color=palette[i % len(palette)],
                                  marker="o", markersize=3, label=label)
                legend.setdefault(label, line)
        if names:
            ax.set_ylabel(" / ".join(sorted(set(names))))
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes)
    if not legend:
        labels = ", ".join(r.label for r in runs)
        raise TrackingError(f"{labels}: no loss, accuracy or F1 values logged to plot")
    figure.legend(list(legend.values()), list(legend), loc="outside lower center",
                  ncols=min(len(legend), 4), fontsize="small")
    figure.suptitle(", ".join(f"{r.label} ({r.experiment})" for r in runs))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    return out
