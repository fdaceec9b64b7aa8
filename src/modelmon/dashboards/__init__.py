"""Grafana dashboards and provisioning generated from code, and a report without Grafana.

``write_provisioning(out_dir, ...)`` writes the Grafana provisioning tree
(``modelmon grafana export``); ``write_report(out, prometheus_url, store_url)`` writes the
same panels into one HTML file (``modelmon report``). The dashboards themselves are data in
``modelmon.dashboards.catalog``.
"""

from modelmon.dashboards.export import write_provisioning
from modelmon.dashboards.report import write_report

__all__ = ["write_provisioning", "write_report"]
