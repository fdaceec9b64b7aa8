"""The on-disk registry: ``<root>/<name>/<version>/`` with the artifact and ``model.json``.

A version directory counts only once its ``model.json`` exists; the card is written last and
atomically, so a crash mid-registration leaves no half-registered version behind.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from modelmon.config import default_registry_dir
from modelmon.errors import ModelNotFoundError, RegistryError
from modelmon.registry.card import CARD_FILE, ModelCard
from modelmon.runtimes.base import Runtime, runtime_named, verified_path
from modelmon.types import Task

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_model_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise RegistryError(
            f"invalid model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def parse_model_ref(ref: str) -> tuple[str, str]:
    """``NAME`` or ``NAME:VERSION`` as (name, version), version defaulting to ``latest``."""
    name, _, version = ref.partition(":")
    return check_model_name(name), version or "latest"


class Registry:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_registry_dir()

    def __repr__(self) -> str:
        return f"Registry({str(self.root)!r})"

    def model_names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        model_dir = self.root / name
        if not model_dir.is_dir():
            return []
        return sorted(
            int(p.name)
            for p in model_dir.iterdir()
            if p.name.isdigit() and (p / CARD_FILE).is_file()
        )

    def resolve_version(self, name: str, version: int | str = "latest") -> int:
        versions = self.versions(name)
        if not versions:
            raise ModelNotFoundError(f"model {name!r} is not registered in {self.root}")
        if version == "latest":
            return versions[-1]
        try:
            number = int(version)
        except (TypeError, ValueError):
            raise ModelNotFoundError(
                f"version {version!r} of model {name!r}: expected a number or 'latest'"
            ) from None
        if number not in versions:
            raise ModelNotFoundError(
                f"model {name!r} has no version {number}; it has {versions}"
            )
        return number

    def version_dir(self, name: str, version: int) -> Path:
        return self.root / name / str(version)

    def card(self, name: str, version: int | str = "latest") -> ModelCard:
        number = self.resolve_version(name, version)
        path = self.version_dir(name, number) / CARD_FILE
        return ModelCard.model_validate_json(path.read_bytes())

    def cards(self) -> list[ModelCard]:
        return [self.card(name, v) for name in self.model_names() for v in self.versions(name)]

    def allocate_version(self, name: str) -> tuple[int, Path]:
        """Claim the next version number; ``mkdir`` is atomic, so two registrations racing
        for the same name get different numbers."""
        check_model_name(name)
        model_dir = self.root / name
        model_dir.mkdir(parents=True, exist_ok=True)
        existing = [int(p.name) for p in model_dir.iterdir() if p.name.isdigit()]
        number = max(existing, default=0) + 1
        while True:
            try:
                (model_dir / str(number)).mkdir()
                return number, model_dir / str(number)
            except FileExistsError:
                number += 1

    def write_card(self, card: ModelCard) -> Path:
        path = self.version_dir(card.name, card.version) / CARD_FILE
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(card.model_dump_json(indent=2))
        os.replace(tmp, path)
        return path

    def load_predictor(self, card: ModelCard) -> Runtime:
        """The runtime to serve ``card`` with, after checking the artifact is the one that
        was registered."""
        directory = self.version_dir(card.name, card.version)
        artifact = card.serving_artifact or card.artifact
        runtime = runtime_named(card.runtime)
        return runtime.load(verified_path(directory, artifact), artifact, card.signature)

    def load_loss_estimator(self, card: ModelCard) -> Any:
        """A regressor's label-free error estimate fitted at registration, or None (a
        classifier, or a version registered without labelled rows)."""
        if card.signature.task is not Task.REGRESSION:
            return None
        try:
            from modelmon.registry.loss_estimator import LossEstimator
        except ModuleNotFoundError as exc:  # written by its own change (issue 18): until then, none
            if exc.name != "modelmon.registry.loss_estimator":
                raise
            return None
        return LossEstimator.load(self.version_dir(card.name, card.version))
