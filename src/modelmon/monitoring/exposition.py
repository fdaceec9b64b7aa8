"""Writing Prometheus text exposition (format 0.0.4) for series whose labels never change.

Bin, class and drift-score series are many (thousands per server) and their label sets are
fixed when a model version loads, so each series' ``name{labels} `` prefix is formatted
once and a scrape only appends values. This keeps /metrics fast where prometheus_client's
generic path (a Sample object and a label formatting per series per scrape) is not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from prometheus_client.utils import floatToGoString


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def series_prefix(name: str, labelnames: Sequence[str], values: Sequence[str]) -> str:
    labels = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(labelnames, values, strict=True))
    return f"{name}{{{labels}}} "


def family_header(name: str, documentation: str, kind: str) -> str:
    return f"# HELP {name} {escape_help(documentation)}\n# TYPE {name} {kind}\n"


def sample_lines(prefixes: Sequence[str], values: Sequence[float]) -> str:
    """``prefix value`` lines. Finite values are written by ``repr``, a C loop over the
    whole family (prometheus_client's ``floatToGoString`` per value cost most of a scrape's
    time here); it differs from that only in writing numbers of seven or more integer
    digits without an exponent, which Prometheus reads as the same value. NaN and the
    infinities are written as Prometheus spells them."""
    if len(prefixes) != len(values):
        raise ValueError(f"{len(prefixes)} series but {len(values)} values")
    if not prefixes:
        return ""
    array = np.asarray(values, dtype=np.float64)
    texts = map(float.__repr__, array.tolist()) if np.isfinite(array).all() else map(floatToGoString, array.tolist())
    return "\n".join(map(str.__add__, prefixes, texts)) + "\n"
