"""modelmon's drift path on the whole current set, in modelmon's venv, timed in two parts:

- ``profile``: what registration does with the reference data: the DataFrame as a
  FeatureBatch against the signature, then ``build_profile`` (quantile bins, category shares,
  the seeded sample for KS and Wasserstein). Once per model version.
- ``account_and_score``: what a replica does with live rows, here the whole current set at
  once: the DataFrame as a FeatureBatch, ``FeatureAccountant.count`` over it, then
  ``DriftMonitor.report`` (every score, the verdicts) on that window.

Verdicts are modelmon's defaults (``DriftSettings()``): on a window above 1,000 rows, PSI >= 0.2.
Also timed, for the serving path: the same counting in 64-row batches, as requests arrive.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
from _measure import Timed, arguments, write

from modelmon.monitoring.accounting import FeatureAccountant
from modelmon.monitoring.drift import DriftMonitor, DriftSettings
from modelmon.registry.profile import ProfileSettings, build_profile
from modelmon.runtimes.features import feature_specs_from_frame
from modelmon.types import FeatureBatch, Signature


def main() -> None:
    args = arguments()
    reference, current = pd.read_parquet(args.reference), pd.read_parquet(args.current)
    columns = args.numeric + args.categorical
    settings = DriftSettings()
    timed = Timed()
    with timed.step("profile"):
        signature = Signature(features=feature_specs_from_frame(reference, columns), classes=[0, 1], input_layout="columns")
        reference_batch = FeatureBatch.from_frame(reference, signature)
        profile, sample = build_profile(signature, reference_batch, ProfileSettings(), None)

    def monitor() -> DriftMonitor:
        accountant = FeatureAccountant(signature, profile, ["bench", "1"], settings.recent_rows, settings.max_features)
        return DriftMonitor(accountant, sample, [], settings)

    drift = monitor()
    with timed.step("account_and_score"):
        batch = FeatureBatch.from_frame(current, signature)
        drift.record(batch.n_rows)
        drift.accountant.count(batch)
        report = drift.report()
    # The parts of account_and_score, and counting as a server does (64-row batches).
    with timed.step("convert_only"):
        batch = FeatureBatch.from_frame(current, signature)
    again = monitor()
    with timed.step("count_only"):
        again.record(batch.n_rows)
        again.accountant.count(batch)
    with timed.step("report_only"):
        again.report()
    batched = monitor()
    with timed.step("count_in_64_row_batches"):
        for start in range(0, batch.n_rows, 64):
            part = FeatureBatch(batch.numeric[start : start + 64], batch.categorical[start : start + 64])
            batched.record(part.n_rows)
            batched.accountant.count(part)
    assert np.array_equal(batched.accountant.bins.counts, again.accountant.bins.counts)
    flagged = {f: bool(report.drifted.get(f, False)) for f in columns}
    write(args.out, timed, flagged, report.scores, "DriftSettings() defaults", verdict_method=report.verdict_method,
          window_rows=report.window_rows, thresholds=settings.thresholds(),
          version=importlib.metadata.version("modelmon"))


if __name__ == "__main__":
    main()
