"""The demo's rollout phase (docs/rollout.md): a candidate version that is worse on the drifted
customers goes out as a canary and is rolled back by the estimated-quality gate, before a
single label of that traffic arrives.

The candidate is the same pipeline trained on a few hundred customers with strong
regularisation: its probabilities stay near the churn rate, so on the drifted customers,
where the primary is sure of more of them, CBPE expects it to err more, and it does (the
phase prints both versions' accuracy on the true labels that were never sent).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelmon import register_model
from modelmon.demo.data import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TARGET, generate_customers

#: The candidate's training rows and regularisation: few rows, probabilities near the base rate.
CANDIDATE_ROWS = 200
CANDIDATE_C = 0.003
#: Rows per request and the most requests the phase sends before giving up on a decision.
ROWS_PER_REQUEST = 20
MAX_REQUESTS = 1000


def candidate_pipeline(train: pd.DataFrame) -> object:
    pipeline = make_pipeline(
        make_column_transformer(
            (StandardScaler(), NUMERIC_FEATURES),
            (OneHotEncoder(handle_unknown="ignore"), CATEGORICAL_FEATURES),
        ),
        LogisticRegression(C=CANDIDATE_C, max_iter=1000),
    )
    return pipeline.fit(train.drop(columns=TARGET), train[TARGET])


def rollout_phase(url: str, registry_dir: Path, model: str, console: Console) -> None:
    """Register the candidate, start a canary of it, send drifted customers until the rollout
    decides (or ``MAX_REQUESTS``), and print the decision with its evidence."""
    train = generate_customers(CANDIDATE_ROWS, seed=11)
    card = register_model(candidate_pipeline(train), name=model, reference=train, target=TARGET,
                          validation=generate_customers(1000, seed=12), registry=registry_dir)
    started = httpx.post(f"{url}/v2/repository/models/{model}/rollout/start", timeout=30,
                         json={"candidate": card.version, "mode": "canary", "steps": [50, 100]})
    if started.status_code != 200:
        console.print(f"[bold]7. Rollout[/bold]   [yellow]could not start: {started.text}[/yellow]", soft_wrap=True)
        return
    console.print(f"[bold]7. Rollout[/bold]   version {card.version} (trained on {CANDIDATE_ROWS} customers) as a canary "
                  f"taking 50% of the drifted traffic; no label will be sent")
    customers = generate_customers(ROWS_PER_REQUEST * MAX_REQUESTS, seed=13, shift=True)
    features = customers.drop(columns=TARGET)
    state, sent, seconds = "running", 0, time.perf_counter()
    right: dict[str, list[bool]] = {}  # version -> whether each row it answered was right
    with httpx.Client(timeout=30) as client:
        while sent < MAX_REQUESTS and state == "running":
            chunk = customers.iloc[sent * ROWS_PER_REQUEST:(sent + 1) * ROWS_PER_REQUEST]
            response = client.post(f"{url}/v1/models/{model}:predict", json={"instances": features.loc[chunk.index].to_dict("records")})
            sent += 1
            if response.status_code == 200:
                body = response.json()
                labels = [p["label"] for p in body["predictions"]]
                right.setdefault(str(body["model_version"]), []).extend(np.asarray(labels) == chunk[TARGET].to_numpy())
            if response.status_code != 200 or sent % 10 == 0:
                state = client.get(f"{url}/v2/repository/models/{model}/rollout").json()["state"]
    status = httpx.get(f"{url}/v2/repository/models/{model}/rollout", timeout=30).json()
    seconds = time.perf_counter() - seconds
    if status["state"] != "rolled_back":
        console.print(f"    no rollback after {sent} requests: the rollout is {status['state']}")
        return
    evidence = status["decisions"][-1]["evidence"]
    failed = evidence["failed"]
    gate = evidence["gates"][failed[0]]
    console.print(f"    rolled back after {sent} requests in {seconds:.1f} s on {', '.join(failed)}: its interval of the "
                  f"candidate's bad share minus version {status['primary']}'s is [{gate['low']:.3f}, {gate['high']:.3f}], "
                  f"above 0 ({int(gate['candidate']['count'])} and {int(gate['primary']['count'])} rows), with no label sent")
    shown = [f"version {v} {np.mean(r):.3f} on {len(r)} rows" for v, r in sorted(right.items())]
    console.print(f"    accuracy on the true labels (never sent): {', '.join(shown)}")
