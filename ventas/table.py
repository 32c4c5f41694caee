"""Tables as the console shows them, in the layout of Spark's console sink (truncate=false): the totals
table, and any other header and rows (the sales-over-time report) in the same layout."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from decimal import Decimal

from schemas import PRODUCT_COLUMN, TOTAL_SALES_COLUMN


def _width(text: str) -> int:
    """Display width: East Asian wide characters take two columns, as in Spark's show()."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def sorted_totals(totals: Mapping[str, Decimal]) -> list[tuple[str, Decimal]]:
    """Highest total first, ties by product name."""
    return sorted(totals.items(), key=lambda item: (-item[1], item[0]))


def format_rows(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A header and its rows, every cell left-aligned and nothing truncated; no rows: the header alone."""
    widths = [max(_width(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    rule = "+" + "+".join("-" * w for w in widths) + "+"

    def line(cells: Sequence[str]) -> str:
        return "|" + "|".join(_pad(cell, w) for cell, w in zip(cells, widths, strict=True)) + "|"

    return "\n".join([rule, line(header), rule, *map(line, rows), rule])


def format_table(totals: Mapping[str, Decimal]) -> str:
    """Every product's total, highest first."""
    return format_rows(
        (PRODUCT_COLUMN, TOTAL_SALES_COLUMN), [(name, f"{total:f}") for name, total in sorted_totals(totals)]
    )


def format_batch(batch_id: int, totals: Mapping[str, Decimal]) -> str:
    """A batch's table under the same banner as Spark's console sink."""
    banner = "-" * 43
    return f"{banner}\nBatch: {batch_id}\n{banner}\n{format_table(totals)}\n"
