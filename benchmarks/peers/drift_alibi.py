"""alibi-detect ``TabularDrift``: KS for numeric and chi-square for categorical features,
per feature at its default p_val=0.05, in the alibi-detect venv. Categorical columns are
given to it as integer codes (it takes one numeric array); the encoding is timed too."""

from __future__ import annotations

import importlib.metadata

import numpy as np
import pandas as pd
from _measure import Timed, arguments, write


def main() -> None:
    args = arguments()
    reference, current = pd.read_parquet(args.reference), pd.read_parquet(args.current)
    columns = args.numeric + args.categorical
    timed = Timed()
    with timed.step("import"):
        from alibi_detect.cd import TabularDrift
    with timed.step("detect"):
        def encode(frame: pd.DataFrame, levels: dict[str, list[str]]) -> np.ndarray:
            out = frame[columns].copy()
            for c in args.categorical:
                out[c] = pd.Categorical(frame[c], categories=levels[c]).codes
            return out.to_numpy(dtype=np.float32)

        levels = {c: sorted(set(reference[c].unique()) | set(current[c].unique())) for c in args.categorical}
        categories = {columns.index(c): len(levels[c]) for c in args.categorical}
        detector = TabularDrift(encode(reference, levels), p_val=0.05, categories_per_feature=categories)
        prediction = detector.predict(encode(current, levels), drift_type="feature")["data"]
    flagged = {c: bool(d) for c, d in zip(columns, prediction["is_drift"], strict=True)}
    scores = {c: {"p_value": float(p), "distance": float(d)}
              for c, p, d in zip(columns, prediction["p_val"], prediction["distance"], strict=True)}
    write(args.out, timed, flagged, scores, "TabularDrift(p_val=0.05), drift_type='feature'",
          version=importlib.metadata.version("alibi-detect"))


if __name__ == "__main__":
    main()
