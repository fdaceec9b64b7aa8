"""What every drift peer script shares: reading the data, timing the work and its peak
memory, writing the result. Imports only the standard library and pandas (every peer venv
has pandas), so it runs in any of them.

Peak memory is the process's resident high-water mark (VmHWM) during the timed work: the
mark is reset (``/proc/self/clear_refs``) just before it, so loading the data does not count.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reference", type=Path, required=True)
    parser.add_argument("--current", type=Path, required=True)
    parser.add_argument("--numeric", required=True, help="comma-separated numeric feature names")
    parser.add_argument("--categorical", required=True, help="comma-separated categorical feature names")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.numeric = [c for c in args.numeric.split(",") if c]
    args.categorical = [c for c in args.categorical.split(",") if c]
    return args


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # MiB
    return float("nan")


class Timed:
    """One timed step: wall seconds, peak RSS during it, and RSS before it (MiB)."""

    def __init__(self) -> None:
        self.steps: dict[str, dict[str, float]] = {}

    @contextmanager
    def step(self, name: str):
        try:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        before = _status("VmRSS")
        started = time.perf_counter()
        yield
        seconds = time.perf_counter() - started
        self.steps[name] = {"seconds": round(seconds, 4), "peak_rss_mib": round(_status("VmHWM"), 1),
                            "rss_before_mib": round(before, 1),
                            "peak_added_mib": round(_status("VmHWM") - before, 1)}


def write(out: Path, timed: Timed, flagged: dict[str, bool], scores: dict, settings: str, **extra) -> None:
    out.write_text(json.dumps({"steps": timed.steps, "flagged": flagged, "scores": scores, "settings": settings, **extra},
                              indent=1, default=float))
