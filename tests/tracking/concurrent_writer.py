"""A training process for the concurrency test, run in a spawned child.

Kept apart from the test module so the child imports only this and modelmon.
"""

from __future__ import annotations

import time
from typing import Any

EPOCHS = 100
METRICS = ("loss", "accuracy", "precision", "recall", "f1")


def expected_value(writer: int, epoch: int, metric_index: int) -> float:
    return writer + epoch / 1000 + metric_index / 1e6


def write_run(url: str, writer: int, barrier: Any) -> int:
    """Open the (possibly empty) store at the same moment as the other writer, then, once
    both runs exist, log every epoch of both splits, flushing each, so that the two
    processes' write transactions interleave."""
    from modelmon.tracking import start_run

    barrier.wait(timeout=60)
    with start_run("concurrent", name=f"writer-{writer}", params={"writer": writer},
                   store=url, flush_seconds=0.01) as run:
        barrier.wait(timeout=60)
        for epoch in range(1, EPOCHS + 1):
            time.sleep(
                0.001
            )  # an epoch takes a moment, so neither finishes before the other starts
            for split in ("train", "validation"):
                values = {m: expected_value(writer, epoch, i) for i, m in enumerate(METRICS)}
                run.log_metrics(values, step=epoch, split=split)
            run.flush()
    return run.id
