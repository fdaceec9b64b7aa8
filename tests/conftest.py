"""Shared fixtures: small real models, a registry holding them, and live servers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelmon.registry import Registry, register_model
from modelmon.stack.processes import free_port, stop_process, wait_for_http
from modelmon.store import close_store
from tests.tracking.conftest import postgres_schema


@pytest.fixture(scope="session")
def cancer_frame() -> pd.DataFrame:
    """load_breast_cancer as a DataFrame: 30 numeric features and a 0/1 ``target``."""
    data = load_breast_cancer(as_frame=True)
    frame = data.frame.copy()
    frame.columns = [c.replace(" ", "_") for c in frame.columns]
    return frame


@pytest.fixture(scope="session")
def cancer_model(cancer_frame: pd.DataFrame) -> LogisticRegression:
    X = cancer_frame.drop(columns="target")
    return LogisticRegression(max_iter=10000).fit(X, cancer_frame["target"])


@pytest.fixture(scope="session")
def shop_frame() -> pd.DataFrame:
    """Mixed numeric and categorical data with three string classes."""
    rng = np.random.default_rng(7)
    n = 600
    frame = pd.DataFrame(
        {
            "amount": rng.gamma(2.0, 30.0, n),
            "items": rng.integers(1, 10, n),
            "channel": rng.choice(["web", "app", "store"], n, p=[0.5, 0.3, 0.2]),
            "region": rng.choice(["north", "south", "east", "west"], n),
        }
    )
    score = frame.amount / 60 + (frame.channel == "app") * 1.5 - (frame.region == "south")
    frame["segment"] = np.where(score > 2.2, "gold", np.where(score > 1.0, "silver", "bronze"))
    return frame


@pytest.fixture(scope="session")
def shop_model(shop_frame: pd.DataFrame):
    pipeline = make_pipeline(
        make_column_transformer(
            (StandardScaler(), ["amount", "items"]),
            (OneHotEncoder(handle_unknown="ignore"), ["channel", "region"]),
        ),
        LogisticRegression(max_iter=1000),
    )
    return pipeline.fit(shop_frame.drop(columns="segment"), shop_frame["segment"])


@pytest.fixture(scope="session")
def registry_dir(tmp_path_factory, cancer_model, cancer_frame, shop_model, shop_frame) -> Path:
    """A registry with ``cancer`` (30 numeric features, classes 0/1) and ``shop`` (numeric
    and categorical features, classes bronze/gold/silver)."""
    root = tmp_path_factory.mktemp("registry")
    register_model(cancer_model, name="cancer", reference=cancer_frame, target="target",
                   validation=cancer_frame, registry=root)
    register_model(shop_model, name="shop", reference=shop_frame, target="segment",
                   validation=shop_frame, registry=root)
    return root


@pytest.fixture(scope="session")
def registry(registry_dir: Path) -> Registry:
    return Registry(registry_dir)


@dataclass
class ServerProcess:
    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path


def start_server(registry_dir: Path, log_dir: Path, *extra_args: str, home: Path | None = None) -> ServerProcess:
    """``modelmon serve`` as a real child process, ready to answer. Its MODELMON_HOME (the
    default store and spool) is ``home``, or a directory of its own under ``log_dir``."""
    port = free_port()
    home = home or log_dir / f"home-{port}"
    log = log_dir / f"server-{port}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "modelmon.cli", "serve", "--registry", str(registry_dir),
         "--port", str(port), *extra_args],
        stdout=log.open("wb"), stderr=subprocess.STDOUT,
        # The repository root on the path lets test-only model classes load in the server;
        # its src first, so that the server runs this checkout's code (a git worktree's too,
        # not only the one the virtualenv was installed from).
        env={**os.environ, "PYTHONUNBUFFERED": "1",
             "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent / "src"), str(Path(__file__).parent.parent)]),
             "MODELMON_HOME": str(home)},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/v2/health/ready", timeout=60, process=process)
    except Exception:
        stop_process(process)
        raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}") from None
    return ServerProcess(url=url, port=port, process=process, log=log)


@pytest.fixture(scope="module")
def server(registry_dir: Path, tmp_path_factory) -> Iterator[ServerProcess]:
    """One live server per test module (state such as counters is shared within it)."""
    handle = start_server(registry_dir, tmp_path_factory.mktemp("server"), "--drain-seconds", "0")
    yield handle
    stop_process(handle.process)


#: Every test that takes ``store_url`` runs on both run stores: a SQLite file, and a PostgreSQL
#: schema of its own (tests/tracking/conftest.py: postgres_schema).
@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = str(tmp_path / "store.db")
        yield url
        close_store(url)
    else:
        with postgres_schema() as url:
            yield url
