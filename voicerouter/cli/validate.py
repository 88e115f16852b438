"""`voicerouter validate FILE...`: check routing tables in CI (exit 0 valid, 1 invalid, 2 usage)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer


class Format(StrEnum):
    text = "text"
    json = "json"
    github = "github"


def validate(
    files: Annotated[list[Path], typer.Argument(help="Routing table files to check.", show_default=False, metavar="FILE...")],
    format: Annotated[Format, typer.Option("--format", "-f", help="text for people, json for scripts, github for Actions annotations.")] = Format.text,
    strict: Annotated[bool, typer.Option("--strict", help="Treat warnings (unset env variables, literal secrets, unused providers) as errors.")] = False,
) -> None:
    """Check routing tables: schema, provider references and kinds, shadowed routes, secrets."""
    from voicerouter.routing.validate import render_github, render_json, render_text, validate_files

    report = validate_files(files, strict=strict)
    if format is Format.json:
        typer.echo(render_json(report))
    elif format is Format.github:
        out = render_github(report)
        if out:
            typer.echo(out)
    else:
        typer.echo(render_text(report))
    if not report.valid:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
