"""``modelmon grafana ...`` and ``modelmon report``."""

from __future__ import annotations

import typer

grafana_app = typer.Typer(help="Grafana dashboards and provisioning.", no_args_is_help=True)


def report() -> None:
    """Write a self-contained HTML report of the dashboards' panels, for users without Grafana."""
    raise typer.Exit(code=1)
