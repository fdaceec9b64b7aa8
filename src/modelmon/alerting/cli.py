"""``modelmon alerts ...``, ``modelmon notify-bridge`` and ``modelmon stack ...``."""

from __future__ import annotations

import typer

alerts_app = typer.Typer(help="Alerting: export Prometheus rules, Alertmanager and Grafana alerting configuration.", no_args_is_help=True)
stack_app = typer.Typer(help="A local Prometheus and Alertmanager for the running server.", no_args_is_help=True)


def notify_bridge() -> None:
    """Forward Alertmanager and Grafana webhooks to any Apprise URL (SMS, chat, email...)."""
    raise typer.Exit(code=1)
