"""One registry holding every case of the table, and one live server serving them all.

Each case is registered twice, from its file (as ``<case id>``, the version the server
serves) and from the Python object (as ``<case id>-object``). A case that fails to build or
register fails its own checks only, with the error, as a row of ``parametrize_with_checks``
would; the others are still registered and served.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from modelmon.registry import ModelCard, Registry, register_model
from modelmon.stack.processes import stop_process
from tests.conformance.cases import ACTIVE_CASES, Built, Case
from tests.conftest import ServerProcess, start_server


@dataclass(frozen=True)
class Registered:
    case: Case
    built: Built
    file: Path  # the model file registered
    card: ModelCard  # registered from the file; what the server serves
    object_card: ModelCard  # registered from the Python object


class Conformance:
    """The registered cases, by case."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.registry = Registry(root)
        self.entries: dict[str, Registered] = {}
        self.errors: dict[str, str] = {}

    def __getitem__(self, case: Case) -> Registered:
        if case.id in self.errors:
            pytest.fail(f"case {case.id} could not be built and registered:\n{self.errors[case.id]}", pytrace=False)
        return self.entries[case.id]

    def add(self, case: Case, files: Path) -> None:
        try:
            built = case.build()
            directory = files / case.id
            directory.mkdir()
            path = built.write(directory)
            data = {"reference": built.train, "target": built.target, "validation": built.validation}
            card = register_model(path, name=case.id, registry=self.registry, **data)
            object_card = register_model(built.model, name=f"{case.id}-object", registry=self.registry, **data)
        except Exception:
            self.errors[case.id] = traceback.format_exc()
            return
        self.entries[case.id] = Registered(case, built, path, card, object_card)


@pytest.fixture(scope="session")
def conformance(tmp_path_factory: pytest.TempPathFactory) -> Conformance:
    registered = Conformance(tmp_path_factory.mktemp("conformance-registry"))
    files = tmp_path_factory.mktemp("conformance-files")
    for case in ACTIVE_CASES:
        registered.add(case, files)
    return registered


@dataclass(frozen=True)
class Live:
    server: ServerProcess
    store: Path  # the SQLite store of the prediction log and labels

    @property
    def url(self) -> str:
        return self.server.url

    def post(self, path: str, **kwargs) -> httpx.Response:
        return httpx.post(f"{self.url}{path}", timeout=30, **kwargs)


@pytest.fixture(scope="session")
def live(conformance: Conformance, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """``modelmon serve`` with a store, serving the file-registered version of every case."""
    if not conformance.entries:
        pytest.fail(f"no case registered: {conformance.errors}")
    logs = tmp_path_factory.mktemp("conformance-server")
    store = logs / "store.db"
    models = [arg for name in conformance.entries for arg in ("--model", name)]
    server = start_server(conformance.root, logs, "--store", str(store), "--drain-seconds", "0", *models)
    try:
        yield Live(server, store)
    finally:
        stop_process(server.process)
