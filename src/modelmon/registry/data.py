"""Tabular data in, for registration: CSV or Parquet files, or DataFrames."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from modelmon.errors import RegistryError

DataArg = pd.DataFrame | str | Path | None


def read_table(data: DataArg, what: str) -> pd.DataFrame | None:
    """``data`` as a DataFrame; ``what`` names the argument in error messages."""
    if data is None or isinstance(data, pd.DataFrame):
        return data
    path = Path(data)
    if not path.exists():
        raise RegistryError(f"{what} file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".gz"):
            return pd.read_csv(path)
    except Exception as exc:
        raise RegistryError(f"cannot read {what} file {path}: {exc}") from exc
    raise RegistryError(f"{what} file {path}: expected .csv or .parquet, got {suffix!r}")
