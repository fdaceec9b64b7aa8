"""skops is imported without torch, and trusts the same types as a plain ``import skops.io``."""

import importlib.util
import json
import subprocess
import sys

import pytest

# In a fresh process: skops.io through the runtime, then again by a plain import (its modules
# dropped first, so that its all_estimators() walk runs again, torch adapter included).
SCRIPT = """
import json, sys
from modelmon.runtimes.sklearn import skops_io

def trusted():
    import skops.io._trusted_types as t
    return {k: sorted(map(str, v)) for k, v in vars(t).items() if k.isupper()}

skops_io()
lazy = {"torch": "torch" in sys.modules, "types": trusted()}
for name in [m for m in sys.modules if m == "skops" or m.startswith("skops.")]:
    del sys.modules[name]
import skops.io
plain = {"torch": "torch" in sys.modules, "types": trusted()}
print(json.dumps([lazy, plain]))
"""


# torch comes with the PyTorch runtime's extra; without it there is nothing to avoid.
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_skops_imported_without_torch_trusts_the_same_types():
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    lazy, plain = json.loads(result.stdout)
    assert lazy["torch"] is False
    assert plain["torch"] is True  # the reference run did take the path that imports torch
    assert len(lazy["types"]["SKLEARN_ESTIMATOR_TYPE_NAMES"]) > 100
    assert lazy["types"] == plain["types"]
