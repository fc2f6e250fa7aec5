"""Tables the commands print: rich's, in a terminal; plain aligned columns, whole values, no colour, in a pipe.

A rich table fits itself to the terminal (80 columns when there is none) by cutting cells short, which a script
reading ``relay ls | grep succeeded`` must never see. In a terminal, states and ids are never wrapped, times are
short (``14:03:22`` today, ``12-05 09:14`` before, local time) so a row fits in 80 columns, and a cell that still
does not fit wraps instead of being cut; a pipe gets every value whole (ISO dates in UTC).
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
    """``whole``: never wrapped (a state, an id: what a reader copies or matches)."""

    name: str
    whole: bool = False


@dataclass(frozen=True)
class Cell:
    """A value, its rich style in a terminal, and a shorter form for a terminal (a time for a whole date)."""

    text: str
    style: str = ""
    short: str | None = None


def print_table(console: Console, columns: Sequence[Column], rows: Sequence[Sequence[Cell]]) -> None:
    if console.is_terminal:
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


def plain(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest value, two spaces apart; every value whole."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    lines = [headers, *rows]
    return "".join("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip() + "\n" for line in lines)


def _markup(cell: Cell) -> str:
    text = escape(cell.short or cell.text)
    return f"[{cell.style}]{text}[/]" if cell.style else text
