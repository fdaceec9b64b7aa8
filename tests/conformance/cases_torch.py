"""The PyTorch rows of the conformance table: tiny MLPs trained for a few steps with a fixed
seed, written as TorchScript (``torch.jit.save``) and registered from that file and from
the ``nn.Module`` itself.

torch is imported inside the factories (importing the table must not import it), so the
modules are defined there too; so is the table's module (``cases.py`` imports this one at
its end, and either may be imported first). The framework's own answer is the module called
by torch, with the softmax or sigmoid the network was trained with.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from tests.conformance.cases import Built

#: Full-batch Adam steps: enough for clear decisions, a fraction of a second.
STEPS = 150


def torchscript_writer(model: Any) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        import torch

        path = directory / "model.pt"
        torch.jit.save(torch.jit.script(model), str(path))
        return path

    return write


def mlp(features: pd.DataFrame, outputs: int, seed: int) -> Any:
    """Standardize (the training data's mean and scale, as buffers: the network takes raw
    features), Linear, ReLU, Linear. A user-defined module, scripted from its source."""
    import torch

    class Standardize(torch.nn.Module):
        def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
            super().__init__()
            self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
            self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return (x - self.mean) / self.scale

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            values = features.to_numpy(np.float64)
            self.standardize = Standardize(values.mean(axis=0), values.std(axis=0) + 1e-6)
            self.hidden = torch.nn.Linear(values.shape[1], 16)
            self.out = torch.nn.Linear(16, outputs)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.out(torch.relu(self.hidden(self.standardize(x))))

    torch.manual_seed(seed)
    return Net()


def fit(model: Any, features: pd.DataFrame, y: np.ndarray, loss: Any) -> Any:
    import torch

    x = torch.tensor(features.to_numpy(np.float32))
    target = torch.tensor(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    model.train()
    for _ in range(STEPS):
        optimizer.zero_grad()
        loss(model(x), target).backward()
        optimizer.step()
    return model.eval()


def scores(model: Any, frame: pd.DataFrame, features: list[str]) -> Any:
    import torch

    with torch.no_grad():
        return model(torch.tensor(frame[features].to_numpy(np.float32)))


def torch_binary() -> Built:
    """One logit output (BCEWithLogitsLoss), on four floats and an integer; classes 0/1."""
    import torch

    from tests.conformance.cases import Built, numeric_data, split

    train, validation = split(numeric_data(7), drop=("spend",))
    features = [c for c in train.columns if c != "churned"]
    model = mlp(train[features], 1, seed=0)
    y = train.churned.to_numpy(np.float32).reshape(-1, 1)
    fit(model, train[features], y, torch.nn.BCEWithLogitsLoss())

    def predict(frame: pd.DataFrame) -> np.ndarray:
        p = torch.sigmoid(scores(model, frame, features)).numpy().astype(np.float64)
        return np.hstack([1.0 - p, p])

    return Built(
        model=model, write=torchscript_writer(model), train=train, validation=validation,
        target="churned", classes=[0, 1], predict=predict,
    )


def tier_data(seed: int) -> pd.DataFrame:
    """Four floats and an integer; three string classes in ``tier``."""
    from tests.conformance.cases import numeric_data

    frame = numeric_data(seed).drop(columns=["churned", "spend"])
    score = 1.5 * frame.x0 - frame.x1 + 0.1 * (frame.visits - 10)
    frame["tier"] = np.where(score > 0.8, "gold", np.where(score > -0.8, "silver", "bronze"))
    return frame


def torch_multiclass() -> Built:
    """Three logits (CrossEntropyLoss) trained on the sorted labels' codes (``np.unique``);
    classes bronze/gold/silver."""
    import torch

    from tests.conformance.cases import Built, split

    train, validation = split(tier_data(8))
    features = [c for c in train.columns if c != "tier"]
    classes, codes = np.unique(train.tier.to_numpy(), return_inverse=True)
    model = mlp(train[features], len(classes), seed=1)
    fit(model, train[features], codes.astype(np.int64), torch.nn.CrossEntropyLoss())

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return torch.softmax(scores(model, frame, features), dim=1).numpy().astype(np.float64)

    return Built(
        model=model, write=torchscript_writer(model), train=train, validation=validation,
        target="tier", classes=classes.tolist(), predict=predict,
    )


def torch_regression() -> Built:
    """One output trained on a number (MSELoss): modelmon cannot tell it from a binary
    logit, so the target's values (not class labels) decide that it is a regressor."""
    import torch

    from tests.conformance.cases import Built, numeric_data, split

    train, validation = split(numeric_data(9), drop=("churned",))
    features = [c for c in train.columns if c != "spend"]
    model = mlp(train[features], 1, seed=2)
    fit(model, train[features], train.spend.to_numpy(np.float32).reshape(-1, 1), torch.nn.MSELoss())

    def predict(frame: pd.DataFrame) -> np.ndarray:
        return scores(model, frame, features).numpy().astype(np.float64).reshape(-1)

    return Built(
        model=model, write=torchscript_writer(model), train=train, validation=validation,
        target="spend", classes=[], predict=predict,
    )
