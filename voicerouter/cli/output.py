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


def set_verbosity(level: int) -> None:
    """-1 quiet, 0 normal, 1 verbose (the library's INFO logs go to stderr)."""
    VERBOSITY["level"] = level
    if level > 0:
        import logging

        logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
        logging.getLogger("voicerouter").setLevel(logging.INFO)


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


def plain_metavars(command: Any) -> None:
    """Help that reads like other tools' help: `FILE...`, `--tenant TEXT`, flags without a type.

    Typer shows `{FILE...}...`, `<bool>` and `<list[str]>`; this sets plain metavars on the click
    command tree before it runs (a metavar a command sets itself is kept).
    """
    for sub in getattr(command, "commands", {}).values():
        plain_metavars(sub)
    make_help_option = command.get_help_option

    def help_option(ctx: Any) -> Any:
        option = make_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option

    command.get_help_option = help_option
    for param in command.params:
        if param.param_type_name == "argument":
            name = param.metavar or param.name.upper()
            param.metavar = name.removesuffix("...") + ("..." if param.nargs != 1 else "")
            param.get_usage_pieces = lambda ctx, p=param: [p.metavar if p.required else f"[{p.metavar}]"]
            param.display_type_rich = lambda ctx: None  # the metavar says it: no `<list[Path]>` column
        elif param.metavar is None:
            flag = getattr(param, "is_flag", False) or getattr(param, "count", False)
            param.metavar = "" if flag else _option_metavar(param)


def _option_metavar(param: Any) -> str:
    """`text|json|github` for choices, `N` for numbers, `PATH` for paths, else the option's name."""
    import typing
    from pathlib import Path

    desc = getattr(param, "type_descriptor", None)  # typer >= 0.20 keeps the annotation
    if desc is not None:
        if desc.is_choice:
            return "|".join(str(getattr(c, "value", c)) for c in desc.choices)
        annotation = desc.annotation
        if typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        is_number = annotation in (int, float)
        is_path = desc.is_path or annotation is Path
    else:  # click parameter types
        choices = getattr(param.type, "choices", None)
        if choices:
            return "|".join(str(getattr(c, "value", c)) for c in choices)
        is_number = param.type.name in ("integer", "float") or "range" in param.type.name
        is_path = param.type.name == "path"
    if is_number:
        return "N"
    if is_path:
        return "PATH"
    return max(param.opts, key=len).lstrip("-").upper().replace("-", "_")
