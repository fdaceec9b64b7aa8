"""Tabular data in, for registration: CSV or Parquet files, or DataFrames."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

import pandas as pd

from modelmon.errors import RegistryError

DataArg = pd.DataFrame | str | Path | None

CSV_SUFFIXES = (".csv", ".txt", ".gz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def guesses_types(data: DataArg) -> bool:
    """Whether ``data`` is a text file, whose column types pandas guesses from the values
    (a column of codes such as ``19`` and ``5`` comes back as numbers)."""
    return isinstance(data, (str, Path)) and Path(data).suffix.lower() in CSV_SUFFIXES


def read_table(
    data: DataArg, what: str, text_columns: Collection[str] = (), only_empty_is_missing: bool = False
) -> pd.DataFrame | None:
    """``data`` as a DataFrame; ``what`` names the argument in error messages.

    ``text_columns`` are read from a CSV file as text, whatever their values look like, so
    the category ``"07"`` stays ``"07"`` instead of becoming the number 7.
    ``only_empty_is_missing``: a CSV cell ``NA``, ``None``, ``null`` or ``nan`` is that text,
    not a missing value (labels: a class may be named ``NA``); an empty cell is ``""``."""
    if data is None or isinstance(data, pd.DataFrame):
        return data
    path = Path(data)
    if not path.exists():
        raise RegistryError(f"{what} file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in PARQUET_SUFFIXES:
            return pd.read_parquet(path)
        if suffix in CSV_SUFFIXES:
            return pd.read_csv(path, dtype=dict.fromkeys(text_columns, str) or None, keep_default_na=not only_empty_is_missing)
    except Exception as exc:
        raise RegistryError(f"cannot read {what} file {path}: {exc}") from exc
    raise RegistryError(f"{what} file {path}: expected .csv or .parquet, got {suffix!r}")
