"""CSV downloads that a spreadsheet cannot turn into formulas (CSV injection).

A cell that starts with ``=``, ``+``, ``-``, ``@`` (or a tab or carriage return, which some
spreadsheets skip before looking) is run as a formula when the file is opened, so a dataset
uploaded by one user could execute in the spreadsheet of another. Such cells are served with a
leading ``'``, which spreadsheets show as text.

Numbers are data, not formulas: ``-3.5``, ``+1e3`` and ``-inf`` parse as numbers and are left
alone, so traffic values (and timestamps, which never start with a sign) come back exactly as
uploaded. A file with no cell to escape is returned byte for byte, without being parsed.
The stored object is never changed: escaping happens on the way out (docs/security.md).
"""

from __future__ import annotations

import csv
import io
import re

FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")
#: A cell that may need escaping: a lead character at the start of a line or after a
#: separator, optionally inside quotes. Only then is the file parsed.
_SUSPECT = re.compile(rb'(?:^|[,\n])"?[=+\-@\t\r]')


def needs_escape(cell: str) -> bool:
    """True for a cell a spreadsheet would evaluate: a formula lead that is not a number."""
    if not cell.startswith(FORMULA_LEADS):
        return False
    try:
        float(cell)
    except ValueError:
        return True
    return False


def escape_cell(cell: str) -> str:
    return "'" + cell if needs_escape(cell) else cell


def escape_formulas(data: bytes) -> bytes:
    """``data`` (a UTF-8 CSV) with every formula cell escaped; unchanged bytes when none is."""
    if not _SUSPECT.search(data):
        return data
    rows = list(csv.reader(io.StringIO(data.decode("utf-8", errors="surrogateescape"))))
    if not any(needs_escape(cell) for row in rows for cell in row):
        return data
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if b"\r\n" in data else "\n")
    writer.writerows([escape_cell(cell) for cell in row] for row in rows)
    return out.getvalue().encode("utf-8", errors="surrogateescape")
