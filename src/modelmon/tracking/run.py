"""A training run: ``with start_run(...) as run`` records params, metrics and the outcome.

The run is a row in the store from its first moment (status ``running``), its values are
written in batches (``modelmon.tracking.writer``) and, when asked, shown live to
Prometheus (``modelmon.tracking.live``). Leaving the block ends it: ``finished``, or
``failed`` with the error when an exception escaped. A run the program never ended is
ended as failed when the interpreter exits, so nothing logged is lost and no run stays
``running`` forever.
"""

from __future__ import annotations

import atexit
import logging
import operator
import subprocess
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from pydantic import ValidationError

from modelmon.store import Store, open_store
from modelmon.tracking import records
from modelmon.tracking.classification import classification_metrics
from modelmon.tracking.errors import TrackingError
from modelmon.tracking.live import LiveRun, Pusher, process_collector, serve_training_metrics
from modelmon.tracking.regression import regression_metrics
from modelmon.tracking.settings import TrackingSettings
from modelmon.tracking.writer import BatchWriter

log = logging.getLogger("modelmon.tracking")

TRAIN, VALIDATION = "train", "validation"
MAX_SPLIT_LENGTH, MAX_NAME_LENGTH = 32, 200

#: Runs not yet ended, held so that the exit hook can end them.
_active: set[Run] = set()


class Run:
    """An active training run. Create it with ``start_run``."""

    def __init__(
        self, store: Store, run_id: int, experiment: str, name: str,
        settings: TrackingSettings,
    ) -> None:
        self.store = store
        self.id = run_id
        self.experiment = experiment
        self.name = name
        self.status = "running"
        self._step: int | None = None
        self._flagged: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._live = LiveRun(experiment, str(run_id))
        self._pusher = Pusher(settings.pushgateway, self._live) if settings.pushgateway else None
        if settings.live_port is not None:
            process_collector.add(self._live)
        self._writer = BatchWriter(
            store, flush_seconds=settings.flush_seconds, max_rows=settings.max_buffered_rows,
            after_flush=self._pusher.push if self._pusher else None,
            name=f"modelmon-run-{run_id}",
        )
        _active.add(self)

    def __repr__(self) -> str:
        return f"Run(id={self.id}, experiment={self.experiment!r}, status={self.status!r})"

    @property
    def step(self) -> int | None:
        """The highest step logged so far."""
        return self._step

    def log_metrics(
        self, metrics: Mapping[str, Any], *, step: int | None = None, split: str = TRAIN
    ) -> None:
        """Record ``metrics`` (name to number) of ``split`` at ``step``.

        ``step`` is the epoch (or any increasing counter) [default: the highest step logged
        so far, 0 at first]. NaN and infinite values are recorded, flagged and warned
        about once per metric; they never raise.
        """
        if self.status != "running":
            raise TrackingError(f"run {self.id} has ended ({self.status}); start a new run")
        split = _checked_text(split, "split", MAX_SPLIT_LENGTH)
        step = self._checked_step(step)
        now = datetime.now(UTC)
        values: dict[str, float] = {}
        rows: list[Mapping[str, Any]] = []
        for raw_name, raw_value in metrics.items():
            name = _checked_text(raw_name, "metric name", MAX_NAME_LENGTH)
            value = _number(name, raw_value)
            stored, flag = records.flag_value(value)
            if flag is not None:
                self._warn_non_finite(split, name, flag, step)
            values[name] = value
            rows.append({"run_id": self.id, "split": split, "name": name, "step": step,
                         "value": stored, "non_finite": flag, "logged_at": now})
        with self._lock:
            self._step = step if self._step is None else max(self._step, step)
        self._writer.add(rows)
        self._live.update(split, values, step)

    def log_classification(
        self,
        split: str,
        y_true: Any,
        y_pred: Any,
        y_proba: Any = None,
        *,
        loss: float | None = None,
        step: int | None = None,
        labels: Any = None,
        positive: Any = None,
    ) -> dict[str, float]:
        """Compute and record accuracy, precision, recall, F1 (and log loss with
        ``y_proba``) of ``split``; see ``classification_metrics``. Returns them."""
        metrics = classification_metrics(
            y_true, y_pred, y_proba, labels=labels, positive=positive, loss=loss
        )
        self.log_metrics(metrics, step=step, split=split)
        return metrics

    def log_regression(
        self, split: str, y_true: Any, y_pred: Any, *, loss: float | None = None, step: int | None = None
    ) -> dict[str, float]:
        """Compute and record MAE, RMSE, R² and the mean error of ``split``; see
        ``regression_metrics``. Returns them."""
        metrics = regression_metrics(y_true, y_pred, loss=loss)
        self.log_metrics(metrics, step=step, split=split)
        return metrics

    def flush(self) -> None:
        """Write the values logged so far to the store (and the Pushgateway) now."""
        self._writer.flush()

    def end(self, error: BaseException | str | None = None) -> None:
        """Finish the run, or fail it with ``error``; its live series are removed.
        Ending an ended run does nothing."""
        with self._lock:
            if self.status != "running":
                return
            self.status = "finished" if error is None else "failed"
        _active.discard(self)
        message = None
        if isinstance(error, BaseException):
            message = f"{type(error).__name__}: {error}".rstrip(": ")
        elif error is not None:
            message = str(error)
        try:
            self._writer.close()
        finally:
            records.end_run(self.store, self.id, self.status, message)
            process_collector.remove(self._live)
            if self._pusher is not None:
                self._pusher.delete()

    def __enter__(self) -> Run:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.end(exc)

    def _checked_step(self, step: int | None) -> int:
        if step is None:
            return self._step or 0
        if isinstance(step, bool):
            raise TrackingError(f"step must be an integer, got {step!r}")
        try:
            step = operator.index(step)
        except TypeError:
            raise TrackingError(f"step must be an integer, got {step!r}") from None
        if step < 0:
            raise TrackingError(f"step must be 0 or more, got {step}")
        return step

    def _warn_non_finite(self, split: str, name: str, flag: str, step: int) -> None:
        if (split, name) not in self._flagged:
            self._flagged.add((split, name))
            log.warning("run %s: %s %s is %s at step %s (recorded and flagged)",
                        self.id, split, name, flag, step)


def start_run(
    experiment: str = "default",
    *,
    name: str | None = None,
    params: Mapping[str, Any] | None = None,
    tags: Mapping[str, str] | None = None,
    store: Store | str | Path | None = None,
    live_port: int | None = None,
    pushgateway: str | None = None,
    git_commit: str | None = None,
    flush_seconds: float | None = None,
) -> Run:
    """Start a run of ``experiment`` (created on first use) and return it.

    Use it as ``with start_run(...) as run:``. ``store`` is a URL or SQLite path [default:
    ``$MODELMON_STORE_URL``, else ``$MODELMON_HOME/modelmon.db``]. ``live_port`` serves the
    run's live gauges on that port of this process [``$MODELMON_TRAINING_PORT``];
    ``pushgateway`` pushes them to a Pushgateway URL [``$MODELMON_PUSHGATEWAY_URL``].
    ``git_commit`` defaults to the HEAD of the git checkout the process runs in, if any.
    """
    try:
        settings = TrackingSettings.from_env(
            store=None if store is None or isinstance(store, Store) else str(store),
            live_port=live_port,
            pushgateway=pushgateway, flush_seconds=flush_seconds,
        )
    except ValidationError as exc:
        raise TrackingError(f"invalid tracking settings: {exc}") from None
    experiment = _checked_text(experiment, "experiment", MAX_NAME_LENGTH)
    if settings.live_port is not None:  # before the run exists: a busy port is a clean error
        serve_training_metrics(settings.live_port, settings.live_address)
    opened = store if isinstance(store, Store) else open_store(settings.store)
    run_id = records.create_run(
        opened, experiment=experiment, name=name, params=dict(params or {}),
        tags=dict(tags or {}), git_commit=git_commit or head_commit(),
        started_at=datetime.now(UTC),
    )
    return Run(opened, run_id, experiment, name or records.default_run_name(run_id), settings)


def head_commit() -> str | None:
    """The commit checked out in the working directory, when it is a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def _checked_text(value: Any, what: str, max_length: int) -> str:
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise TrackingError(f"{what} must be a non-empty string of at most {max_length} "
                            f"characters, got {value!r}")
    return value


def _number(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TrackingError(
            f"metric {name!r} must be a number, got {type(value).__name__} {value!r:.80}"
        ) from None
    return number


@atexit.register
def _end_abandoned_runs() -> None:
    for run in list(_active):
        run.end("the process exited while the run was active")
