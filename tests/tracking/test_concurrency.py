"""Two training processes logging into one store at once, on SQLite and on PostgreSQL.

The store starts empty, so the two processes also race to create its schema. A barrier
releases them together; each flushes every epoch, so their write transactions overlap.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from modelmon.store import open_store
from modelmon.tracking import records
from tests.tracking.concurrent_writer import EPOCHS, METRICS, expected_value, write_run

WRITERS = 2


def test_two_runs_log_at_once(store_url: str) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Manager().Barrier(WRITERS)
    with ProcessPoolExecutor(WRITERS, mp_context=context) as pool:
        futures = [pool.submit(write_run, store_url, w, barrier) for w in range(WRITERS)]
        run_ids = [f.result(timeout=120) for f in futures]

    store = open_store(store_url)
    assert len(set(run_ids)) == WRITERS
    runs = {r.id: r for r in records.list_runs(store, "concurrent")}
    assert sorted(runs) == sorted(run_ids)
    windows = []
    for writer, run_id in enumerate(run_ids):
        assert runs[run_id].status == "finished"
        assert runs[run_id].params == {"writer": writer}
        frame = records.metric_frame(store, [run_id])
        assert len(frame) == EPOCHS * 2 * len(METRICS)  # nothing lost, nothing duplicated
        for row in frame.itertuples():
            assert row.value == expected_value(writer, row.step, METRICS.index(row.metric))
        windows.append((frame["logged_at"].min(), frame["logged_at"].max()))
    # The premise: the two runs were logging during the same interval.
    assert max(start for start, _ in windows) < min(end for _, end in windows)
