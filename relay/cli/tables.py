"""Tables the commands print: rich's, in a terminal; plain aligned columns, whole values, no colour, in a pipe.

A rich table fits itself to the terminal (80 columns when there is none) by cutting cells short, which a script
reading ``relay ls | grep succeeded`` must never see. In a terminal, states and ids are never wrapped, times are
short (``14:03:22`` today, ``12-05 09:14`` before, local time) so a row fits in 80 columns, optional columns are
left out when the row would not fit with them, and a cell that still does not fit wraps instead of being cut; a
pipe gets every column and every value whole (ISO dates in UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import click
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass(frozen=True)
class Column:
    """``whole``: never wrapped (a state, an id: what a reader copies or matches). ``optional``: left out of a
    terminal's table when the row would not fit its width with it (a pipe always gets it)."""

    name: str
    whole: bool = False
    optional: bool = False


@dataclass(frozen=True)
class Cell:
    """A value, its rich style in a terminal, and a shorter form for a terminal (a time for a whole date)."""

    text: str
    style: str = ""
    short: str | None = None


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> None:
    if console.is_terminal:
        columns, rows = fitting(columns, rows, console.width)
        table = Table(
            *[c.name for c in columns], box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True
        )
        for i, column in enumerate(columns):
            widest = max([len(column.name), *(len(row[i].short or row[i].text) for row in rows)])
            table.columns[i].no_wrap = column.whole
            table.columns[i].min_width = widest if column.whole else None
            table.columns[i].overflow = "fold"  # a cell too long for its column wraps; it is never cut with "…"
        for row in rows:
            table.add_row(*[_markup(cell) for cell in row])
        console.print(table)
        return
    click.echo(plain([c.name for c in columns], [[cell.text for cell in row] for row in rows]), nl=False)


def fitting(
    columns: Sequence[Column], rows: Sequence[Sequence[Cell]], width: int
) -> tuple[list[Column], list[list[Cell]]]:
    """The columns a terminal ``width`` wide shows: optional ones are left out, the last first, while the
    table's natural width (each column's widest value, two spaces between) exceeds it."""
    keep = list(range(len(columns)))

    def natural() -> int:
        widths = [max([len(columns[i].name), *(len(row[i].short or row[i].text) for row in rows)]) for i in keep]
        return sum(widths) + 2 * (len(keep) - 1)

    for i in reversed(range(len(columns))):
        if columns[i].optional and natural() > width:
            keep.remove(i)
    return [columns[i] for i in keep], [[row[i] for i in keep] for row in rows]


def plain(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest value, two spaces apart; every value whole."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n" for line in lines)


def _markup(cell: Cell) -> str:
    text = escape(cell.short or cell.text)
    return f"[{cell.style}]{text}[/]" if cell.style else text
