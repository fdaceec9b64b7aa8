"""``modelmon runs ...``: training runs in the run store."""

from __future__ import annotations

import typer

runs_app = typer.Typer(help="Training runs: list, show, compare, export, plot.", no_args_is_help=True)
