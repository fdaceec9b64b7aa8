"""``modelmon rollout ...``: start, follow, promote and abort safe rollouts in the store.

The commands write the plan to the store the servers share; every server serving the
model follows it within its check interval (``modelmon serve --rollout-check-seconds``).
The same operations are served over HTTP beside the repository endpoints (docs/rollout.md).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from modelmon.console import fail, say
from modelmon.errors import ModelmonError, RolloutInputError

# The commands import the store, the registry and serving when they run: `modelmon --help`
# and the other commands do not pay for them.

rollout_app = typer.Typer(
    help="Safe rollouts of a candidate version: shadow or canary, promoted or rolled back on evidence.",
    no_args_is_help=True,
)

StoreOption = Annotated[
    str | None,
    typer.Option("--store", help="The store the servers share \\[default: $MODELMON_STORE_URL, else $MODELMON_HOME/modelmon.db]."),
]
RegistryOption = Annotated[Path | None, typer.Option("--registry", help="Registry directory \\[default: $MODELMON_HOME/registry].")]


def _list(value: str | None, option: str, convert: type = str) -> list[Any] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    try:
        return [convert(v) for v in items]
    except ValueError:
        raise RolloutInputError(f"{option}: expected a comma-separated list, got {value!r}") from None


def _margins(values: list[str] | None) -> dict[str, float] | None:
    if not values:
        return None
    margins: dict[str, float] = {}
    for value in values:
        gate, sep, number = value.partition("=")
        try:
            margins[gate.strip()] = float(number)
        except ValueError:
            raise RolloutInputError(f"--margin: expected GATE=SHARE such as errors=0.02, got {value!r}") from None
        if not sep:
            raise RolloutInputError(f"--margin: expected GATE=SHARE such as errors=0.02, got {value!r}")
    return margins


def _print(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2))


@rollout_app.command()
def start(
    model: Annotated[str, typer.Argument(help="The model to roll a new version of.")],
    candidate: Annotated[str, typer.Option("--candidate", help="The version to roll out.")],
    mode: Annotated[str, typer.Option("--mode", help="shadow (a copy of the traffic; callers get the primary's answers) or canary (a share of the traffic).")] = "canary",
    steps: Annotated[str | None, typer.Option("--steps", help="The candidate's shares in percent, increasing, ending at 100 \\[default: canary 1,10,50,100; shadow 100].")] = None,
    gates: Annotated[str | None, typer.Option("--gates", help="Comma-separated gates: errors, latency, estimated_quality, quality, estimated_error, drift \\[default: errors,latency,estimated_quality,drift; a regressor: errors,latency,estimated_error,drift; drift only with both versions' validation predictions].")] = None,
    margin: Annotated[list[str] | None, typer.Option("--margin", help="GATE=SHARE: how much worse the candidate may be for a step to pass (repeatable).")] = None,
    primary: Annotated[str | None, typer.Option("--primary", help="The version compared with \\[default: the one serving the model now].")] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="False-alarm rate of the whole rollout, split among its gates.")] = 0.05,
    min_requests: Annotated[int, typer.Option("--min-requests", help="Requests the candidate answers in a step before it may pass.")] = 100,
    sticky_header: Annotated[str | None, typer.Option("--sticky-header", help="Canary: the request header whose value decides the version, so one caller sees one version.")] = None,
    sticky_feature: Annotated[str | None, typer.Option("--sticky-feature", help="Canary: the feature whose value decides each row's version, so one customer sees one version (not with --sticky-header).")] = None,
    registry: RegistryOption = None,
    store: StoreOption = None,
) -> None:
    """Start rolling out CANDIDATE of MODEL; prints the plan."""
    from modelmon.registry.store import Registry
    from modelmon.serving import rollout_commands
    from modelmon.store import open_store

    try:
        payload: dict[str, Any] = {
            "candidate": candidate, "mode": mode, "alpha": alpha, "min_requests": min_requests,
        }
        optional = {
            "steps": _list(steps, "--steps", float), "gates": _list(gates, "--gates"), "margins": _margins(margin),
            "primary": primary, "sticky_header": sticky_header,
            "sticky_feature": sticky_feature,
        }
        payload.update({k: v for k, v in optional.items() if v is not None})
        started = rollout_commands.start(open_store(store), Registry(registry), model, payload, "cli")
    except ModelmonError as exc:
        fail(exc.message)
    say(f"rollout {started.id} of {model}: version {started.candidate_version} against {started.primary_version}, "
        f"{started.mode} at {started.steps[0]:g}%")
    _print(started.as_dict())


@rollout_app.command()
def status(
    model: Annotated[str, typer.Argument(help="The model.")],
    store: StoreOption = None,
) -> None:
    """The model's newest rollout and its decisions with their evidence, as JSON."""
    from modelmon.serving import rollout_commands
    from modelmon.store import open_store

    try:
        found = rollout_commands.status(open_store(store), model)
    except ModelmonError as exc:
        fail(exc.message)
    if found is None:
        fail(f"model {model!r} has no rollout")
    _print(found)


def _act(model: str, action: str, store: str | None) -> None:
    from modelmon.serving import rollout_commands
    from modelmon.store import open_store

    try:
        moved = rollout_commands.act(open_store(store), model, action, "cli")
    except ModelmonError as exc:
        fail(exc.message)
    say(f"rollout {moved.id} of {model}: {moved.state.replace('_', ' ')}; version {moved.serving_version} answers it")
    _print(moved.as_dict())


@rollout_app.command()
def promote(model: Annotated[str, typer.Argument(help="The model.")], store: StoreOption = None) -> None:
    """Promote the running rollout's candidate now: it answers all the model's traffic."""
    _act(model, "promote", store)


@rollout_app.command()
def abort(model: Annotated[str, typer.Argument(help="The model.")], store: StoreOption = None) -> None:
    """Abort the running rollout: the primary answers all the model's traffic again."""
    _act(model, "abort", store)
