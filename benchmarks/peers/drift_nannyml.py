"""NannyML 0.13 univariate drift with its defaults, in the nannyml venv.

Defaults: Jensen-Shannon distance for both kinds of column, the data split into about 10
chunks, each analysis chunk alerting when its distance exceeds the mean + 3 standard
deviations of the reference chunks' distances. A feature counts as flagged when any chunk
of the current data alerts (the share of alerting chunks is reported too).
Run with NML_DISABLE_USAGE_LOGGING=1 (it otherwise reports usage over the network).
"""

from __future__ import annotations

import importlib.metadata

import nannyml as nml
import pandas as pd
from _measure import Timed, arguments, write


def main() -> None:
    args = arguments()
    reference, current = pd.read_parquet(args.reference), pd.read_parquet(args.current)
    timed = Timed()
    columns = args.numeric + args.categorical
    with timed.step("detect"):
        calculator = nml.UnivariateDriftCalculator(column_names=columns, treat_as_categorical=args.categorical)
        calculator.fit(reference)
        frame = calculator.calculate(current).filter(period="analysis").to_df()
    flagged, scores, shares = {}, {}, {}
    for column in columns:
        alerts = frame[(column, "jensen_shannon", "alert")].astype(bool)
        values = frame[(column, "jensen_shannon", "value")]
        flagged[column] = bool(alerts.any())
        shares[column] = float(alerts.mean())
        scores[column] = {"jensen_shannon_max": float(values.max()),
                          "upper_threshold": float(frame[(column, "jensen_shannon", "upper_threshold")].iloc[0])}
    write(args.out, timed, flagged, scores, "UnivariateDriftCalculator defaults (jensen_shannon, ~10 chunks)",
          alerting_chunk_share=shares, chunks=len(frame), version=importlib.metadata.version("nannyml"))


if __name__ == "__main__":
    main()
