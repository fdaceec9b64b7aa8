"""Grafana dashboards and provisioning generated from code, and a report without Grafana.

``write_provisioning(out_dir, ...)`` writes the Grafana provisioning tree
(``modelmon grafana export``); ``write_report(out, prometheus_url, store_url)`` writes the
same panels into one HTML file (``modelmon report``). The dashboards themselves are data in
``modelmon.dashboards.catalog``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["write_provisioning", "write_report"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the CLI loads this package at start-up, and the Grafana SDK and
    # matplotlib are needed only by these two.
    if name == "write_provisioning":
        from modelmon.dashboards.export import write_provisioning

        return write_provisioning
    if name == "write_report":
        from modelmon.dashboards.report import write_report

        return write_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
