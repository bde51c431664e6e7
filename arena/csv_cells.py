"""Every CSV file Arena writes goes through here, so that no cell a team controls (team name, label,
error text) becomes a spreadsheet formula when an organizer opens the file.

Following OWASP's advice on CSV injection, a *text* cell that starts with ``=``, ``+``, ``-``, ``@``, a tab
or a carriage return gets a leading single quote; numbers (negative ones too), booleans and empty cells
are written as they are.
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any, Iterable, Mapping

if TYPE_CHECKING:  # pandas stays out of processes that only take uploads
    import pandas as pd

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` as it may go into a CSV cell: text that a spreadsheet would run as a formula is prefixed
    with ``'``; anything that is not text is returned unchanged."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def rows_csv(rows: Iterable[Mapping[str, Any]]) -> str:
    """Rows (dicts) as CSV text: a column per key, in order of first appearance; "" for no rows."""
    rows = list(rows)
    if not rows:
        return ""
    fields: list[str] = []
    for r in rows:
        fields += [k for k in r if k not in fields]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    w.writerows({k: csv_cell(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def frame_csv(table: pd.DataFrame) -> str:
    """A DataFrame (a leaderboard) as CSV text, without its index, every cell through :func:`csv_cell`."""
    return table.map(csv_cell).to_csv(index=False)
