"""What a shadow rollout costs the callers: the shadow case of the serving benchmark.

The same as ``python benchmarks/serving.py --shadow-only [options]`` (its docstring says what
is measured): modelmon with and without a shadow rollout of the same model copying all
traffic, side by side at concurrency 1, 8 and 32, with p50, p99 and requests/s ratios shadow /
none; writes benchmarks/results/rollout_shadow.json and the serving-shadow section of
benchmarks/README.md.

    python benchmarks/rollout_shadow.py            # about 4 minutes
    python benchmarks/rollout_shadow.py --quick    # seconds; writes no README section
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serving

if __name__ == "__main__":
    sys.argv = [str(Path(serving.__file__)), "--shadow-only", *sys.argv[1:]]
    serving.main()
