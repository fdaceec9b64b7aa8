"""Evidently 0.7 ``DataDriftPreset`` with its defaults, in the evidently venv.

With more than 1,000 rows its defaults are the normed Wasserstein distance for numeric
columns and the Jensen-Shannon distance for categorical ones, both at threshold 0.1 (the
method and threshold Evidently chose are read back from each metric's config).
"""

from __future__ import annotations

import importlib.metadata

import pandas as pd
from _measure import Timed, arguments, write
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset


def main() -> None:
    args = arguments()
    reference, current = pd.read_parquet(args.reference), pd.read_parquet(args.current)
    timed = Timed()
    with timed.step("detect"):
        definition = DataDefinition(numerical_columns=args.numeric, categorical_columns=args.categorical)
        snapshot = Report([DataDriftPreset()]).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
        result = snapshot.dict()
    flagged, scores, methods = {}, {}, {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config.get("type") != "evidently:metric_v2:ValueDrift":
            continue
        column, method, threshold, value = config["column"], config["method"], config["threshold"], metric["value"]
        pvalue = "p_value" in method.lower().replace("-", "_") or "test" in method.lower()
        flagged[column] = bool(value < threshold) if pvalue else bool(value >= threshold)
        scores[column] = {method: value}
        methods[column] = f"{method} {'<' if pvalue else '>='} {threshold}"
    write(args.out, timed, flagged, scores, "DataDriftPreset() defaults", methods=methods,
          version=importlib.metadata.version("evidently"))


if __name__ == "__main__":
    main()
