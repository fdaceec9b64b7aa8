"""The demos' rollout phase (docs/rollout.md): a candidate version that is worse on the
drifted customers goes out as a canary and is rolled back by a label-free gate, before a
single label of that traffic arrives; the phase then prints both versions' true quality on
the labels it never sent.

- The churn classifier (``modelmon demo``, scikit-learn or Keras): the candidate is a
  logistic regression trained on a few hundred customers with strong regularisation
  (``classifier_candidate``). Its probabilities stay near the churn rate, so on the drifted
  customers, where the primary is sure of more of them, CBPE expects it to err more, and it
  does: rolled back by ``estimated_quality``. Beside the Keras network it is the same
  scikit-learn candidate: a rollout compares versions whatever runtime serves them, as long
  as they take the same features and answer the same classes.
- The spend regressor (``modelmon demo --task regression``, ``regression.spend_candidate``):
  rolled back by ``estimated_error``, the share of rows whose expected |error| (each
  version's own label-free estimate) exceeds the primary's validation MAE.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from rich.console import Console
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelmon import ModelCard, register_model
from modelmon.demo.data import CATEGORICAL_FEATURES, NUMERIC_FEATURES, TARGET, generate_customers
from modelmon.stack.prometheus import Prometheus

#: The classifier candidate's training rows and regularisation: few rows, probabilities near the base rate.
CANDIDATE_ROWS = 200
CANDIDATE_C = 0.003
#: Rows per request and the most requests the phase sends before giving up on a decision.
#: Measured: rolled back after 390 requests (scikit-learn churn), 650 (Keras churn, whose
#: primary is closer to the candidate) and 120-200 (spend); the phase then took 3-5 s and
#: 2.3-3.7 s of CPU, the candidate's registration included.
ROWS_PER_REQUEST = 20
MAX_REQUESTS = 1000
#: The candidate's share of the traffic: one canary step, then all of it (which promotes).
STEPS = [50, 100]
#: What each label-free gate's bad share is, for the printout (rollout_gates.GATES).
BAD_SHARES = {
    "estimated_quality": "expected error rate (CBPE)",
    "estimated_error": "share of rows whose expected |error| exceeds version {primary}'s validation MAE",
}


@dataclass(frozen=True)
class Candidate:
    """What a demo rolls out, and the drifted rows (with their true target) it is tried on."""

    card: ModelCard
    #: How it differs from the primary, for the output: "trained on 200 customers".
    about: str
    rows: pd.DataFrame
    target: str
    #: The rollout's gates, named (the demo's story is one label-free gate; the default set
    #: may grow, docs/rollout.md).
    gates: tuple[str, ...]


def candidate_pipeline(train: pd.DataFrame) -> object:
    pipeline = make_pipeline(
        make_column_transformer(
            (StandardScaler(), NUMERIC_FEATURES),
            (OneHotEncoder(handle_unknown="ignore"), CATEGORICAL_FEATURES),
        ),
        LogisticRegression(C=CANDIDATE_C, max_iter=1000),
    )
    return pipeline.fit(train.drop(columns=TARGET), train[TARGET])


def classifier_candidate(registry_dir: Path, model: str, primary_runtime: str = "") -> Candidate:
    """Register the churn candidate (module doc) as the model's next version."""
    train = generate_customers(CANDIDATE_ROWS, seed=11)
    card = register_model(candidate_pipeline(train), name=model, reference=train, target=TARGET,
                          validation=generate_customers(1000, seed=12), registry=registry_dir)
    about = f"trained on {CANDIDATE_ROWS} customers"
    if primary_runtime:
        about = f"a scikit-learn logistic regression {about}, beside the {primary_runtime} version"
    customers = generate_customers(ROWS_PER_REQUEST * MAX_REQUESTS, seed=13, shift=True)
    return Candidate(card, about, customers, TARGET, ("errors", "latency", "estimated_quality"))


def rollout_phase(url: str, model: str, candidate: Candidate, console: Console) -> dict[str, Any] | None:
    """Start a canary of the candidate, send its drifted rows until the rollout decides (or
    ``MAX_REQUESTS``), print the decision with its evidence and each version's true quality
    on the rows it answered; returns the rollout's final status (None if it did not start)."""
    card = candidate.card
    started = httpx.post(f"{url}/v2/repository/models/{model}/rollout/start", timeout=30,
                         json={"candidate": card.version, "mode": "canary", "steps": STEPS, "gates": list(candidate.gates)})
    if started.status_code != 200:
        console.print(f"[bold]7. Rollout[/bold]   [yellow]could not start: {started.text}[/yellow]", soft_wrap=True)
        return None
    console.print(f"[bold]7. Rollout[/bold]   version {card.version} ({candidate.about}) as a canary "
                  f"taking {STEPS[0]}% of the drifted traffic; no label will be sent", soft_wrap=True)
    classifier = card.signature.task.is_classification
    features, truth = candidate.rows.drop(columns=candidate.target), candidate.rows[candidate.target].to_numpy()
    state, sent, seconds = "running", 0, time.perf_counter()
    answers: dict[str, list[tuple[Any, Any]]] = {}  # version -> (answer, truth) of each row it answered
    with httpx.Client(timeout=30) as client:
        while sent < MAX_REQUESTS and state == "running":
            rows = slice(sent * ROWS_PER_REQUEST, (sent + 1) * ROWS_PER_REQUEST)
            response = client.post(f"{url}/v1/models/{model}:predict", json={"instances": features.iloc[rows].to_dict("records")})
            sent += 1
            if response.status_code == 200:
                body = response.json()
                given = [p["label" if classifier else "prediction"] for p in body["predictions"]]
                answers.setdefault(str(body["model_version"]), []).extend(zip(given, truth[rows], strict=True))
            if response.status_code != 200 or sent % 10 == 0:
                state = client.get(f"{url}/v2/repository/models/{model}/rollout").json()["state"]
    status: dict[str, Any] = httpx.get(f"{url}/v2/repository/models/{model}/rollout", timeout=30).json()
    seconds = time.perf_counter() - seconds
    if status["state"] != "rolled_back":
        console.print(f"    no rollback after {sent} requests: the rollout is {status['state']}")
        return status
    evidence = status["decisions"][-1]["evidence"]
    failed = evidence["failed"]
    gate = evidence["gates"][failed[0]]
    share = BAD_SHARES.get(failed[0], "bad share").format(primary=status["primary"])
    console.print(f"    rolled back after {sent} requests in {seconds:.1f} s on {', '.join(failed)}: its interval of the "
                  f"candidate's {share} minus version {status['primary']}'s is [{gate['low']:.3f}, {gate['high']:.3f}], "
                  f"above 0 ({int(gate['candidate']['count'])} and {int(gate['primary']['count'])} rows), with no label sent",
                  soft_wrap=True)
    console.print(f"    {true_quality(answers, classifier)}", soft_wrap=True)
    return status


def true_quality(answers: dict[str, list[tuple[Any, Any]]], classifier: bool) -> str:
    """Each version's accuracy (classifier) or MAE (regressor) on the true targets of the
    rows it answered, which were never sent to the server."""
    shown = []
    for version, pairs in sorted(answers.items()):
        given, truth = (np.asarray(x) for x in zip(*pairs, strict=True))
        score = np.mean(given == truth) if classifier else np.mean(np.abs(given.astype(float) - truth.astype(float)))
        shown.append(f"version {version} {score:.3f} on {len(pairs)} rows")
    what = "accuracy on the true labels" if classifier else "MAE on the true values"
    return f"{what} (never sent): {', '.join(shown)}"


#: The series the report's rollout panels draw (Candidate share, Gate intervals against their
#: margins, Rollout decisions).
ROLLOUT_SERIES = ("modelmon_rollout_share", "modelmon_rollout_gate_bound", "modelmon_rollout_decisions_total")


def wait_for_rollout_series(prometheus: Prometheus, console: Console, model: str, timeout: float, samples: int = 3) -> bool:
    """Wait until Prometheus holds ``samples`` scrapes of each rollout series the report draws.

    The rollout decides within seconds, and the report is written right after it: in one
    run of the regression demo the series had their first scrape less than a step (1 s) before the report's end, so
    no point of a range query fell on them and the three panels said "No data" while the
    instant "Rollout state" table showed rolled_back. Three scrapes (1 s apart) put at least
    two range steps on each. Returns False, after saying which series is missing, on timeout.
    """
    deadline = time.monotonic() + timeout
    for name in ROLLOUT_SERIES:
        promql = f'max(count_over_time({name}{{model="{model}"}}[5m]))'
        value = prometheus.scalar(promql)
        while (value is None or value < samples) and time.monotonic() < deadline:
            time.sleep(0.25)
            value = prometheus.scalar(promql)
        if value is None or value < samples:
            console.print(f"            [yellow]Prometheus has {0 if value is None else int(value)} of {samples} scrapes of "
                          f"{name} after {timeout:.0f} s[/yellow]: the report's rollout panels may say No data")
            return False
    return True
