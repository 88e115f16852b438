"""Terminal or pipe: how every command prints.

On a terminal, rich tables, colour and wrapping. When stdout is not a terminal (`| grep`, `> file`,
CI logs) nothing is wrapped, padded or cut: text lines are printed as they are, and a table
becomes tab-separated rows (a header row first), like `gh` does. NO_COLOR is honoured by rich.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

# Set by the root --quiet / --verbose options: -1 quiet, 0 normal, 1 verbose.
VERBOSITY = {"level": 0}


class PipeAwareConsole(Console):
    """A console that prints tables as tab-separated rows when its file is not a terminal."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        if self.is_terminal:
            super().print(*objects, **kwargs)
            return
        kwargs.setdefault("soft_wrap", True)  # never wrap at a made-up width
        for obj in objects:
            table = _table_of(obj)
            if table is None:
                super().print(obj, **kwargs)
            else:
                # Written as they are: rich would expand the tabs into spaces.
                self.file.write("".join(line + "\n" for line in table_rows(table)))
                self.file.flush()


PIPE_WIDTH = 1000  # layout decisions in a pipe take the wide form; nothing is padded to it


def console(*, stderr: bool = False) -> Console:
    out = PipeAwareConsole(stderr=stderr, highlight=False)
    if not out.is_terminal:
        out.width = PIPE_WIDTH
    return out


def quiet() -> bool:
    return VERBOSITY["level"] < 0


def verbose() -> bool:
    return VERBOSITY["level"] > 0


def _table_of(obj: Any) -> Table | None:
    while isinstance(obj, Padding):
        obj = obj.renderable
    return obj if isinstance(obj, Table) else None


def plain(cell: Any) -> str:
    """A table cell as plain text: markup rendered away, line breaks as spaces."""
    if isinstance(cell, Text):
        text = cell.plain
    elif isinstance(cell, str):
        text = Text.from_markup(cell).plain
    else:
        text = str(cell)
    return " ".join(text.split("\n")).strip()


def table_rows(table: Table) -> list[str]:
    """The title line (if any), the header row (if shown) and one tab-separated line per row."""
    lines = []
    if table.title:
        lines.append(plain(table.title))
    if table.show_header and any(plain(c.header) for c in table.columns):
        lines.append("\t".join(plain(c.header) for c in table.columns))
    cells = [list(column.cells) for column in table.columns]
    for row in zip(*cells, strict=False):
        lines.append("\t".join(plain(c) for c in row).rstrip("\t"))
    return lines
