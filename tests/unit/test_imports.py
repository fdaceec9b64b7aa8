"""Every entry module imports on its own, whatever was imported before: an import cycle
shows only when the cycle's later module happens to be imported first."""

import subprocess
import sys

import pytest

ENTRY_MODULES = [
    "modelmon",
    "modelmon.cli",
    "modelmon.serving.app",
    "modelmon.serving.grpc_v2.service",
    "modelmon.monitoring.drift",
    "modelmon.registry.profile",
    "modelmon.registry.card",
    "modelmon.types",
    "modelmon.runtimes.sklearn",
    "modelmon.serving.feedback",
    "modelmon.tracking",
    "modelmon.alerting.local",
    "modelmon.dashboards.report",
    "modelmon.demo.run",
]


@pytest.mark.parametrize("module", ENTRY_MODULES)
def test_module_imports_first(module):
    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
