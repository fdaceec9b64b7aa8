"""Plain scipy: ``ks_2samp`` per numeric feature, ``chi2_contingency`` on the category
counts per categorical feature, flagged at p < 0.05. Runs in modelmon's venv (scipy is a
modelmon dependency) but imports nothing from modelmon."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
from _measure import Timed, arguments, write
from scipy import stats


def main() -> None:
    args = arguments()
    reference, current = pd.read_parquet(args.reference), pd.read_parquet(args.current)
    timed = Timed()
    flagged, scores = {}, {}
    with timed.step("detect"):
        for c in args.numeric:
            p = float(stats.ks_2samp(reference[c].to_numpy(), current[c].to_numpy()).pvalue)
            flagged[c], scores[c] = p < 0.05, {"ks_pvalue": p}
        for c in args.categorical:
            table = pd.concat([reference[c].value_counts(), current[c].value_counts()], axis=1).fillna(0).to_numpy().T
            p = float(stats.chi2_contingency(table, correction=False).pvalue)
            flagged[c], scores[c] = p < 0.05, {"chi2_pvalue": p}
    write(args.out, timed, flagged, scores, "ks_2samp / chi2_contingency, p < 0.05",
          version=importlib.metadata.version("scipy"), numpy=np.__version__)


if __name__ == "__main__":
    main()
