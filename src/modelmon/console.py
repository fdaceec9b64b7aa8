"""What the ``modelmon`` command prints, in one place.

Two rules hold for everything here:

* Text is literal. Messages, table cells, headers and titles hold names, paths, feature
  names, extras such as ``modelmon[postgres]`` and lists; rich would take ``[postgres]`` for
  markup and drop it. Styles are given as ``(text, style)`` parts, never as markup.
* Nothing is cut. Table columns fold a value that does not fit instead of ending it in
  "…"; when standard output is not a terminal (a pipe, a file, a CI log) tables take the
  width they need, so every value stays whole on its line; messages are never wrapped by
  rich (``soft_wrap``), so a terminal wraps them and a pipe gets them whole.

Listing commands print rows as a table for people, or as CSV or JSON for scripts
(``--format``, :func:`print_listing`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: A piece of a message or a table cell: text as it is, or ``(text, style)``.
Part = str | Text | tuple[str, str | None]

#: Width of a table written to something that is not a terminal: as wide as it needs.
UNBOUNDED_WIDTH = 1_000_000


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


FormatOption = Annotated[
    OutputFormat,
    typer.Option(
        "--format", "-f", case_sensitive=False,
        help="table (for people), or csv or json with full values, one object per row (for scripts).",
    ),
]


def text(*parts: Part) -> Text:
    """Literal text from parts: a ``str`` as it is, a ``(text, style)`` pair styled."""
    out = Text()
    for part in parts:
        if isinstance(part, tuple):
            out.append(str(part[0]), style=part[1] or "")
        else:
            out.append(part)
    return out


def say(*parts: Part) -> None:
    """A message to standard error, literally and unwrapped."""
    Console(stderr=True).print(text(*parts), soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` (literally) to standard error and exit with ``code``."""
    say(("error:", "red"), " ", message)
    raise typer.Exit(code=code)


@dataclass(frozen=True)
class Column:
    """A column of a listing: ``key`` names it in CSV and JSON; ``header`` in the table
    [default: the key]; ``cell`` renders a value for the table [default: its text]."""

    key: str
    header: str | None = None
    cell: Callable[[Any], Part] | None = None
    justify: Literal["left", "right"] = "left"


def _stdout_console() -> Console:
    console = Console()
    try:
        interactive = sys.stdout.isatty()
    except (AttributeError, ValueError):
        interactive = False
    if not interactive:
        # Not a terminal: COLUMNS (or rich's 80) means nothing to a pipe or a log, and a
        # value folded over two lines cannot be grepped; tables take their natural width.
        console = Console(width=UNBOUNDED_WIDTH)
    return console


def new_table(*columns: Column, grid: bool = False) -> Table:
    """A table whose columns fold a value that does not fit rather than cut it; headers
    are literal text."""
    table = Table.grid(padding=(0, 2)) if grid else Table()
    for column in columns:
        table.add_column(text(column.header if column.header is not None else column.key),
                         justify=column.justify, overflow="fold", no_wrap=False)
    return table


def add_row(table: Table, *cells: Part | None, style: str | None = None) -> None:
    """A row of literal cells (``None``: empty)."""
    table.add_row(*(text("" if cell is None else cell) for cell in cells), style=style)


def print_table(table: Table, title: str | None = None) -> None:
    """A table (or grid) to standard output, under an optional title; never cut."""
    for column in table.columns:  # also for tables built elsewhere
        column.overflow, column.no_wrap = "fold", False
    console = _stdout_console()
    if title:
        console.print(text((title, "italic")), soft_wrap=True)
    console.print(table)


def _plain(value: Any) -> Any:
    """A value for JSON: datetimes as ISO 8601, non-finite floats as null (as `runs export`)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return _plain(value.item())
    return value


def _csv_cell(value: Any) -> str:
    """A value for CSV: text as it is, empty for None, inf/nan for non-finite floats,
    anything else (numbers, booleans, lists) as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return json.dumps(value)


def listing_text(columns: Sequence[Column], rows: Iterable[Mapping[str, Any]],
                 output_format: OutputFormat) -> str:
    """Rows as CSV (a header of the keys, then one line a row) or JSON (a list of objects)."""
    keys = [c.key for c in columns]
    if output_format is OutputFormat.json:
        return json.dumps([{k: _plain(row.get(k)) for k in keys} for row in rows], indent=1) + "\n"
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(keys)
    writer.writerows([_csv_cell(row.get(k)) for k in keys] for row in rows)
    return buffer.getvalue()


def print_listing(
    columns: Sequence[Column],
    rows: Sequence[Mapping[str, Any]],
    output_format: OutputFormat,
    *,
    title: str | None = None,
    table: Table | None = None,
    empty: str | None = None,
) -> None:
    """Print a listing: a table, or CSV or JSON of ``rows`` on standard output.

    The table is built from ``columns`` and ``rows``, unless the command lays its table out
    for people differently (``table``: e.g. runs as columns). With no rows, ``empty`` goes
    to standard error in table format; CSV prints its header alone and JSON ``[]``.
    """
    if output_format is not OutputFormat.table:
        sys.stdout.write(listing_text(columns, rows, output_format))
        return
    if not rows and empty is not None:
        say(empty)
        return
    if table is None:
        table = new_table(*columns)
        for row in rows:
            add_row(table, *(_table_cell(c, row.get(c.key)) for c in columns))
    print_table(table, title)


def _table_cell(column: Column, value: Any) -> Part:
    if column.cell is not None:
        return column.cell(value)
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return str(value)
