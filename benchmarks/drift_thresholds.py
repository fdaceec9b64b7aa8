"""How the default drift thresholds behave: false alarms on stationary data, detection of
planted shifts of known size, per window size.

Uses the serving code path itself (profile -> accounting -> DriftMonitor verdicts), so the
numbers describe what a replica reports. Seeded; writes benchmarks/results/drift_thresholds.json
and prints a Markdown table.

    python benchmarks/drift_thresholds.py            # full run (about a minute)
    python benchmarks/drift_thresholds.py --quick    # seconds: the smoke test
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from modelmon.monitoring.accounting import FeatureAccountant
from modelmon.monitoring.drift import DriftMonitor, DriftSettings
from modelmon.registry.profile import ProfileSettings, build_profile
from modelmon.types import FeatureBatch, FeatureSpec, Signature

RESULTS = Path(__file__).parent / "results" / "drift_thresholds.json"
NUMERIC = ["normal", "lognormal", "uniform", "counts"]
CATEGORIES = ["a", "b", "c", "d", "e"]
CATEGORY_SHARES = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
SIGNATURE = Signature(
    features=[FeatureSpec(name=n, dtype="float64") for n in NUMERIC]
    + [FeatureSpec(name="category", dtype="string", categories=CATEGORIES)],
    classes=[0, 1],
    input_layout="columns",
)


def sample(rng: np.random.Generator, n: int, mean_shift: float = 0.0, share_shift: float = 0.0) -> FeatureBatch:
    """Rows of the four numeric shapes and one categorical feature. ``mean_shift`` moves every
    numeric feature by that many of its standard deviations; ``share_shift`` moves that much
    probability from the most common category to the rarest."""
    numeric = np.column_stack([
        rng.normal(0, 1, n) + mean_shift,
        rng.lognormal(0, 0.5, n) + mean_shift * 0.6,  # std of lognormal(0, 0.5) is about 0.6
        rng.uniform(0, 1, n) + mean_shift * 0.29,  # std of U(0, 1) is about 0.29
        rng.poisson(4, n) + mean_shift * 2.0,  # std of Poisson(4) is 2
    ])
    shares = CATEGORY_SHARES.copy()
    shares[0] -= share_shift
    shares[-1] += share_shift
    categorical = rng.choice(CATEGORIES, n, p=shares).astype(object).reshape(-1, 1)
    return FeatureBatch(numeric=numeric, categorical=categorical)


def verdicts(reference: FeatureBatch, window: FeatureBatch) -> dict[str, bool]:
    profile, reference_sample = build_profile(SIGNATURE, reference, ProfileSettings(), None)
    accountant = FeatureAccountant(SIGNATURE, profile, ["bench", "1"], recent_rows=2000, max_features=100)
    monitor = DriftMonitor(accountant, reference_sample, [], DriftSettings(min_rows=50))
    monitor.record(window.n_rows)
    accountant.count(window)
    return monitor.report().drifted


def run(window_sizes: list[int], repeats: int, reference_rows: int) -> dict:
    rng = np.random.default_rng(0)
    reference = sample(rng, reference_rows)
    scenarios = {"stationary": (0.0, 0.0), "shift 0.1 sd / 2 pts": (0.1, 0.02),
                 "shift 0.25 sd / 5 pts": (0.25, 0.05), "shift 0.5 sd / 10 pts": (0.5, 0.10),
                 "shift 1 sd / 20 pts": (1.0, 0.20)}
    table = {}
    for name, (mean_shift, share_shift) in scenarios.items():
        for size in window_sizes:
            flagged = {f: 0 for f in [*NUMERIC, "category"]}
            for _ in range(repeats):
                for feature, drifted in verdicts(reference, sample(rng, size, mean_shift, share_shift)).items():
                    flagged[feature] += drifted
            table[f"{name} | {size}"] = {
                "numeric_flag_rate": sum(flagged[f] for f in NUMERIC) / (repeats * len(NUMERIC)),
                "categorical_flag_rate": flagged["category"] / repeats,
            }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny run for the smoke test")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    sizes, repeats, reference_rows = ([200, 5000], 3, 5000) if args.quick else ([200, 1000, 5000, 20000], 40, 50000)
    started = time.perf_counter()
    table = run(sizes, repeats, reference_rows)
    result = {"settings": DriftSettings().model_dump(), "repeats": repeats, "reference_rows": reference_rows,
              "seconds": round(time.perf_counter() - started, 1), "rates": table}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print("| scenario | window rows | numeric features flagged | categorical flagged |")
    print("|---|---|---|---|")
    for key, rates in table.items():
        scenario, size = key.split(" | ")
        print(f"| {scenario} | {size} | {rates['numeric_flag_rate']:.0%} | {rates['categorical_flag_rate']:.0%} |")


if __name__ == "__main__":
    main()
