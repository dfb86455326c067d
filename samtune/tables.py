"""How samtune writes numbers and Markdown tables: one home for both (imports nothing).

Every table samtune prints or writes (an evaluation report and comparison, the training
summary and ``results.md``, the model card, the suite's leaderboard) goes through
:func:`markdown_table`, and every number in it through :func:`format_number` /
:func:`format_change`, so the same metric reads the same everywhere: mIoU 0.686 is
``68.60``, a gain of 0.1005 over the baseline is ``+10.05`` (percentage points).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence

MISSING = "n/a"
"""What a table shows for a value that is absent or not a number (None, NaN)."""


def is_missing(value: object) -> bool:
    """Whether ``value`` is None or NaN (what JSON's ``null`` stands for in a report)."""
    return value is None or (_is_number(value) and math.isnan(value))


def _is_number(value: object) -> bool:
    """A real number, numpy's included; not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def format_number(
    value: object, percent: bool = False, *, signed: bool = False, missing: str = MISSING
) -> str:
    """One table cell for ``value``.

    Args:
        value: a fraction in [0, 1] (with ``percent``), a count or another number; None or NaN
            gives ``missing``, anything else that is not a number its ``str`` (a ``-`` say).
        percent: show a fraction as a percentage: ``0.686`` -> ``"68.60"``.
        signed: always write the sign (``"+10.05"``), for changes.
        missing: the text for None and NaN.

    Returns:
        Two decimals for percentages and other floats (``"3.50"``), three significant
        digits for floats below 0.1 in size (``"0.0123"``), integers as they are (``"120"``).
    """
    if is_missing(value):
        return missing
    if not _is_number(value):
        return str(value)
    sign = "+" if signed else ""
    if percent:
        return f"{100 * float(value):{sign}.2f}"
    if isinstance(value, numbers.Integral):
        return f"{int(value):{sign}d}"
    if value != 0 and abs(value) < 0.1:  # a loss, a learning rate: keep its digits
        return f"{float(value):{sign}.3g}"
    return f"{float(value):{sign}.2f}"


def format_change(
    value: object, base: object, percent: bool = False, *, missing: str = MISSING
) -> str:
    """``value - base`` signed, in percentage points with ``percent`` (0.686 vs 0.5855 ->
    ``"+10.05"``); ``missing`` when either is absent or not a number."""
    if is_missing(value) or is_missing(base) or not (_is_number(value) and _is_number(base)):
        return missing
    return format_number(value - base, percent, signed=True)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table: the first column left-aligned (names), the others right-aligned
    (numbers). Cells are written with ``str``; format numbers first. No trailing newline.

    >>> print(markdown_table(["model", "mIoU"], [["zero-shot", "58.55"]]))
    | model | mIoU |
    |---|---:|
    | zero-shot | 58.55 |
    """
    lines = [_row(header), "|---|" + "---:|" * (len(header) - 1)]
    lines += [_row(row) for row in rows]
    return "\n".join(lines)


def _row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


__all__ = ["MISSING", "format_change", "format_number", "is_missing", "markdown_table"]
